#!/bin/sh
# Prefill and decode speed of catena's CPU engine against llama.cpp, on random-weight
# llama models of the ~125M shape of ../shared/docs/BENCHMARKS.md in several weight types.
#
#   scripts/setup-peers.sh && cmake --build build && sh bench/run_engine.sh
#
# 1. Models (made once, kept in $MODEL_DIR): tests/tools/mkmodel writes the F16 model (dim 768,
#    12 layers, 12 heads, 4 KV heads, FFN 2048, vocabulary 32000 from llama.cpp's SPM vocab,
#    untied output); `catena quantize` makes each of $TYPES from it (pure: every matrix,
#    token_embd and output included, in that type).
# 2. For each model and each thread count, `catena bench` and bench/llamacpp_gen run
#    alternately (A B A B ..., $ALT invocations each); both take the same arguments and
#    print the same JSON line (prompt of $PROMPT_TOKENS ids 1 + (i * 7919) % (n_vocab - 1)
#    prefilled as one batch; then $GEN_TOKENS greedy single-token steps; each invocation
#    does a warm-up and reports the median of its --reps $REPS repetitions). One-thread
#    runs are pinned to CPU 0 when taskset works. The table gives the median over the
#    invocations and the ratio catena / llama.cpp (above 1: catena is faster).
# 3. bench/membw measures the read bandwidth with 1 and 2 threads (1 GiB buffer). Decoding
#    one token reads every weight once, so
#        bytes/token = (sum of the nbytes of all tensors except token_embd)
#                      + one row of token_embd (its nbytes / n_vocab)
#                      + the F16 KV cache read at the mean decode position
#                        2 (K and V) x layers x kv_dim x 2 bytes x (prompt + gen / 2)
#    and the bound is read_GB/s / bytes/token; "% of bound" = decode tok/s x bytes/token /
#    read bandwidth of the same thread count. (A host whose last-level cache holds the model
#    can pass 100%: membw's buffer is larger than any cache, the model may not be.)
# 4. Peak RSS (getrusage ru_maxrss of each program) against the model file size plus the
#    KV cache the context needs, 2 x layers x kv_dim x (prompt + gen) x 2 bytes.
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr. Without a `bench`
# command in catena it says so and still runs the llama.cpp side.
#
# Environment (defaults in brackets):
#   BUILD_DIR [build]                    where catena and bench/* are built
#   MODEL_DIR [$BUILD_DIR/bench-models]  where the models are written (and reused: a file
#                                        there is not rewritten; delete it to remake it)
#   TYPES ["Q8_0 Q4_0 Q4_K"]             weight types (F16 is the unquantized model)
#   THREADS ["1 2"]  ALT [5]  REPS [3]  PROMPT_TOKENS [256]  GEN_TOKENS [64]
#   MEMBW_MIB [1024]  RAW [none]         RAW=FILE keeps every JSON line, tagged
#   CATENA, LLAMACPP_GEN, MKMODEL, MEMBW override the programs' paths
#   CATENA_LLAMA_LIBDIR                  llama.cpp libraries [bench/node_modules/...]
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
types=${TYPES:-Q8_0 Q4_0 Q4_K}
threads=${THREADS:-1 2}
alt=${ALT:-5}
reps=${REPS:-3}
prompt=${PROMPT_TOKENS:-256}
gen=${GEN_TOKENS:-64}
membw_mib=${MEMBW_MIB:-1024}
catena=${CATENA:-$build/catena}
lgen=${LLAMACPP_GEN:-$build/bench/llamacpp_gen}
mkmodel=${MKMODEL:-$build/tools/mkmodel}
membw=${MEMBW:-$build/bench/membw}

say() { echo "$*" >&2; }
for p in "$lgen" "$mkmodel" "$membw"; do
    [ -x "$p" ] || {
        say "$p not built (cmake --build $build --target catena llamacpp_gen mkmodel membw)"
        exit 1
    }
done
if [ ! -d bench/node_modules ] && [ -z "${CATENA_LLAMA_LIBDIR:-}" ]; then
    say "llama.cpp is not installed: run scripts/setup-peers.sh"
    exit 1
fi

# Does this catena have the bench command? Unknown commands say "unknown command".
have_bench=0
if [ ! -x "$catena" ]; then
    say "NOTE: no $catena (cmake --build $build --target catena): only the llama.cpp side runs."
elif "$catena" bench --help 2>&1 | grep -q "unknown command"; then
    say "NOTE: $catena has no 'bench' command yet: only the llama.cpp side runs."
else
    have_bench=1
fi

pin1=
if command -v taskset >/dev/null 2>&1 && taskset -c 0 true 2>/dev/null; then pin1="taskset -c 0"; fi

load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
# llama.cpp's worker threads spin at their barriers: with another job on a core, its 2-thread
# runs can slow tenfold or more. Say so, as the numbers will not mean much.
if awk -v l="${load_start%% *}" -v n="$(nproc)" 'BEGIN { exit !(l + 0 > n / 4) }'; then
    say "WARNING: load average $load_start on $(nproc) CPUs: other work will distort the times"
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-engine-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
raw=$tmp/raw.jsonl
: > "$raw"

# ---- models ----------------------------------------------------------------------------
mkdir -p "$model_dir"
base=$model_dir/llama-d768-l12-h12-kv4-ff2048-v32000
f16=$base-f16.gguf
if [ ! -s "$f16" ]; then
    say "writing $f16"
    "$mkmodel" -o "$f16.tmp" --dim 768 --layers 12 --heads 12 --kv-heads 4 --ff 2048 \
        --type f16 --seed 1 --ctx 2048
    mv "$f16.tmp" "$f16"
fi
# The file of weight type $1.
model_path() { echo "$base-$(echo "$1" | tr '[:upper:]' '[:lower:]').gguf"; }
models=
for t in $types; do
    m=$(model_path "$t")
    if [ "$t" != F16 ]; then
        if [ ! -s "$m" ] || [ -n "$(find "$f16" -newer "$m")" ]; then
            say "catena quantize -> $m"
            [ -x "$catena" ] || { say "no $catena to quantize with"; exit 1; }
            "$catena" quantize "$f16" "$m.tmp" "$t" >&2
            mv "$m.tmp" "$m"
        fi
    fi
    models="$models $t"
done

# ---- runs ------------------------------------------------------------------------------
# Appends one tagged line per invocation: TYPE THREADS SIDE JSON (or FAILED).
run() { # type threads side cmd...
    r_tag="$1 $2 $3"
    shift 3
    if r_out=$("$@" 2>"$tmp/err"); then
        printf '%s %s\n' "$r_tag" "$(echo "$r_out" | tail -n 1)" >> "$raw"
    else
        say "  $r_tag failed: $(tail -n 3 "$tmp/err")"
        printf '%s FAILED\n' "$r_tag" >> "$raw"
    fi
}
for t in $models; do
    m=$(model_path "$t")
    for n in $threads; do
        pin=
        if [ "$n" = 1 ]; then pin=$pin1; fi
        say "$t, $n thread(s): $alt alternating invocations"
        args="-m $m --prompt-tokens $prompt --gen-tokens $gen --threads $n --reps $reps"
        i=0
        while [ $i -lt "$alt" ]; do
            if [ $have_bench = 1 ]; then
                # shellcheck disable=SC2086
                run "$t" "$n" catena $pin "$catena" bench $args
            fi
            # shellcheck disable=SC2086
            run "$t" "$n" llama.cpp $pin "$lgen" $args
            i=$((i + 1))
        done
    done
done

say "membw ($membw_mib MiB)"
"$membw" --mib "$membw_mib" > "$tmp/membw.json"
if [ -n "${RAW:-}" ]; then
    cp "$raw" "$RAW"
    cat "$tmp/membw.json" >> "$RAW"
fi

# ---- the table ---------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
python3 - "$tmp" "$raw" "$have_bench" "$prompt" "$gen" "$alt" "$reps" "$commit" \
    "${cpu:-unknown} x $(nproc)" "$models" "$pin1" "$base" "$load_start" "$load_end" <<'EOF'
import json, statistics, struct, sys, datetime

tmp, raw, have_bench, prompt, gen, alt, reps, commit, cpu, models, pin, base, load0, load1 = \
    sys.argv[1:15]
have_bench, prompt, gen = have_bench == "1", int(prompt), int(gen)
models = models.split()


def gguf_read(path):
    """Metadata (numbers and array lengths) and tensor byte sizes of a GGUF v2/v3 file.

    A tensor's size is the distance to the next tensor's offset (to the end of the file for
    the last), so it includes the alignment padding (< general.alignment bytes)."""
    f = open(path, "rb")
    rd = lambda fmt: struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
              12: "d"}
    rstr = lambda: f.read(rd("Q")).decode("utf-8", "replace")

    def value(t):
        if t in scalar:
            return rd(scalar[t])
        if t == 8:
            return rstr()
        et, n = rd("I"), rd("Q")  # array: only its length is kept
        if et in scalar:
            f.seek(n * struct.calcsize("<" + scalar[et]), 1)
        else:
            for _ in range(n):
                value(et)
        return n

    assert f.read(4) == b"GGUF", path
    rd("I")
    n_t, n_kv = rd("Q"), rd("Q")
    md = {}
    for _ in range(n_kv):
        k = rstr()
        md[k] = value(rd("I"))
    infos = []
    for _ in range(n_t):
        name = rstr()
        f.seek(8 * rd("I"), 1)
        rd("I")
        infos.append((rd("Q"), name))
    align = md.get("general.alignment", 32)
    data = (f.tell() + align - 1) // align * align
    f.seek(0, 2)
    end = f.tell() - data
    infos.sort()
    sizes = {name: (infos[i + 1][0] if i + 1 < len(infos) else end) - off
             for i, (off, name) in enumerate(infos)}
    return md, sizes, f.tell()
runs, failed, isa = {}, {}, {}
for line in open(raw):
    t, n, side, rest = line.rstrip("\n").split(" ", 3)
    key = (t, int(n), side)
    if rest == "FAILED":
        failed[key] = failed.get(key, 0) + 1
        continue
    j = json.loads(rest)
    runs.setdefault(key, []).append(j)
    isa[side] = j.get("isa", "?")
bw = json.load(open(f"{tmp}/membw.json"))
read_bw = {int(k): v for k, v in bw["read_gb_s"].items()}


def med(t, n, side, field):
    v = [j[field] for j in runs.get((t, n, side), [])]
    return statistics.median(v) if v else None


def fmt(x, digits=0):
    return "—" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def shape(t):
    md, sizes, file_size = gguf_read(f"{base}-{t.lower()}.gguf")
    L = md["llama.block_count"]
    kv_dim = md["llama.attention.head_count_kv"] * (
        md["llama.embedding_length"] // md["llama.attention.head_count"])
    n_vocab = md["tokenizer.ggml.tokens"]
    emb = sizes["token_embd.weight"]
    weights = sum(v for k, v in sizes.items() if k != "token_embd.weight")
    kv_read = 2 * L * kv_dim * 2 * (prompt + gen / 2)
    kv_mem = 2 * L * kv_dim * 2 * (prompt + gen)
    return {"file": file_size, "per_token": weights + emb / n_vocab + kv_read,
            "kv_mem": kv_mem}


threads = sorted({k[1] for k in runs} | {k[1] for k in failed})
print(f"- **Date:** {datetime.date.today()}; **machine:** {cpu}; load average "
      f"{load0} at the start, {load1} at the end (other work on the cores slows 2-thread "
      "runs most)")
print(f"- **catena:** commit {commit}; isa {isa.get('catena', '—')}"
      + ("" if have_bench else " — **no `catena bench` yet: catena columns empty**"))
print(f"- **Peer:** llama.cpp from node-llama-cpp 3.22.1 via `bench/llamacpp_gen` "
      f"(dlopen), CPU variant {isa.get('llama.cpp', '—')}; F16 KV cache and flash attention "
      "AUTO (on for the CPU backend), llama.cpp's defaults")
print(f"- **Work:** random-weight llama, dim 768, 12 layers, 12/4 heads, FFN 2048, "
      f"vocab 32000 (tests/tools/mkmodel, `catena quantize`); prompt {prompt} tokens as one batch, "
      f"then {gen} greedy decode steps; {alt} alternating invocations per side, each the "
      f"median of {reps} repetition(s) after a warm-up; medians over invocations"
      + (f"; 1-thread runs pinned with `{pin}`" if pin else ""))
print(f"- **Bandwidth (bench/membw, {bw['mib']} MiB, median of {bw['runs']}):** read "
      + ", ".join(f"{v:.1f} GB/s ({k} thr)" for k, v in sorted(read_bw.items()))
      + "; copy (read + write) "
      + ", ".join(f"{v:.1f} GB/s ({k} thr)" for k, v in sorted(bw["copy_gb_s"].items(),
                                                               key=lambda kv: int(kv[0]))))
print("- **Command:** `sh bench/run_engine.sh`")
if failed:
    print("- **Failed invocations:** " + ", ".join(f"{t} {n}thr {s}: {c}"
                                                    for (t, n, s), c in sorted(failed.items())))
print()
print("| model | threads | prefill catena tok/s | prefill llama.cpp tok/s | catena / llama.cpp "
      "| decode catena tok/s | decode llama.cpp tok/s | catena / llama.cpp |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for t in models:
    for n in threads:
        pc, pl = med(t, n, "catena", "prefill_tok_s"), med(t, n, "llama.cpp", "prefill_tok_s")
        dc, dl = med(t, n, "catena", "decode_tok_s"), med(t, n, "llama.cpp", "decode_tok_s")
        print(f"| {t} | {n} | {fmt(pc)} | {fmt(pl)} | {ratio(pc, pl)} | {fmt(dc, 1)} | "
              f"{fmt(dl, 1)} | {ratio(dc, dl)} |")
print()
print("Decode against the bandwidth bound (bytes/token: all tensors but token_embd, one "
      "token_embd row, the F16 KV cache at the mean decode position; bound = membw read "
      "GB/s of the same thread count / bytes/token), and peak RSS against model file + "
      "KV cache (2 × layers × kv_dim × (prompt + gen) × 2 bytes), in MiB as ru_maxrss:")
print()
print("| model | file MB | MB read / token | threads | bound tok/s | catena % of bound "
      "| llama.cpp % of bound | file + KV MiB | peak RSS catena MiB | peak RSS llama.cpp MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in models:
    s = shape(t)
    for n in threads:
        bound = read_bw[n] * 1e9 / s["per_token"] if n in read_bw else None
        dc, dl = med(t, n, "catena", "decode_tok_s"), med(t, n, "llama.cpp", "decode_tok_s")
        pct = lambda x: "—" if x is None or bound is None else f"{100 * x / bound:.0f}%"
        rc, rl = med(t, n, "catena", "peak_rss_mb"), med(t, n, "llama.cpp", "peak_rss_mb")
        print(f"| {t} | {s['file'] / 1e6:.1f} | {s['per_token'] / 1e6:.1f} | {n} | "
              f"{fmt(bound)} | {pct(dc)} | {pct(dl)} | {(s['file'] + s['kv_mem']) / 2**20:.1f} | "
              f"{fmt(rc)} | {fmt(rl)} |")
EOF
