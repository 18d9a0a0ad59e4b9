"""Seconds per MPC action with a PETS ensemble, against the machine's matrix-multiply peak.

    python benchmarks/planning.py --config pets_cartpole
    python benchmarks/planning.py --config pets_halfcheetah

Builds ``mbrl_bayes.models.ProbabilisticEnsemble`` (5 members, 4 x 200 SiLU, probabilistic), plans
with ``mbrl_bayes.planning.MPC`` + ``CEM`` (TS-inf by default), compiles once, then times several
actions (``block_until_ready``). Model FLOPs are counted analytically: ``2 * in * out`` per dense
layer per row, rows = population * particles, times horizon * iterations. The peak is measured
here: a jitted chain of batched matmuls shaped like the model's hidden layer ([E, rows / E, 200] x
[E, 200, 200]), timed alternately with the actions, and a large square matmul (2048 on CPUs,
8192 on GPUs), each compiled both with the toolkit's options and with XLA's default dot kernels
where those differ (the faster counts). ``floor_seconds`` is the model FLOPs at the batched
peak; ``ratio_to_floor`` = seconds_per_action / floor_seconds. Float32 matmuls run at JAX's
default precision (TF32 on NVIDIA GPUs; ``--matmul-precision highest`` for full float32).
``--unroll`` sets how far the rollout's horizon loop is unrolled (``0``: all of it; default 1,
the MPC's default). ``--kernel triton`` or ``--kernel mosaic`` (GPUs only) plans through the
Pallas kernels of ``mbrl_bayes.kernels`` (a ``KernelEnsemble``; ``--block-rows`` and
``--dot-dtype`` set its ``KernelConfig``). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbrl_bayes.compile import CPU_DOTS_WITHOUT_YNNPACK, compiler_options, jit  # noqa: E402
from mbrl_bayes.models import ProbabilisticEnsemble  # noqa: E402
from mbrl_bayes.planning import CEM, MPC  # noqa: E402

CONFIGS = {
    "pets_cartpole": dict(obs_dim=4, act_dim=1, ensemble_size=5, hidden=(200,) * 4,
                          population=350, elites=35, iterations=5, horizon=15, particles=20),
    "pets_halfcheetah": dict(obs_dim=18, act_dim=6, ensemble_size=5, hidden=(200,) * 4,
                             population=500, elites=50, iterations=5, horizon=30, particles=20),
}


def model_flops_per_action(cfg: dict) -> float:
    """Dense-layer FLOPs of all model evaluations behind one action."""
    sizes = (cfg["obs_dim"] + cfg["act_dim"],) + cfg["hidden"] + (2 * cfg["obs_dim"],)
    per_row = sum(2 * i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))
    rows = cfg["population"] * cfg["particles"]
    return float(per_row * rows * cfg["horizon"] * cfg["iterations"])


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def _square_size() -> int:
    return 2048 if jax.default_backend() == "cpu" else 8192


def measure_peak(cfg: dict, repeats: int = 10, square: bool = True,
                 square_repeats: int = 5) -> dict:
    """Matrix-multiply GFLOP/s of this machine.

    ``batched_gflops``: a jitted chain of batched matmuls shaped like the model's hidden layer
    ([E, rows / E, h] x [E, h, h], rows = population * particles), as many as one action has
    hidden layers (3 * horizon * iterations for 4 x 200 nets), each feeding the next as in a
    rollout; it runs about as long as an action, so load from other processes hits both alike.
    With ``square``, also ``square_gflops`` of one n x n matmul (n = 2048 on CPUs, 8192 else).
    Each is timed with the toolkit's compiler options and, where those replace XLA:CPU's
    default dot kernels, with the defaults too; the faster counts (``*_by_dots``: both).
    """
    e, h = cfg["ensemble_size"], cfg["hidden"][0]
    rows = cfg["population"] * cfg["particles"] // e
    steps = (len(cfg["hidden"]) - 1) * cfg["horizon"] * cfg["iterations"]
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (e, rows, h), jnp.float32)
    w = jax.random.normal(key, (e, h, h), jnp.float32) / np.sqrt(h)
    flops = 2.0 * e * rows * h * h * steps
    by_dots = {name: flops / _time(chain, x, w, steps, repeats=repeats) / 1e9
               for name, chain in _with_each_dots(_matmul_chain, static_argnums=2).items()}
    out = {"batched_gflops": max(by_dots.values()), "batched_gflops_by_dots": by_dots}
    if square:
        n = _square_size()
        a = jax.random.normal(key, (n, n), jnp.float32)
        by_dots = {name: 2.0 * n**3 / _time(matmul, a, a, repeats=square_repeats) / 1e9
                   for name, matmul in _with_each_dots(_matmul).items()}
        out.update(square_gflops=max(by_dots.values()), square_gflops_by_dots=by_dots)
    return out


def _matmul_chain(x: jax.Array, w: jax.Array, steps: int) -> jax.Array:
    body = lambda _, y: jnp.einsum("kmi,kio->kmo", y, w)
    return jax.lax.fori_loop(0, steps, body, x)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return a @ b


@functools.lru_cache(maxsize=None)
def _with_each_dots(fun, **jit_kwargs) -> dict:
    """``fun`` jitted with the toolkit's options (``mbrl_bayes.compile``) and, where those
    replace XLA:CPU's default dot kernels, with the defaults too."""
    compiled = {"toolkit": jit(fun, **jit_kwargs)}
    options = compiler_options()
    if any(k in options for k in CPU_DOTS_WITHOUT_YNNPACK):
        default = {k: v for k, v in options.items() if k not in CPU_DOTS_WITHOUT_YNNPACK}
        compiled["xla_default_dots"] = jax.jit(fun, compiler_options=default or None,
                                               **jit_kwargs)
    return compiled


def reward_fn(obs, act, next_obs):
    """A cheap quadratic stand-in for the task reward (its cost is negligible here)."""
    return -jnp.sum(next_obs**2, axis=-1) - 0.01 * jnp.sum(act**2, axis=-1)


def build(cfg: dict, propagation: str, unroll=1, devices=None, kernel=None):
    """The MPC, params and a start state of ``cfg``; ``kernel``: a
    ``mbrl_bayes.kernels.KernelConfig`` (a ``KernelEnsemble``) or None (XLA)."""
    kwargs = dict(obs_dim=cfg["obs_dim"], act_dim=cfg["act_dim"], hidden_sizes=cfg["hidden"],
                  ensemble_size=cfg["ensemble_size"])
    if kernel is None:
        model = ProbabilisticEnsemble(**kwargs)
    else:
        from mbrl_bayes.kernels import KernelEnsemble

        model = KernelEnsemble(**kwargs, kernel=kernel)
    rng = np.random.default_rng(0)
    n = 1000
    data = {
        "obs": rng.normal(size=(n, cfg["obs_dim"])).astype(np.float32),
        "act": rng.uniform(-1, 1, size=(n, cfg["act_dim"])).astype(np.float32),
    }
    data["next_obs"] = (data["obs"] + 0.1 * rng.normal(size=data["obs"].shape)).astype(np.float32)
    params = model.init(jax.random.PRNGKey(0), data["obs"], data["act"])
    params = model.fit_stats(params, data)
    optimizer = CEM(population_size=cfg["population"], num_elites=cfg["elites"],
                    num_iterations=cfg["iterations"])
    mpc = MPC(model, optimizer, reward_fn, None, horizon=cfg["horizon"],
              num_particles=cfg["particles"], propagation=propagation,
              action_low=-1.0, action_high=1.0, unroll=unroll, devices=devices)
    return mpc, params, data["obs"][0]


def profile_action(mpc, params, state, obs, top: int = 40) -> None:
    """Traces one action with ``jax.profiler`` and prints the XLA thunks taking the most time."""
    import collections
    import glob
    import gzip
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder, create_perfetto_trace=True)
        jax.block_until_ready(mpc.act(params, state, obs, jax.random.PRNGKey(123)))
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{folder}/**/perfetto_trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))["traceEvents"]
    total = collections.Counter()
    count = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") == "X" and not name.startswith(("$", "ThunkExecutor", "Pjit")):
            total[name] += event["dur"] / 1e3
            count[name] += 1
    busy = sum(total.values())
    print(f"{'thunk':<40} {'ms':>8} {'share':>6} {'calls':>6}")
    for name, ms in total.most_common(top):
        print(f"{name[:40]:<40} {ms:8.1f} {ms / busy:6.1%} {count[name]:6d}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="pets_cartpole")
    parser.add_argument("--actions", type=int, default=8, help="timed actions")
    parser.add_argument("--propagation", default="ts_inf")
    parser.add_argument("--unroll", type=int, default=1,
                        help="horizon steps per loop trip (0: the whole horizon; default 1)")
    parser.add_argument("--matmul-precision", default=None,
                        choices=["default", "high", "highest", "tensorfloat32", "float32"],
                        help="jax.default_matmul_precision for the actions and the peak")
    parser.add_argument("--profile", action="store_true",
                        help="also print where one action's time goes (XLA thunks)")
    parser.add_argument("--kernel", choices=["triton", "mosaic"], default=None,
                        help="plan through the Pallas kernels of mbrl_bayes.kernels with this "
                             "backend (GPUs; default: XLA)")
    parser.add_argument("--block-rows", type=int, default=None,
                        help="kernel: particles per program (default 64 Triton, 128 Mosaic)")
    parser.add_argument("--dot-dtype", default="bfloat16",
                        choices=["float32", "bfloat16", "float16"],
                        help="kernel: operand dtype of the products")
    return parser


def kernel_config(args: argparse.Namespace):
    """The ``KernelConfig`` that the kernel flags in ``args`` describe (None: XLA)."""
    if args.kernel is None:
        return None
    from mbrl_bayes.kernels import KernelConfig

    return KernelConfig(backend=args.kernel, block_rows=args.block_rows,
                        dot_dtype=args.dot_dtype)


def kernel_flags(config) -> str:
    """``benchmarks/planning.py`` flags for the ``KernelConfig`` ``config``."""
    return (f"--kernel {config.backend} --block-rows {config.block_rows} "
            f"--dot-dtype {config.dot_dtype}")


def main(argv=None) -> dict:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.unroll < 0:
        parser.error(f"--unroll must be >= 0, got {args.unroll}")
    args.kernel_config = None
    if args.kernel is not None:
        if jax.default_backend() != "gpu":
            parser.error("--kernel needs a GPU (elsewhere the kernels only run in Pallas' slow "
                         "interpreter)")
        try:
            args.kernel_config = kernel_config(args)
        except ValueError as error:
            parser.error(str(error))
    if args.matmul_precision is None:
        return _run(args)
    with jax.default_matmul_precision(args.matmul_precision):
        return _run(args)


def _run(args) -> dict:
    cfg = CONFIGS[args.config]
    load_before = os.getloadavg()[0]
    unroll = True if args.unroll == 0 else args.unroll
    mpc, params, obs = build(cfg, args.propagation, unroll, kernel=args.kernel_config)
    state = mpc.reset(params, jax.random.PRNGKey(0))
    start = time.perf_counter()
    action, state = mpc.act(params, state, obs, jax.random.PRNGKey(1))
    jax.block_until_ready(action)
    compile_s = time.perf_counter() - start

    # Actions and the matmul peak are timed alternately, so that load from other processes on
    # a shared machine hits both alike; the best of each is reported.
    times, peaks = [], []
    for i in range(args.actions):
        start = time.perf_counter()
        action, state = mpc.act(params, state, obs, jax.random.PRNGKey(2 + i))
        jax.block_until_ready(action)
        times.append(time.perf_counter() - start)
        peaks.append(measure_peak(cfg, repeats=1, square=False)["batched_gflops_by_dots"])
    peak_by_dots = {name: max(p[name] for p in peaks) for name in peaks[0]}
    peak = max(peak_by_dots.values())
    square_peak = measure_peak(cfg, repeats=1, square_repeats=5)
    square = square_peak["square_gflops"]
    seconds = float(np.min(times))
    flops = model_flops_per_action(cfg)
    floor = flops / peak / 1e9
    dev = jax.devices()[0]
    result = {
        "config": args.config,
        "propagation": args.propagation,
        "unroll": mpc.unroll,
        "matmul_precision": args.matmul_precision or "default",
        "kernel": "xla" if args.kernel_config is None else str(args.kernel_config),
        "device": f"{dev.platform}:{dev.device_kind} x{jax.device_count()}"
                  f" ({platform.machine()}, {os.cpu_count()} cpus)",
        "seconds_per_action": seconds,
        "seconds_median": float(np.median(times)),
        "compile_seconds": compile_s,
        "gflop_per_action": flops / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
        "peak_gflops": peak,
        "peak_gflops_by_dots": peak_by_dots,
        "square_matmul_gflops": square,
        "square_matmul_gflops_by_dots": square_peak["square_gflops_by_dots"],
        "floor_seconds": floor,
        "ratio_to_floor": seconds / floor,
        "ratio_to_square_matmul_floor": seconds / (flops / square / 1e9),
        "load_average": [load_before, os.getloadavg()[0]],
        "jax": jax.__version__,
    }
    if args.profile:
        profile_action(mpc, params, state, obs)
    for key, value in result.items():
        print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
