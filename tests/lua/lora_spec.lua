-- LoRA adapters from Lua: catena.lora.load, model:with{lora =, lora_scale =}, chains whose
-- nodes use different adapters running together through one engine, and the errors.
-- Adapters are random GGUF LoRA files made by tests/tools/mklora (MKLORA) for stories260K.
local catena = require("catena")
local SHARED = os.getenv("CTN_SHARED") or "../shared"
local MODEL = SHARED .. "/models/stories260K.gguf"
local MKLORA = os.getenv("MKLORA") or "build/tools/mklora"

local function mklora(path, seed)
  local cmd = string.format("%s %s -o %s --rank 8 --targets q,k,v,o,down --alpha 8 --std 0.3 --seed %d",
    MKLORA, MODEL, path, seed)
  assert(os.execute(cmd), "mklora failed: " .. cmd)
end

describe("lora", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  -- A copy of the model: another file, so this spec's engine settings (an adapter budget)
  -- do not clash with the other specs' engine for the same model in one process.
  assert(os.execute(string.format("cp %s %s/m.gguf", MODEL, dir)))
  local model_copy = dir .. "/m.gguf"
  local a1, a2 = dir .. "/a1.gguf", dir .. "/a2.gguf"
  mklora(a1, 1)
  mklora(a2, 2)
  -- A budget for two of these adapters (about 110 KB each), not three.
  local llm = catena.model{ path = model_copy, lora_budget = 250000 }
  catena.lora.load(llm, "one", a1)
  catena.lora.load(llm, "two", a2)
  local function story(opts)
    return catena.prompt("Once upon a time, {who}") | llm:with(opts) | catena.parser.str()
  end
  local base = story{ max_tokens = 16 }
  local one = story{ max_tokens = 16, lora = "one" }
  local two = story{ max_tokens = 16, lora = "two" }

  it("changes the output, and scale 0 is the base model", function()
    local b, o = base:invoke({ who = "a cat" }), one:invoke({ who = "a cat" })
    assert.are_not.equal(b, o)
    assert.are.equal(b, story{ max_tokens = 16, lora = "one", lora_scale = 0 }:invoke({ who = "a cat" }))
  end)

  it("runs nodes with different adapters together, each as alone", function()
    local alone = { base = base:invoke({ who = "a dog" }), one = one:invoke({ who = "a dog" }),
                    two = two:invoke({ who = "a dog" }) }
    local together = catena.parallel{ base = base, one = one, two = two }:invoke({ who = "a dog" })
    assert.are.same(alone, together)
    local many = {}
    for i = 1, 24 do many[i] = { who = "a dog" } end
    local outs = catena.parallel{ base = base:map(), one = one:map(), two = two:map() }:invoke(many)
    for i = 1, 24 do
      assert.are.equal(alone.base, outs.base[i])
      assert.are.equal(alone.one, outs.one[i])
      assert.are.equal(alone.two, outs.two[i])
    end
  end)

  it("names what is wrong", function()
    local ok, err = pcall(function() return story{ lora = "nope" }:invoke({ who = "x" }) end)
    assert.is_false(ok)
    assert.matches("adapter 'nope' is not loaded", err.message)
    ok, err = pcall(catena.lora.load, llm, "bad", dir .. "/missing.gguf")
    assert.is_false(ok)
    assert.matches("missing.gguf", err.message)
    ok, err = pcall(catena.lora.load, llm, "one", a2)
    assert.is_false(ok)
    assert.matches("already loaded from", err.message)
    assert.is_true(catena.lora.unload(llm, "two"))
    assert.is_false(catena.lora.unload(llm, "two"))
  end)

  it("reloads an adapter the budget unloaded", function()
    catena.lora.load(llm, "two", a2)
    local before = one:invoke({ who = "a cat" })
    local a3 = dir .. "/a3.gguf"
    mklora(a3, 3)
    catena.lora.load(llm, "three", a3) -- over the budget: the least recently used goes
    assert.are.equal(2, catena.stats(llm).loras)
    local three = story{ max_tokens = 16, lora = "three" }
    local t = three:invoke({ who = "a cat" })
    assert.are.equal(before, one:invoke({ who = "a cat" })) -- loaded again from its file
    assert.are.equal(t, three:invoke({ who = "a cat" }))
    local st = catena.stats(llm)
    assert.is_true(st.running == 0)
    os.execute("rm -rf " .. dir)
  end)
end)

describe("lora from a Hugging Face PEFT folder", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  -- mklora --peft writes the same adapter both ways (the PEFT one with q/k rows in Hugging
  -- Face's order, as save_pretrained would have them).
  local cmd = string.format("%s %s -o %s/p.gguf --peft %s/peft --rank 8 --targets q,k,v,o,down "
    .. "--alpha 8 --std 0.1 --seed 5", MKLORA, MODEL, dir, dir)
  assert(os.execute(cmd), "mklora failed: " .. cmd)
  assert(os.execute(string.format("cp %s %s/m.gguf", MODEL, dir)))
  local llm = catena.model{ path = dir .. "/m.gguf" }

  it("gives what the converted GGUF file gives", function()
    catena.lora.load(llm, "gguf", dir .. "/p.gguf")
    catena.lora.load(llm, "peft", dir .. "/peft")
    local function story(opts)
      return catena.prompt("Once upon a time, {who}") | llm:with(opts) | catena.parser.str()
    end
    local base = story{ max_tokens = 16 }:invoke({ who = "a fox" })
    local g = story{ max_tokens = 16, lora = "gguf" }:invoke({ who = "a fox" })
    local p = story{ max_tokens = 16, lora = "peft" }:invoke({ who = "a fox" })
    assert.are_not.equal(base, p)
    assert.are.equal(g, p)
    os.execute("rm -rf " .. dir)
  end)
end)
