#!/usr/bin/env bash
# The planner's GPU numbers in one call on a GPU machine (see BENCHMARKS.md, "GPU").
# The wheels that machine lacks come from ../shared/gpu/wheels.sh (into .whl/); the planner
# needs only these, copied to .gpuwhl/ to keep the upload small (WHEELS=.whl uses them all):
#   bash ../shared/gpu/wheels.sh pytest iniconfig pluggy packaging
#   mkdir -p .gpuwhl && cp .whl/{dm_haiku,jmp,tabulate,distrax,tfp_nightly,dm_tree,gast,decorator,tqdm,pytest,iniconfig,pluggy,packaging}* .gpuwhl/
# and add /.gpuwhl/ to .git/info/exclude; run with carry [".gpuwhl"].
# MODE=fused (default): the Pallas kernels against XLA's products (benchmarks/gpu_fused.py:
#   planners with the whole-horizon rollout kernel (Mosaic GPU first, then Triton) and the
#   per-step kernel first, then one-step
#   timings of the per-step kernel's variants), a per-kernel profile of the fastest kernel
#   planner, then the kernels' and the rollout's tests on the GPU. About 8 minutes at most; run
#   it with timeout_s 600.
# MODE=all: also benchmarks/gpu_variants.py and benchmarks/gpu_check.py (XLA options, precision,
#   unrolling; their results from session 3 are in docs/results/gpu_h100/).
# OUT is the folder for results (default ./gpu_out). Checking the script on a CPU:
#   WHEELS=none FUSED_ARGS=--smoke OUT=/tmp/gpu_out bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
WHEELS=${WHEELS:-.gpuwhl}
MODE=${MODE:-fused}
FUSED_ARGS=${FUSED_ARGS:-}
if [ "$WHEELS" != none ]; then
  S=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$S" \
    "$WHEELS"/*.whl && export PYTHONPATH="$S:$PWD" || exit 1
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,temperature.gpu --format=csv
timeout 300 python3 benchmarks/gpu_fused.py --out "$OUT" --planner-budget-s 150 --budget-s 70 \
  $FUSED_ARGS > "$OUT/fused.log" 2>&1
echo "gpu_fused rc=$?"
if [ -z "$FUSED_ARGS" ] && [ -f "$OUT/best_planner_flags.txt" ]; then
  # Per-kernel times of one action of the fastest kernel planner (CUDA graphs off, so that each
  # kernel is traced).
  XLA_FLAGS="--xla_gpu_enable_command_buffer=" timeout 45 python3 benchmarks/planning.py \
    --config pets_halfcheetah --actions 2 --profile $(cat "$OUT/best_planner_flags.txt") \
    > "$OUT/profile_fused.log" 2>&1
  echo "profile rc=$?"; head -n 30 "$OUT/profile_fused.log"
fi
# The compiled kernels against XLA on the GPU (6 tests, the Mosaic one first), then the
# rollout's own tests.
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_fused_rollout.py \
  tests/test_fused_mlp.py -k on_a_gpu > "$OUT/tests.log" 2>&1
echo "kernel tests rc=$?"; tail -n 5 "$OUT/tests.log"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_planning_rollout.py \
  > "$OUT/tests_rollout.log" 2>&1
echo "rollout tests rc=$?"; tail -n 3 "$OUT/tests_rollout.log"
if [ "$MODE" = all ]; then
  timeout 160 python3 benchmarks/gpu_variants.py --out "$OUT" --precisions default highest \
    > "$OUT/variants.log" 2>&1
  echo "gpu_variants rc=$?"
  timeout 230 python3 benchmarks/gpu_check.py --out "$OUT" > "$OUT/check.log" 2>&1
  echo "gpu_check rc=$?"
  sed -n '/summary/,$p' "$OUT/variants.log"
  cat "$OUT/summary.txt" 2>/dev/null || tail -n 40 "$OUT/check.log"
fi
cat "$OUT/fused_summary.txt" 2>/dev/null || tail -n 40 "$OUT/fused.log"
