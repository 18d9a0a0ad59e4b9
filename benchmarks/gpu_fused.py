"""The fused Pallas/Triton kernels against XLA's products, on a GPU, in one call.

    python benchmarks/gpu_fused.py --out DIR            # on a machine with a GPU
    python benchmarks/gpu_fused.py --out DIR --smoke    # tiny shapes, Pallas interpreter (CPU)

1. **Seconds per action** of ``benchmarks/planning.py``'s planner for both configurations (the
   target first) with XLA's products, each whole-horizon rollout kernel variant
   (``ROLLOUT_VARIANTS``: the whole horizon in one launch, ``mbrl_bayes.models.mosaic_rollout``
   on Mosaic GPU and ``mbrl_bayes.models.fused_rollout`` on Triton)
   and the per-step kernel (``STEP_PLANNER_VARIANTS``), timed in alternating rounds; and how
   far each planner's rollout objectives (64 candidates) are from the XLA planner's, and
   whether it picks the same best candidate. Variants that fail to build are recorded with
   their error; those not built within ``--planner-budget-s`` are skipped.
2. **One model step** of the ``pets_halfcheetah`` network (5 draws x 2000 rows, 24 -> 4 x 200
   SiLU -> 36): a chain of 150 steps in one jitted call (each step's input is the previous
   output, as in a rollout), XLA's products (cuBLAS, the toolkit's default; also with bfloat16
   operands, for comparison) and each per-step kernel variant (``VARIANTS``: rows per program,
   warps, operand dtype) within ``--budget-s``: microseconds per step, compile seconds, and the
   relative error of one step against float64 on the host.

One JSON object per measurement in ``DIR/fused.jsonl``; a summary table after each part (also
in ``DIR/fused_summary.txt``); the fastest kernel planner as ``benchmarks/planning.py`` flags in
``DIR/best_planner_flags.txt``, the fastest per-step variant of each dtype in
``DIR/best_<dtype>_flags.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import planning as bench  # noqa: E402

from mbrl_bayes.compile import jit  # noqa: E402
from mbrl_bayes.models import FusedMLPConfig  # noqa: E402
from mbrl_bayes.models.ensemble import apply_stacked_mlp, init_stacked_mlp  # noqa: E402
from mbrl_bayes.models.fused_mlp import fused_stacked_mlp, pack_stacked_mlp  # noqa: E402

# FusedMLPConfig arguments: (block_rows, num_warps, dot_dtype, max_chunk, pad_to_power_of_two),
# most promising first (the time budget may cut the list): float32 first (XLA's precision), then
# by the register spills ``benchmarks/triton_resources.py`` reports without a GPU.
VARIANTS = [
    (64, 4, "float32", 64, False), (128, 8, "bfloat16", 64, False),
    (64, 4, "bfloat16", 64, False), (64, 4, "float16", 64, False),
    (128, 8, "bfloat16", 128, False), (32, 4, "bfloat16", 64, False),
    (128, 8, "float32", 64, False), (128, 8, "float16", 128, False),
    (32, 4, "float32", 64, False), (128, 8, "float32", 128, False),
    (64, 4, "float32", 128, False), (64, 4, "bfloat16", 256, True),
    (64, 8, "float32", 64, False), (128, 4, "bfloat16", 64, False),
]
# The whole-horizon rollout kernel's variants (``FusedMLPConfig`` arguments besides
# ``whole_horizon=True``), timed as planners. The Mosaic GPU kernel first (``mosaic_rollout``:
# explicit wgmma and TMA, no register spills to negotiate with Triton; r128 is one wave of 80
# blocks for halfcheetah), then the Triton ones ordered by what ``benchmarks/triton_resources.py``
# reports (one wave of programs on an H100, then fewest spills; docs/results/triton_resources/).
ROLLOUT_VARIANTS = [
    dict(block_rows=128, dot_dtype="bfloat16", backend="mosaic"),
    dict(block_rows=64, dot_dtype="bfloat16", backend="mosaic"),
    dict(block_rows=64, num_warps=4, dot_dtype="bfloat16", staged=True, num_stages=2),
    dict(block_rows=64, num_warps=4, dot_dtype="bfloat16", staged=True),
    dict(block_rows=32, num_warps=4, dot_dtype="bfloat16", staged=True, num_stages=2),
    dict(block_rows=64, num_warps=4, dot_dtype="float16", staged=True, num_stages=2),
    dict(block_rows=128, num_warps=8, dot_dtype="bfloat16", staged=True),
    dict(block_rows=64, num_warps=8, dot_dtype="bfloat16"),
    dict(block_rows=64, num_warps=8, dot_dtype="float32", staged=True),
    dict(block_rows=64, num_warps=4, dot_dtype="float32"),
]


# The per-step kernel in the planner runs: float32 (XLA's precision) and the 16-bit layout with
# the fewest spills.
STEP_PLANNER_VARIANTS = [(64, 4, "float32", 64, False), (128, 8, "bfloat16", 64, False)]


def config_of(variant, whole_horizon: bool = False, interpret: bool = False) -> FusedMLPConfig:
    """The ``FusedMLPConfig`` of a ``VARIANTS`` tuple or a ``ROLLOUT_VARIANTS`` dict."""
    if isinstance(variant, dict):
        return FusedMLPConfig(**variant, whole_horizon=True, interpret=interpret)
    block_rows, num_warps, dtype, max_chunk, power_of_two = variant
    return FusedMLPConfig(block_rows=block_rows, num_warps=num_warps, dot_dtype=dtype,
                          max_chunk=max_chunk, pad_to_power_of_two=power_of_two,
                          whole_horizon=whole_horizon, interpret=interpret)


def planning_flags(cfg: FusedMLPConfig) -> str:
    """``benchmarks/planning.py`` flags for the kernel variant ``cfg``."""
    return (f"--mlp-kernel pallas --block-rows {cfg.block_rows} --num-warps {cfg.num_warps} "
            f"--dot-dtype {cfg.dot_dtype} --max-chunk {cfg.max_chunk}"
            + (" --pad-to-power-of-two" if cfg.pad_to_power_of_two else "")
            + (" --whole-horizon" if cfg.whole_horizon else "")
            + (" --staged" if cfg.staged else "")
            + (f" --num-stages {cfg.num_stages}" if cfg.num_stages is not None else "")
            + (f" --backend {cfg.backend}" if cfg.backend != "triton" else ""))


def variant_name(cfg: FusedMLPConfig) -> str:
    if cfg.backend == "mosaic":
        return f"mosaic r{cfg.block_rows} {cfg.dot_dtype}"
    kind = ("staged" if cfg.staged else "horizon") if cfg.whole_horizon else "pallas"
    stages = f" s{cfg.num_stages}" if cfg.num_stages is not None else ""
    return (f"{kind} r{cfg.block_rows} w{cfg.num_warps} c{cfg.max_chunk}"
            f"{'p2' if cfg.pad_to_power_of_two else ''}{stages} {cfg.dot_dtype}")


def _network(cfg: dict, smoke: bool):
    k = cfg["ensemble_size"]
    rows = cfg["population"] * cfg["particles"] // k
    sizes = (cfg["obs_dim"] + cfg["act_dim"],) + cfg["hidden"] + (2 * cfg["obs_dim"],)
    if smoke:
        rows, sizes = 40, sizes[:1] + (40, 40) + sizes[-1:]
    layers = init_stacked_mlp(jax.random.PRNGKey(0), k, sizes)
    keys = jax.random.split(jax.random.PRNGKey(1), len(layers))
    layers = [{"w": layer["w"], "b": 0.1 * jax.random.normal(kk, layer["b"].shape)}
              for layer, kk in zip(layers, keys)]
    x = jax.random.normal(jax.random.PRNGKey(2), (k, rows, sizes[0]))
    return layers, x, sizes


def _float64_forward(layers, x) -> np.ndarray:
    h = np.asarray(x, np.float64)
    for i, layer in enumerate(layers):
        h = np.einsum("kmi,kio->kmo", h, np.asarray(layer["w"], np.float64))
        h = h + np.asarray(layer["b"], np.float64)[:, None, :]
        if i < len(layers) - 1:
            h = h / (1.0 + np.exp(-h))
    return h


def _xla_16bit_forward(layers, x, dtype):
    """XLA's products with 16-bit operands and float32 accumulation (for comparison only)."""
    for i, layer in enumerate(layers):
        x = jnp.einsum("kmi,kio->kmo", x.astype(dtype), layer["w"].astype(dtype),
                       preferred_element_type=jnp.float32) + layer["b"][:, None, :]
        if i < len(layers) - 1:
            x = jax.nn.silu(x)
    return x


def step_chain(cfg: dict, fused, steps: int, smoke: bool, repeats: int = 5) -> dict:
    """Microseconds per model step (a chain of ``steps``), compile time and float64 error.
    ``fused``: a ``FusedMLPConfig``, None (XLA's float32 products) or a dtype name (XLA's
    products with operands in that dtype)."""
    layers, x, sizes = _network(cfg, smoke)
    in_dim, out_dim = sizes[0], sizes[-1]
    if isinstance(fused, str):
        params = layers
        forward = lambda p, x: _xla_16bit_forward(p, x, jnp.dtype(fused))
    elif fused is None:
        params = layers
        forward = lambda p, x: apply_stacked_mlp(p, x, jax.nn.silu)
    else:
        params = pack_stacked_mlp(layers, fused)
        forward = lambda p, x: fused_stacked_mlp(p, x, jax.nn.silu, out_dim, fused)

    def chain(p, x0):  # the next input depends on the output, as in a rollout
        body = lambda _, x: x0 + 0.01 * jnp.tanh(forward(p, x)[..., :in_dim])
        return jax.lax.fori_loop(0, steps, body, x0)

    one, many = jit(forward), jit(chain)
    start = time.perf_counter()
    out = jax.block_until_ready(one(params, x))
    jax.block_until_ready(many(params, x))
    compile_s = time.perf_counter() - start
    best = bench._time(many, params, x, repeats=repeats)
    ref = _float64_forward(layers, x)
    error = float(np.abs(np.asarray(out, np.float64) - ref).max() / np.abs(ref).max())
    rows = x.shape[0] * x.shape[1]
    flops = 2 * rows * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    return {"us_per_step": best / steps * 1e6, "compile_s": compile_s, "rel_error": error,
            "tflops": flops * steps / best / 1e12}


def _planner(config: str, fused, smoke: bool):
    cfg = dict(bench.CONFIGS[config])
    if smoke:
        cfg.update(population=16, elites=4, horizon=3, iterations=2, particles=5,
                   hidden=(40, 40))
    mpc, params, obs = bench.build(cfg, "ts_inf", fused_mlp=fused)
    state = mpc.reset(params, jax.random.PRNGKey(0))
    return mpc, params, state, obs, cfg


def planner_runs(config: str, variants: dict, rounds: int, actions: int, smoke: bool,
                 deadline: float = float("inf")) -> list:
    """ms per action for each variant (alternating rounds) and objective agreement with XLA
    (the ``'xla'`` variant, built first). A variant that fails to build is recorded with its
    error; variants not built by ``deadline`` (``time.perf_counter()``) are skipped."""
    built, records = {}, []
    for name, fused in variants.items():
        if name != "xla" and time.perf_counter() > deadline:
            records.append({"part": "planner", "config": config, "variant": name,
                            "skipped": "time budget"})
            continue
        start = time.perf_counter()
        try:
            mpc, params, state, obs, cfg = _planner(config, fused, smoke)
            jax.block_until_ready(mpc.act(params, state, obs, jax.random.PRNGKey(1))[0])
        except Exception as error:  # a variant Triton rejects (registers, shared memory)
            if name == "xla":
                raise
            records.append({"part": "planner", "config": config, "variant": name,
                            "error": f"{type(error).__name__}: {str(error)[:300]}"})
            traceback.print_exc(limit=3)
            continue
        built[name] = (mpc, params, state, obs, time.perf_counter() - start)
    times = {name: [] for name in built}
    for _ in range(rounds):
        for name, (mpc, params, state, obs, _) in built.items():
            for i in range(actions):
                start = time.perf_counter()
                jax.block_until_ready(mpc.act(params, state, obs, jax.random.PRNGKey(2 + i))[0])
                times[name].append(time.perf_counter() - start)
    seqs = jax.random.uniform(jax.random.PRNGKey(9), (64, cfg["horizon"], cfg["act_dim"]),
                              minval=-1.0, maxval=1.0)
    objectives = {
        name: np.asarray(mpc.evaluate(params, state, obs, seqs, jax.random.PRNGKey(3)).objective,
                         np.float64)
        for name, (mpc, params, state, obs, _) in built.items()
    }
    base = objectives["xla"]
    for name, (_, _, _, _, compile_s) in built.items():
        records.append({
            "part": "planner", "config": config, "variant": name,
            "ms_per_action": 1e3 * min(times[name]),
            "ms_median": 1e3 * float(np.median(times[name])),
            "compile_s": compile_s,
            "objective_rel_diff_vs_xla": float(
                np.abs(objectives[name] - base).max() / np.abs(base).max()),
            "same_best_candidate": bool(np.argmax(objectives[name]) == np.argmax(base)),
        })
    return records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_out")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes and the Pallas interpreter (checks the script on a CPU)")
    parser.add_argument("--budget-s", type=float, default=200.0,
                        help="stop trying kernel variants after this many seconds")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--planner-budget-s", type=float, default=200.0,
                        help="stop building planner variants after this many more seconds")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "fused.jsonl"), "a")

    def record(entry: dict) -> None:
        entry = {**entry, "device": str(jax.devices()[0].device_kind), "jax": jax.__version__}
        print(json.dumps(entry), flush=True)
        log.write(json.dumps(entry) + "\n")
        log.flush()

    device = f"{jax.devices()[0].device_kind}, jax {jax.__version__}"
    step_results, planner_records = {}, []

    def write_summary() -> None:  # after each part, so that a cut-off run still reports
        lines = [f"fused kernels, {device}", "", f"{'planner':<50} {'ms/action':>9} "
                 f"{'median':>8} {'obj diff':>9} {'same best':>9} {'compile s':>9}"]
        for r in planner_records:
            if "ms_per_action" not in r:
                lines.append(f"{r['config'] + ' ' + r['variant']:<50} "
                             f"{r.get('error') or r.get('skipped')}"[:140])
                continue
            lines.append(f"{r['config'] + ' ' + r['variant']:<50} {r['ms_per_action']:9.2f} "
                         f"{r['ms_median']:8.2f} {r['objective_rel_diff_vs_xla']:9.2e} "
                         f"{str(r['same_best_candidate']):>9} {r['compile_s']:9.1f}")
        lines += ["", f"{'one step (halfcheetah net)':<36} {'us/step':>9} {'TFLOP/s':>8} "
                  f"{'rel err':>9} {'compile s':>9}"]
        for name, r in step_results.items():
            lines.append(f"{name:<36} {r['us_per_step']:9.1f} {r['tflops']:8.1f} "
                         f"{r['rel_error']:9.2e} {r['compile_s']:9.1f}")
        summary = "\n".join(lines)
        print(summary, flush=True)
        with open(os.path.join(args.out, "fused_summary.txt"), "w") as f:
            f.write(summary + "\n")

    # 1. The planners, the target: XLA, each whole-horizon variant (it removes the per-step
    # launches), then the per-step kernel with float32 and with its least-spilling 16-bit layout.
    planner_variants = {"xla": None}
    rollout_variants = ROLLOUT_VARIANTS
    if args.smoke:  # the first variant of each backend
        rollout_variants = [next(v for v in ROLLOUT_VARIANTS if v.get("backend") == backend)
                            for backend in ("mosaic", None)]
    for variant in rollout_variants + STEP_PLANNER_VARIANTS:
        fused = config_of(variant, interpret=args.smoke)
        planner_variants[variant_name(fused)] = fused
    deadline = time.perf_counter() + args.planner_budget_s
    for config in ("pets_halfcheetah", "pets_cartpole"):
        try:
            for entry in planner_runs(config, planner_variants, rounds=2 if args.smoke else 3,
                                      actions=1 if args.smoke else 4, smoke=args.smoke,
                                      deadline=deadline):
                record(entry)
                planner_records.append(entry)
        except Exception as error:
            record({"part": "planner", "config": config,
                    "error": f"{type(error).__name__}: {str(error)[:300]}"})
            traceback.print_exc(limit=3)
    timed = [r for r in planner_records if r["config"] == "pets_halfcheetah"
             and r["variant"] != "xla" and "ms_per_action" in r]
    if timed:  # the fastest kernel planner, for the profile step of gpu_session.sh
        fastest = min(timed, key=lambda r: r["ms_per_action"])
        with open(os.path.join(args.out, "best_planner_flags.txt"), "w") as f:
            f.write(planning_flags(planner_variants[fastest["variant"]]) + "\n")
    write_summary()

    # 2. One model step of the per-step kernel's variants against XLA's products.
    cfg = bench.CONFIGS["pets_halfcheetah"]
    steps = 3 if args.smoke else args.steps
    start = time.perf_counter()
    step_results["xla"] = step_chain(cfg, None, steps, args.smoke)
    record({"part": "step", "variant": "xla", **step_results["xla"]})
    # XLA's products with 16-bit operands, for comparison (not planned).
    step_results["xla bfloat16 operands"] = step_chain(cfg, "bfloat16", steps, args.smoke)
    record({"part": "step", "variant": "xla bfloat16 operands",
            **step_results["xla bfloat16 operands"]})
    configs = {}
    for variant in [VARIANTS[i] for i in (0, 3, 11)] if args.smoke else VARIANTS:
        fused = config_of(variant, interpret=args.smoke)
        name = variant_name(fused)
        if time.perf_counter() - start > args.budget_s:
            record({"part": "step", "variant": name, "skipped": "time budget"})
            continue
        configs[name] = fused
        try:
            step_results[name] = step_chain(cfg, fused, steps, args.smoke)
            record({"part": "step", "variant": name, **step_results[name]})
        except Exception as error:  # a variant Triton rejects (registers, shared memory)
            record({"part": "step", "variant": name, "error": f"{type(error).__name__}: "
                    f"{str(error)[:300]}"})
            traceback.print_exc(limit=3)
    for dtype in ("float32", "bfloat16", "float16"):
        candidates = [(r["us_per_step"], n) for n, r in step_results.items()
                      if n in configs and configs[n].dot_dtype == dtype]
        if candidates:
            _, name = min(candidates)
            with open(os.path.join(args.out, f"best_{dtype}_flags.txt"), "w") as f:
                f.write(planning_flags(configs[name]) + "\n")
    write_summary()


if __name__ == "__main__":
    main()
