#!/usr/bin/env bash
# The planner's GPU numbers in one call on a GPU machine (see BENCHMARKS.md, "GPU").
# The wheels that machine lacks come from ../shared/gpu/wheels.sh (into .whl/); the planner
# needs only these, copied to .gpuwhl/ to keep the upload small (WHEELS=.whl uses them all):
#   mkdir -p .gpuwhl && cp .whl/{dm_haiku,jmp,tabulate,distrax,tfp_nightly,dm_tree,gast,decorator,tqdm}* .gpuwhl/
# OUT is the folder for results (default ./gpu_out).
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
WHEELS=${WHEELS:-.gpuwhl}
S=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$S" "$WHEELS"/*.whl \
  && export PYTHONPATH="$S:$PWD" || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,temperature.gpu --format=csv
timeout 160 python3 benchmarks/gpu_variants.py --out "$OUT" --precisions default highest \
  > "$OUT/variants.log" 2>&1
echo "gpu_variants rc=$?"
timeout 230 python3 benchmarks/gpu_check.py --out "$OUT" > "$OUT/check.log" 2>&1
echo "gpu_check rc=$?"
sed -n '/summary/,$p' "$OUT/variants.log"
cat "$OUT/summary.txt" 2>/dev/null || tail -n 40 "$OUT/check.log"
