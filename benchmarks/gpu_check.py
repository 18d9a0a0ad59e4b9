"""The planner on an accelerator in one call: correctness first, then seconds per action.

    python benchmarks/gpu_check.py --out DIR           # on a machine with a GPU

1. ``mbrl_bayes.sampling.uniform`` is bit-identical to ``jax.random.uniform`` on the device, and
   ``sampling.normal`` is within ``lax.erf_inv``'s error of ``jax.random.normal`` (max relative
   difference printed).
2. Rollout objectives of the ``pets_halfcheetah`` model (64 candidates, 20 particles, horizon 30)
   on the device at the default precision (TF32 matmuls on NVIDIA) and at ``highest``, against
   the CPU in float32 at ``highest``: relative error ``|dev - cpu| / |cpu|`` (max over candidates).
   Also the one-step predicted mean delta of 5 x 256 rows (more sensitive to TF32 than returns).
3. The same objectives with the horizon loop rolled (``unroll=1``) and unrolled: equal to
   rounding.
4. ``benchmarks/planning.py`` for each configuration with ``--unroll 1`` (the default) and
   ``--unroll 0`` (the whole horizon), and halfcheetah at ``highest`` precision; one JSON object
   per line in ``DIR/planning.jsonl``.

The last lines printed are a summary table (also in ``DIR/summary.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import planning as bench  # noqa: E402

from mbrl_bayes import sampling  # noqa: E402


def check_sampling(lines: list) -> None:
    low = np.nextafter(np.float32(-1.0), np.float32(0.0))
    for shape in [(7,), (5, 2000, 18), (3, 1001)]:
        key = jax.random.PRNGKey(shape[-1])
        same = bool(np.array_equal(np.asarray(sampling.uniform(key, shape)),
                                   np.asarray(jax.random.uniform(key, shape, minval=low))))
        ours = np.asarray(sampling.normal(key, shape))
        ref = np.asarray(jax.random.normal(key, shape))
        rel = float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-6)))
        lines.append(f"sampling.uniform == jax.random.uniform {shape}: {same}; "
                     f"normal max rel diff to jax.random.normal {rel:.1e}")


def _objectives(cfg, device, precision, unroll, seqs, key):
    with jax.default_device(device), jax.default_matmul_precision(precision):
        mpc, params, obs = bench.build(cfg, "ts_inf", unroll, devices=[device])
        params = jax.device_put(params, device)
        state = mpc.reset(params, jax.random.PRNGKey(0))
        out = mpc.evaluate(params, state, jax.device_put(obs, device),
                           jax.device_put(seqs, device), key)
        return np.asarray(out.objective, np.float64)


def _one_step_delta(cfg, device, precision, obs, act):
    with jax.default_device(device), jax.default_matmul_precision(precision):
        mpc, params, _ = bench.build(cfg, "ts_inf")
        params = jax.device_put(params, device)
        model = mpc.model
        fns = model.sample_functions(params, jax.random.PRNGKey(0), model.num_functions)
        step = jax.jit(lambda p, f, o, a: model.transition(p, f, jax.random.PRNGKey(1), o, a,
                                                           sample_noise=False).next_obs - o)
        return np.asarray(step(params, fns, jax.device_put(obs, device),
                               jax.device_put(act, device)), np.float64)


def check_rollouts(lines: list) -> None:
    cfg = bench.CONFIGS["pets_halfcheetah"]
    seqs = np.asarray(jax.random.uniform(jax.random.PRNGKey(5), (64, cfg["horizon"],
                                                                 cfg["act_dim"]), minval=-1.0))
    key = jax.random.PRNGKey(6)
    cpu, dev = jax.devices("cpu")[0], jax.devices()[0]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 256, cfg["obs_dim"])).astype(np.float32)
    act = rng.uniform(-1, 1, size=(5, 256, cfg["act_dim"])).astype(np.float32)
    ref_delta = _one_step_delta(cfg, cpu, "highest", obs, act)
    for precision in ("default", "highest"):
        got = _one_step_delta(cfg, dev, precision, obs, act)
        err = np.linalg.norm(got - ref_delta) / np.linalg.norm(ref_delta)
        lines.append(f"one-step predicted delta on {dev.platform} precision={precision}: "
                     f"rel err vs CPU float32 {err:.2e}")
    ref = _objectives(cfg, cpu, "highest", 1, seqs, key)
    scale = np.abs(ref).max()
    for precision in ("default", "highest"):
        for unroll in (1, True):
            got = _objectives(cfg, dev, precision, unroll, seqs, key)
            err = np.abs(got - ref).max() / scale
            top_ref, top_got = set(np.argsort(-ref)[:6]), set(np.argsort(-got)[:6])
            lines.append(
                f"rollout objective on {dev.platform} precision={precision} unroll={unroll}: "
                f"max rel err vs CPU float32 {err:.2e}; finite {np.isfinite(got).all()}; "
                f"top-6 candidates shared {len(top_ref & top_got)}/6"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--actions", type=int, default=10)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    lines = [f"jax {jax.__version__}; devices {jax.devices()}"]
    start = time.perf_counter()
    for check in (check_sampling, check_rollouts):
        try:
            check(lines)
        except Exception as err:  # keep going: the timings are still worth having
            lines.append(f"{check.__name__} failed: {type(err).__name__}: {err}")
        print("\n".join(lines[-6:]), flush=True)
    lines.append(f"checks took {time.perf_counter() - start:.0f} s")

    runs = [
        ("pets_halfcheetah", "1", None),
        ("pets_cartpole", "1", None),
        ("pets_halfcheetah", "0", None),
        ("pets_cartpole", "0", None),
        ("pets_halfcheetah", "1", "highest"),
    ]
    rows = []
    with open(os.path.join(args.out, "planning.jsonl"), "a") as f:
        for config, unroll, precision in runs:
            argv_ = ["--config", config, "--unroll", unroll, "--actions", str(args.actions)]
            if precision:
                argv_ += ["--matmul-precision", precision]
            try:
                result = bench.main(argv_)
            except Exception as err:
                lines.append(f"planning {argv_} failed: {type(err).__name__}: {err}")
                continue
            f.write(json.dumps(result) + "\n")
            f.flush()
            rows.append(result)

    lines.append(f"{'config':<17} {'unroll':>6} {'prec':>8} {'ms/act':>8} {'median':>8} "
                 f"{'compile':>7} {'TFLOP/s':>8} {'sq.peak':>8} {'/sq.floor':>9} {'/batched':>8}")
    for r in rows:
        lines.append(
            f"{r['config']:<17} {str(r['unroll']):>6} {r['matmul_precision']:>8} "
            f"{1e3 * r['seconds_per_action']:8.2f} {1e3 * r['seconds_median']:8.2f} "
            f"{r['compile_seconds']:7.1f} {r['achieved_gflops'] / 1e3:8.1f} "
            f"{r['square_matmul_gflops'] / 1e3:8.1f} {r['ratio_to_square_matmul_floor']:9.2f} "
            f"{r['ratio_to_floor']:8.2f}"
        )
    text = "\n".join(lines)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print("=" * 30 + " summary\n" + text)


if __name__ == "__main__":
    main()
