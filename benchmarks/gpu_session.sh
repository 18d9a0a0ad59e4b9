#!/usr/bin/env bash
# Everything the planner's GPU numbers need, in one call on a GPU machine (see BENCHMARKS.md).
# Wheels that machine lacks (haiku, distrax, tfp, ...) are expected in ./.gpuwhl (from
# ../shared/gpu/wheels.sh); OUT is the folder for results (default ./gpu_out).
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
S=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$S" .gpuwhl/*.whl \
  && export PYTHONPATH="$S:$PWD" || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,temperature.gpu --format=csv
timeout 330 python3 benchmarks/gpu_check.py --out "$OUT" > "$OUT/check.log" 2>&1
echo "gpu_check rc=$?"
timeout 80 python3 benchmarks/planning.py --config pets_halfcheetah --actions 3 --profile \
  > "$OUT/profile_halfcheetah.txt" 2>&1
echo "profile rc=$?"
timeout 150 python3 -m pytest -x -q -p no:cacheprovider tests/test_compile_sampling.py \
  tests/test_planning_rollout.py tests/test_planning_optimizers.py tests/test_planning_mpc.py \
  > "$OUT/pytest.log" 2>&1
echo "pytest rc=$?"; tail -n 25 "$OUT/pytest.log"
grep -A 45 "^thunk" "$OUT/profile_halfcheetah.txt" | head -45
cat "$OUT/summary.txt" 2>/dev/null || tail -n 40 "$OUT/check.log"
