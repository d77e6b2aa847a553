#!/usr/bin/env bash
# Tensor parallelism on a machine with several GPUs (issue #14): the NCCL tests and the benchmark.
# Run from the repository root on the device machine (nvidia-h200-x2 or -x4). It lacks DeepSpeed and a
# few small packages: carry them as wheels in .whl/ with the others (scripts/gpu_checks.sh), built or
# downloaded here:
#   DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation deepspeed==0.19.8 -w .whl   # pure Python
#   pip download --no-deps -d .whl hjson pexpect ptyprocess   # the rest is in the image (KINDS.md)
# Arguments name the steps (default: all); logs and JSON lines go to $OUT. NGPU (default: every GPU).
set -uo pipefail
OUT=${OUT:-/tmp/chunkqa-tp}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
fi
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
TORCHRUN="python3 -m torch.distributed.run --standalone --nproc-per-node $NGPU"

WANT=" ${*:-all} "
step() {
  local name=$1; shift
  [[ $WANT == " all " || $WANT == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout "${STEP_LIMIT:-560}" "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
}

# sharded logits against one GPU (DCA and SelfExtend, prefill and decode), `ask` alike on 1 and 2 GPUs
step tp_gpu python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/engine/test_parallel_gpu.py
# the CPU suite's tensor-parallel tests, here over NCCL: ask and chat under torchrun, stdin, errors, seed
step tp_cli python3 -m pytest -q -s -p no:cacheprovider tests/engine/test_parallel.py
# Llama-3-70B's shape on every GPU, then the one-GPU baseline (Llama-3-8B), 32k and 128k tokens
step tp_bench $TORCHRUN benchmarks/tp.py --shape llama3-70b --out "$OUT"
step tp_base python3 benchmarks/tp.py --shape llama3-8b --out "$OUT"

echo "== summary"
cat "$OUT/steps.txt"
for log in tp_gpu tp_cli tp_bench tp_base; do
  [ -f "$OUT/$log.log" ] && { echo "== $log"; tail -n "${TAIL:-12}" "$OUT/$log.log"; }
done
true
