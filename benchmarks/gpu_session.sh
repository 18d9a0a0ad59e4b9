#!/usr/bin/env bash
# The planning kernels and the XLA path side by side on a GPU, in one call:
#
#   pip install -e '.[dev]'            # with a CUDA jax, e.g. pip install -U 'jax[cuda12]'
#   bash benchmarks/gpu_session.sh     # ~6 min on an H100/H200; results in ./gpu_out
#
# 1. benchmarks/gpu_fused.py: seconds per action of the planner with XLA and with each kernel of
#    mbrl_bayes.kernels (whole horizon on Mosaic GPU and on Triton for ts_inf, the per-step
#    Triton kernel for ts1), and how far each kernel planner's objectives are from XLA's;
# 2. a per-kernel profile of one action of the fastest kernel planner (benchmarks/planning.py);
# 3. the GPU-only tests: the compiled kernels against XLA's float32 products, then the
#    rollout's own tests.
# MODE=all also runs benchmarks/gpu_check.py (the XLA planner on the GPU against the CPU:
# sampling, precision, unrolling). OUT: results folder (default gpu_out).
# On a CPU, `FUSED_ARGS=--smoke OUT=/tmp/gpu_out bash benchmarks/gpu_session.sh` checks the
# script with tiny shapes through Pallas' interpreter.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
MODE=${MODE:-fused}
FUSED_ARGS=${FUSED_ARGS:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,temperature.gpu --format=csv
fi
LIMIT=300
[ -n "$FUSED_ARGS" ] && LIMIT=1200  # --smoke on a CPU: Mosaic's interpreter takes s per action
timeout $LIMIT python3 benchmarks/gpu_fused.py --out "$OUT" --budget-s 150 $FUSED_ARGS \
  > "$OUT/fused.log" 2>&1
echo "gpu_fused rc=$?"
if [ -z "$FUSED_ARGS" ] && [ -f "$OUT/best_planner_flags.txt" ]; then
  # CUDA graphs off, so that each kernel is traced.
  XLA_FLAGS="--xla_gpu_enable_command_buffer=" timeout 45 python3 benchmarks/planning.py \
    --config pets_halfcheetah --actions 2 --profile $(cat "$OUT/best_planner_flags.txt") \
    > "$OUT/profile_fused.log" 2>&1
  echo "profile rc=$?"; head -n 30 "$OUT/profile_fused.log"
fi
if [ -z "$FUSED_ARGS" ]; then
  timeout 120 python3 -m pytest -q -p no:cacheprovider -m kernels -k on_a_gpu \
    tests/test_fused_rollout.py tests/test_fused_mlp.py > "$OUT/tests.log" 2>&1
  echo "kernel tests rc=$?"; tail -n 5 "$OUT/tests.log"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_planning_rollout.py \
    > "$OUT/tests_rollout.log" 2>&1
  echo "rollout tests rc=$?"; tail -n 3 "$OUT/tests_rollout.log"
fi
if [ "$MODE" = all ]; then
  timeout 230 python3 benchmarks/gpu_check.py --out "$OUT" > "$OUT/check.log" 2>&1
  echo "gpu_check rc=$?"
  cat "$OUT/summary.txt" 2>/dev/null || tail -n 40 "$OUT/check.log"
fi
cat "$OUT/fused_summary.txt" 2>/dev/null || tail -n 40 "$OUT/fused.log"
