#!/usr/bin/env bash
# The real-model evaluations on a GPU (docs/evaluation.md): SmolLM2-135M-Instruct from its GGUF file.
# Run from the repository root on a CUDA machine. The GGUF travels in parts (the device tool carries at
# most 64 MiB a call, the tree included): .carry/p1, p2, p3 hold the pieces of `split -n 3 -d`, one per
# call; step `join` copies the one at hand to /tmp/gg and joins them once all three are there.
# The validation books are read from .carry/books when it is there, else from chunkqa's bundled copies.
# Results go to $OUT (default /tmp/chunkqa-gpu). MODEL=tiny runs the steps on the bundled tiny model
# (a dry run on any machine). Arguments name the steps, e.g. `bash scripts/gpu_smollm2.sh join setup suite`.
# Environment: LENGTHS, TRIALS, SEED (first seed), LAYOUTS, LIMIT (seconds), PIECE, and SETTINGS (the
# --setting flags of needle and passkey16), DCA_SETTINGS, SE_MORE as each step below reads them.
# Step `jobs` runs the `chunkqa eval passkey` argument lines of the file $JOBS, PAR processes at a time
# (default 6: a 135M model leaves the GPU mostly idle, so one process per line multiplies the cells an
# hour holds), each line to its own job<N>.jsonl and job<N>.log, all stopped LIMIT seconds after the start.
# PACK=1 packs $OUT into one all.tgz at the end (the device tool returns at most 8 files a call).
set -uo pipefail
OUT=${OUT:-/tmp/chunkqa-gpu}
mkdir -p "$OUT" /tmp/gg
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CHUNKQA_CACHE_DIR=/tmp/chunkqa-kv
[ -d .carry/books ] && export CHUNKQA_EVAL_DATA=$PWD/.carry/books
GGUF=/tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL=${MODEL:-/tmp/gg/smollm2-dir}
export CHUNKQA_KERNEL=${KERNEL:-sdpa-flash}  # the fastest DCA/SelfExtend prefill kernel on the H200 here
EVAL="python3 -m chunkqa eval"

step() {
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
}

join() {
  for part in .carry/p1/part.00 .carry/p2/part.01 .carry/p3/part.02; do
    [ -f "$part" ] && cp "$part" /tmp/gg/
  done
  if [ -f /tmp/gg/part.00 ] && [ -f /tmp/gg/part.01 ] && [ -f /tmp/gg/part.02 ]; then
    cat /tmp/gg/part.00 /tmp/gg/part.01 /tmp/gg/part.02 > "$GGUF" && md5sum "$GGUF"
  fi
  ls -la /tmp/gg
}

setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  python3 - <<EOF
import time, chunkqa
start = time.perf_counter()
loaded = chunkqa.load("$GGUF", method="none")
print(f"GGUF loaded in {time.perf_counter() - start:.1f} s")
loaded.model.save_pretrained("$MODEL")
loaded.tokenizer.save_pretrained("$MODEL")
EOF
}

run_jobs() {
  local deadline=$((SECONDS + ${LIMIT:-500})) n=0 line
  while IFS= read -r line; do
    [[ -z $line || $line == \#* ]] && continue
    n=$((n + 1))
    while [ "$(jobs -rp | wc -l)" -ge "${PAR:-6}" ]; do wait -n; done
    local left=$((deadline - SECONDS))
    [ "$left" -le 5 ] && { echo "job$n skipped (no time left): $line" >> "$OUT/jobs.txt"; continue; }
    (
      t0=$SECONDS
      # shellcheck disable=SC2086 # a line holds several arguments
      OMP_NUM_THREADS=2 timeout "$left" $EVAL passkey -m "$MODEL" --prefill-chunk "${PIECE:-32768}" $line \
        --jsonl "$OUT/job$n.jsonl" > "$OUT/job$n.log" 2>&1
      echo "job$n rc=$? $((SECONDS - t0))s: $line" >> "$OUT/jobs.txt"
    ) &
  done < "$JOBS"
  wait
  cat "$OUT/jobs.txt"
}

for arg in "$@"; do
  case $arg in
    join) join ;;
    setup) step setup setup ;;
    suite) step suite python3 -m pytest -q -m gpu -p no:cacheprovider tests/methods/dca/test_gpu.py \
        tests/methods/selfextend tests/cache/test_stream.py tests/engine/test_cuda_graphs.py \
        tests/methods/dca/test_masked.py ;;
    probe) for piece in 4096 32768; do
        step "probe$piece" $EVAL passkey -m $MODEL --lengths 4x --trials 4 --layouts sentences \
          --setting dca --setting selfextend --prefill-chunk $piece; done ;;
    ask) step ask python3 -m chunkqa ask .carry/books/1342.txt "Who is Mr. Darcy's friend who rents Netherfield?" \
        -m "$GGUF" --no-cache ;;
    ppl) step ppl timeout ${LIMIT:-200} $EVAL ppl -m $MODEL --lengths 1x,2x,4x,8x,16x --windows 2 \
        --prefill-chunk 8192 --setting none --setting dca,logit_scale=1 --setting dca --setting selfextend \
        --setting rope,rope=yarn:16 --jsonl "$OUT/ppl.jsonl" ;;
    passkey10) step passkey10 timeout ${LIMIT:-100} $EVAL passkey -m $MODEL --lengths 1x,2x,4x,8x,16x \
        --trials ${TRIALS:-5} --layouts lines --setting none --setting dca,logit_scale=1 \
        --prefill-chunk ${PIECE:-32768} --jsonl "$OUT/passkey10.jsonl" ;;
    needle) step needle timeout ${LIMIT:-200} $EVAL needle -m $MODEL --lengths ${LENGTHS:-1x,2x,4x,8x,16x} \
        --depths 0,0.5,1 --trials ${TRIALS:-2} --seed ${SEED:-0} ${SETTINGS:---setting dca --setting none} \
        --prefill-chunk ${PIECE:-32768} --jsonl "$OUT/needle.jsonl" ;;
    passkey16) step passkey16 timeout ${LIMIT:-150} $EVAL passkey -m $MODEL --lengths ${LENGTHS:-16x} \
        --trials ${TRIALS:-10} --seed ${SEED:-0} --layouts sentences ${SETTINGS:---setting dca --setting none} \
        --prefill-chunk ${PIECE:-32768} --jsonl "$OUT/passkey16.jsonl" ;;
    sweep) step sweep timeout 560 $EVAL passkey -m $MODEL --lengths 2x,4x,8x --trials 20 \
        --layouts sentences,prose --prefill-chunk ${PIECE:-32768} \
        --setting dca,logit_scale=1 --setting dca --setting dca,logit_scale=auto:0.1 --setting rope,rope=yarn:8 \
        --jsonl "$OUT/sweep.jsonl" ;;
    sweep_dca) step sweep_dca timeout ${LIMIT:-400} $EVAL passkey -m $MODEL --lengths ${LENGTHS:-2x,4x,8x} \
        --trials ${TRIALS:-20} --layouts ${LAYOUTS:-sentences} --prefill-chunk ${PIECE:-32768} \
        ${DCA_SETTINGS:---setting rope,rope=yarn:8 --setting dca,chunk_size=4096 --setting dca,local_window=512 \
        --setting dca,rope=yarn:2} --jsonl "$OUT/sweep_dca.jsonl" ;;
    sweep_se) step sweep_se timeout ${LIMIT:-400} $EVAL passkey -m $MODEL --lengths ${LENGTHS:-2x,4x,8x} \
        --trials ${TRIALS:-20} --layouts ${LAYOUTS:-sentences,prose} --prefill-chunk ${PIECE:-32768} \
        --setting selfextend ${SE_MORE:-} --jsonl "$OUT/sweep_se.jsonl" ;;
    jobs) step "jobs-$(basename "$JOBS" .jobs)" run_jobs ;;
    sweep1x) step sweep1x $EVAL passkey -m $MODEL --lengths 1x --trials 20 --layouts sentences,prose \
        --setting none --prefill-chunk ${PIECE:-32768} --jsonl "$OUT/sweep1x.jsonl" ;;
    *) echo "unknown step $arg" ;;
  esac
done
echo "== summary"
cat "$OUT/steps.txt" 2>/dev/null
for log in "$OUT"/*.log; do echo "== $log"; tail -n 16 "$log"; done
# PACK=1: everything under $OUT in one archive (the device tool brings back at most 8 files a call)
if [ "${PACK:-0}" = 1 ]; then
  tar czf /tmp/pack.tgz -C "$OUT" . && find "$OUT" -type f -delete && mv /tmp/pack.tgz "$OUT/all.tgz"
fi
true
