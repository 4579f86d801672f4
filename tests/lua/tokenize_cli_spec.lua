-- End-to-end specs for the `catena tokenize` / `detokenize` / `inspect` commands, run
-- through the real binary exactly as users and the acceptance checks call it.
local CATENA = os.getenv("CATENA") or "build/catena"
local SHARED = os.getenv("CTN_SHARED") or "../shared"

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Runs the command with `input` on stdin; returns stdout, and the exit status.
local function run(args, input)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(input or "")
  f:close()
  local p = assert(io.popen(CATENA .. " " .. args .. " < " .. tmp .. " 2>&1", "r"))
  local out = p:read("a")
  local _, _, code = p:close()
  os.remove(tmp)
  return out, code
end

-- llama.cpp's test vector files: texts separated by "\n__ggml_vocab_test__\n".
local function split_inp(raw)
  local sep, texts, pos = "\n__ggml_vocab_test__\n", {}, 1
  while pos <= #raw do
    local s, e = raw:find(sep, pos, true)
    if not s then
      texts[#texts + 1] = raw:sub(pos)
      break
    end
    texts[#texts + 1] = raw:sub(pos, s - 1)
    pos = e + 1
  end
  return texts
end

local function split_lines(raw)
  local lines = {}
  for line in (raw .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  if lines[#lines] == "" then lines[#lines] = nil end
  return lines
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local vocabs = { "llama-spm", "llama-bpe", "qwen2", "gpt-2" }

describe("catena tokenize", function()
  for _, name in ipairs(vocabs) do
    local model = SHARED .. "/vocab/ggml-vocab-" .. name .. ".gguf"
    it("gives llama.cpp's ids for every test text of " .. name, function()
      local texts = split_inp(read_file(model .. ".inp"))
      local want = split_lines(read_file(model .. ".out"))
      assert.are.equal(#want, #texts)
      for i, text in ipairs(texts) do
        local out, code = run("tokenize -m " .. model .. " --no-bos", text)
        assert.are.equal(0, code)
        assert.are.equal(trim(want[i]), trim(out), ("text %d: %q"):format(i, text))
      end
    end)
  end

  it("adds BOS as the model's metadata says unless --no-bos", function()
    local model = SHARED .. "/vocab/ggml-vocab-llama-spm.gguf"
    local with = run("tokenize -m " .. model, "Hello world")
    local without = run("tokenize -m " .. model .. " --no-bos", "Hello world")
    assert.are.equal("1 " .. trim(without), trim(with))
  end)

  it("round-trips through detokenize", function()
    for _, name in ipairs(vocabs) do
      local model = SHARED .. "/vocab/ggml-vocab-" .. name .. ".gguf"
      local text = "Grüße, 世界! \t  ok\n\n  -- 12345 🦙🦙"
      local ids = run("tokenize -m " .. model, text)
      local back, code = run("detokenize -m " .. model, ids)
      assert.are.equal(0, code)
      assert.are.equal(text, back, name)
    end
  end)

  it("matches control tokens only with --parse-special, and prints them back with --special", function()
    local model = SHARED .. "/vocab/ggml-vocab-qwen2.gguf"
    local text = "<|im_start|>user\nhi<|im_end|>"
    assert.are.equal("151644 872 198 6023 151645", trim(run("tokenize -m " .. model .. " --parse-special", text)))
    local plain = trim(run("tokenize -m " .. model, text))
    assert.is_nil(plain:find("151644", 1, true))
    local llama3 = SHARED .. "/vocab/ggml-vocab-llama-bpe.gguf"
    local ids = run("tokenize -m " .. llama3 .. " --parse-special", "<|begin_of_text|>hi")
    assert.are.equal("128000 128000 6151", trim(ids))
    assert.are.equal("<|begin_of_text|>hi", run("detokenize -m " .. llama3 .. " --special", ids))
  end)

  it("fails clearly on a missing model file", function()
    local out, code = run("tokenize -m /nonexistent/model.gguf", "x")
    assert.are.equal(1, code)
    assert.truthy(out:find("/nonexistent/model.gguf", 1, true))
  end)

  it("rejects an out-of-range id naming it", function()
    local model = SHARED .. "/vocab/ggml-vocab-llama-spm.gguf"
    local out, code = run("detokenize -m " .. model, "1 2 99999999")
    assert.are.equal(1, code)
    assert.truthy(out:find("99999999", 1, true))
  end)
end)

describe("catena inspect", function()
  local model = SHARED .. "/models/stories260K.gguf"
  it("prints the metadata and the tensor table", function()
    local out, code = run("inspect " .. model)
    assert.are.equal(0, code)
    assert.truthy(out:find("general.architecture", 1, true))
    assert.truthy(out:find("token_embd.weight", 1, true))
  end)
  it("reports a file that is not GGUF", function()
    local out, code = run("inspect " .. SHARED .. "/models/README.md")
    assert.are.equal(1, code)
    assert.truthy(out:find("README.md", 1, true))
  end)
end)
