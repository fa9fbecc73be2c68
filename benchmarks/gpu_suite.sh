#!/usr/bin/env bash
# The GPU proof, one command, at most 8 minutes, one summary table (issue 13):
#
#   1. the CUDA no-sync test: ordinary training steps with the probe attached under
#      torch.cuda.set_sync_debug_mode("error") (tests/probe/test_no_sync.py, CUDA test);
#   2. benchmarks/probe_overhead.py on a GPT-2-small-sized transformer in bf16 and a
#      ResNet-18-sized CNN (bare and probed copies interleaved; targets 1.01 and 1.03);
#   3. benchmarks/compare_loggers.py on the same two models: the probe against a
#      hand-written TensorBoard loop (.item() per layer: a host-device sync each).
#
# On a machine without CUDA it says so and exits 0 within seconds.
#
#   bash benchmarks/gpu_suite.sh                 # uses $PYTHON, else .venv/bin/python, else python3
#
# Each step has its own time limit (the three add up to 7.5 minutes); a step that
# fails or runs out of time shows as such in the table and the others still run.
set -u
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_suite: no CUDA device on this machine (nvidia-smi finds no GPU): nothing measured."
  exit 0
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "gpu_suite: torch in $PYTHON sees no CUDA device (a CPU build of torch?): nothing measured."
  exit 0
fi

LOGS=$(mktemp -d -t gpu-suite-XXXXXX)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
echo "gpu_suite: $("$PYTHON" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())'); logs in $LOGS"

run_step() {  # name, seconds, command...
  local name=$1 seconds=$2
  shift 2
  local start=$SECONDS
  timeout --kill-after=10 "$seconds" "$@" >"$LOGS/$name.log" 2>&1
  echo $? >"$LOGS/$name.rc"
  echo "gpu_suite: $name finished in $((SECONDS - start)) s (exit $(cat "$LOGS/$name.rc"))"
}

run_step no_sync 90 "$PYTHON" -m pytest -q -p no:cacheprovider tests/probe/test_no_sync.py -k cuda -rs
run_step probe_overhead 170 "$PYTHON" benchmarks/probe_overhead.py --models gpt2 resnet18 --rounds 8 --steps 10
run_step compare_loggers 190 "$PYTHON" benchmarks/compare_loggers.py --models gpt2-small resnet18 \
  --variants bare bare-again probe tensorboard --rounds 5 --steps 50

"$PYTHON" benchmarks/gpu_suite_summary.py "$LOGS"
