"""The planner with each Pallas kernel against XLA's, on a GPU: seconds per action and agreement.

    python benchmarks/gpu_fused.py --out DIR            # on a machine with a GPU
    python benchmarks/gpu_fused.py --out DIR --smoke    # tiny shapes, Pallas' interpreter (CPU)

For both ``benchmarks/planning.py`` configurations (``pets_halfcheetah`` first), builds the
planner (CEM, ``PLANNERS``: propagation and model) with XLA and with each kernel of
``mbrl_bayes.kernels``: the whole-horizon rollout kernel on Mosaic GPU and on Triton
(``ts_inf``), and the per-step network kernel (Triton, ``ts1``, against XLA's ``ts1``). The
planners are timed in alternating rounds (best and median milliseconds per action), and each
kernel planner's rollout objectives for 64 fixed candidates are compared with XLA's planner of
the same propagation: the largest relative difference and whether both pick the same best
candidate. A planner that fails to build (a pre-Hopper GPU for Mosaic) is recorded with its
error; those not built within ``--budget-s`` are skipped.

One JSON object per planner in ``DIR/fused.jsonl``, a table in ``DIR/fused_summary.txt``, and
the fastest ``ts_inf`` kernel planner of halfcheetah as ``benchmarks/planning.py`` flags in
``DIR/best_planner_flags.txt`` (``gpu_session.sh`` profiles it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import planning as bench  # noqa: E402

from mbrl_bayes.kernels import KernelConfig  # noqa: E402

# (name, propagation, KernelConfig arguments or None for XLA), XLA of each propagation first:
# the kernel planners of a propagation are compared with it.
PLANNERS = [
    ("xla ts_inf", "ts_inf", None),
    ("mosaic ts_inf", "ts_inf", dict(backend="mosaic")),
    ("triton ts_inf", "ts_inf", dict(backend="triton")),
    ("xla ts1", "ts1", None),
    ("triton ts1 (per-step kernel)", "ts1", dict(backend="triton")),
]


def kernel_of(arguments, interpret: bool = False):
    """The ``KernelConfig`` of a ``PLANNERS`` entry (None: XLA)."""
    return None if arguments is None else KernelConfig(**arguments, interpret=interpret)


def _planner(config: str, propagation: str, kernel, smoke: bool):
    cfg = dict(bench.CONFIGS[config])
    if smoke:
        cfg.update(population=16, elites=4, horizon=3, iterations=2, particles=5,
                   hidden=(40, 40))
    mpc, params, obs = bench.build(cfg, propagation, kernel=kernel)
    state = mpc.reset(params, jax.random.PRNGKey(0))
    return mpc, params, state, obs, cfg


def planner_runs(config: str, rounds: int, actions: int, smoke: bool,
                 deadline: float = float("inf")) -> list:
    """ms per action of each of ``PLANNERS`` (alternating rounds) and each kernel planner's
    objective agreement with XLA's planner of its propagation."""
    built, records = {}, []
    for name, propagation, arguments in PLANNERS:
        if arguments is not None and time.perf_counter() > deadline:
            records.append({"config": config, "planner": name, "skipped": "time budget"})
            continue
        start = time.perf_counter()
        try:
            mpc, params, state, obs, cfg = _planner(config, propagation,
                                                    kernel_of(arguments, smoke), smoke)
            jax.block_until_ready(mpc.act(params, state, obs, jax.random.PRNGKey(1))[0])
        except Exception as error:  # e.g. Mosaic GPU on a pre-Hopper GPU
            if arguments is None:
                raise
            records.append({"config": config, "planner": name,
                            "error": f"{type(error).__name__}: {str(error)[:300]}"})
            traceback.print_exc(limit=3)
            continue
        built[name] = (mpc, params, state, obs, propagation, time.perf_counter() - start)
    times = {name: [] for name in built}
    for _ in range(rounds):
        for name, (mpc, params, state, obs, _, _) in built.items():
            for i in range(actions):
                start = time.perf_counter()
                jax.block_until_ready(mpc.act(params, state, obs, jax.random.PRNGKey(2 + i))[0])
                times[name].append(time.perf_counter() - start)
    seqs = jax.random.uniform(jax.random.PRNGKey(9), (64, cfg["horizon"], cfg["act_dim"]),
                              minval=-1.0, maxval=1.0)
    objectives = {
        name: np.asarray(mpc.evaluate(params, state, obs, seqs, jax.random.PRNGKey(3)).objective,
                         np.float64)
        for name, (mpc, params, state, obs, _, _) in built.items()
    }
    for name, (_, _, _, _, propagation, compile_s) in built.items():
        base = objectives[f"xla {propagation}"]
        records.append({
            "config": config, "planner": name, "propagation": propagation,
            "ms_per_action": 1e3 * min(times[name]),
            "ms_median": 1e3 * float(np.median(times[name])),
            "compile_s": compile_s,
            "objective_rel_diff_vs_xla": float(
                np.abs(objectives[name] - base).max() / np.abs(base).max()),
            "same_best_candidate": bool(np.argmax(objectives[name]) == np.argmax(base)),
        })
    return records


def summary(records: list, device: str) -> str:
    lines = [f"planning kernels against XLA, {device}", "",
             f"{'planner':<48} {'ms/action':>9} {'median':>8} {'obj diff':>9} {'same best':>9} "
             f"{'compile s':>9}"]
    for r in records:
        label = f"{r['config']} {r.get('planner', '')}"
        if "ms_per_action" not in r:
            lines.append(f"{label:<48} {r.get('error') or r.get('skipped')}"[:140])
            continue
        lines.append(f"{label:<48} {r['ms_per_action']:9.2f} {r['ms_median']:8.2f} "
                     f"{r['objective_rel_diff_vs_xla']:9.2e} {str(r['same_best_candidate']):>9} "
                     f"{r['compile_s']:9.1f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_out")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes and Pallas' interpreter (checks the script on a CPU)")
    parser.add_argument("--budget-s", type=float, default=200.0,
                        help="stop building kernel planners after this many seconds")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = f"{jax.devices()[0].device_kind}, jax {jax.__version__}"
    records = []
    deadline = time.perf_counter() + args.budget_s
    with open(os.path.join(args.out, "fused.jsonl"), "a") as log:
        for config in ("pets_halfcheetah", "pets_cartpole"):
            try:
                entries = planner_runs(config, rounds=2 if args.smoke else 3,
                                       actions=1 if args.smoke else 4, smoke=args.smoke,
                                       deadline=deadline)
            except Exception as error:
                entries = [{"config": config, "error": f"{type(error).__name__}: {error}"[:300]}]
                traceback.print_exc(limit=3)
            for entry in entries:
                entry = {**entry, "device": device}
                print(json.dumps(entry), flush=True)
                log.write(json.dumps(entry) + "\n")
                records.append(entry)
    timed = [r for r in records if r["config"] == "pets_halfcheetah" and "ms_per_action" in r
             and r.get("propagation") == "ts_inf" and not r["planner"].startswith("xla")]
    if timed:  # the fastest kernel planner, for the profile step of gpu_session.sh
        fastest = min(timed, key=lambda r: r["ms_per_action"])
        arguments = next(a for n, _, a in PLANNERS if n == fastest["planner"])
        with open(os.path.join(args.out, "best_planner_flags.txt"), "w") as f:
            f.write(bench.kernel_flags(kernel_of(arguments)) + "\n")
    text = summary(records, device)
    print(text, flush=True)
    with open(os.path.join(args.out, "fused_summary.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
