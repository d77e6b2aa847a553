#!/usr/bin/env bash
# One GPU session for chunkqa: DCA correctness (float32 and bf16), the benchmarks, and the CLI on a GPU.
# Run from the repository root on a CUDA machine; logs and JSON lines go to $OUT (default /tmp/chunkqa-gpu).
# Wheels for packages the machine lacks may be put in .whl/ (they are installed to /tmp/site first).
# Set CHUNKQA_GIT_SHA to the checkout's sha: the tree travels there without .git.
# Arguments name the steps to run (default: all), e.g. `bash scripts/gpu_checks.sh gpu_suite ttft_cache`.
# PACK=1 packs $OUT into one all.tgz at the end (the device tool returns at most 8 files a call).
set -uo pipefail
OUT=${OUT:-/tmp/chunkqa-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CHUNKQA_CACHE_DIR=/tmp/chunkqa-kv
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

WANT=" ${*:-all} "
step() {
  local name=$1; shift
  [[ $WANT == " all " || $WANT == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout "${STEP_LIMIT:-600}" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
}

SUITE=${SUITE:-tests/methods/dca/test_gpu.py tests/methods/selfextend tests/cache/test_stream.py tests/engine/test_cuda_graphs.py tests/methods/dca/test_masked.py tests/methods/dca/test_decode_triton.py}
step gpu_suite python3 -m pytest -q -m gpu -s -p no:cacheprovider $SUITE
step tp_gpu python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/engine/test_parallel_gpu.py
step dca_attention python3 benchmarks/dca_attention.py --device cuda --profile \
  ${ATT_LENGTHS:+--lengths $ATT_LENGTHS} --out "$OUT"
step prefill python3 benchmarks/prefill.py --device cuda --out "$OUT"
step prefill_se python3 benchmarks/prefill.py --device cuda --preset smollm2 --lengths 32768,65536 --piece 32768 \
  --methods plain,dca,selfextend:512,selfextend:2048 --repeats 1 --out "$OUT"
step prefill_long python3 benchmarks/prefill.py --device cuda --lengths 131072,262144 --repeats 1 \
  --methods ${LONG_METHODS:-plain@all,dca,dca@16384} --out "$OUT"
step decode python3 benchmarks/decode.py --device cuda --profile --out "$OUT"
step ttft_cache python3 benchmarks/ttft_cache.py --device cuda --out "$OUT"
step kv_load python3 benchmarks/kv_load.py --device cuda --sweep --out "$OUT"
step capacity_llama python3 benchmarks/capacity.py --device cuda --shape llama3-8b --lengths 131072,262144,524288 --out "$OUT"
step capacity_qwen python3 benchmarks/capacity.py --device cuda --shape qwen2.5-7b-1m --lengths ${QWEN_LENGTHS:-131072,262144,524288,1048576} --out "$OUT"
step ask_tiny python3 -m chunkqa ask examples/passkey-demo-16x.txt "What is the pass key?" -m tiny --no-cache
step selftest_tiny python3 -m chunkqa selftest -m tiny

echo "== summary"
cat "$OUT/steps.txt"
for log in gpu_suite tp_gpu dca_attention prefill prefill_se prefill_long decode ttft_cache kv_load capacity_llama capacity_qwen ask_tiny selftest_tiny; do
  [ -f "$OUT/$log.log" ] && { echo "== $log"; tail -n ${TAIL:-14} "$OUT/$log.log"; }
done
# PACK=1: everything under $OUT in one archive (the device tool brings back at most 8 files a call)
if [ "${PACK:-0}" = 1 ]; then
  tar czf /tmp/pack.tgz -C "$OUT" . && find "$OUT" -type f -delete && mv /tmp/pack.tgz "$OUT/all.tgz"
fi
true
