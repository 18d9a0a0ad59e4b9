"""Where a GPU action's time goes: the model's batched matmul under XLA options and precisions.

    python benchmarks/gpu_variants.py --out DIR       # on a machine with a GPU

1. The hidden-layer product of a PETS ensemble, ``[E, rows, 200] x [E, 200, 200]`` (E = 5, rows =
   2000, as in pets_halfcheetah), as a chain of 150 products in one jitted call, for each
   matmul precision (``default``, ``tensorfloat32``, ``highest``) with XLA's Triton GEMM fusion on
   and off (``xla_gpu_enable_triton_gemm``, passed per computation as ``compiler_options``):
   TFLOP/s, and the relative error of one product against float64 (tells TF32 from float32).
2. ``benchmarks/planning.py`` for both configurations with the Triton GEMM fusion on and off
   (the toolkit's ``mbrl_bayes.compile.compiler_options`` replaced for the run), alternately.

Results go to ``DIR/variants.jsonl``; a table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import planning as bench  # noqa: E402

import mbrl_bayes.compile as compile_  # noqa: E402

PRECISIONS = ("default", "tensorfloat32", "highest")


def chain_gemm(precision: str, options: dict, e=5, rows=2000, h=200, steps=150) -> dict:
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (e, rows, h), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(1), (e, h, h), jnp.float32) / np.sqrt(h)

    def chain(x, w):
        body = lambda _, y: jnp.tanh(jnp.einsum("kmi,kio->kmo", y, w, precision=precision))
        return jax.lax.fori_loop(0, steps, body, x)

    one = jax.jit(lambda x, w: jnp.einsum("kmi,kio->kmo", x, w, precision=precision),
                  compiler_options=options or None)
    ref = np.einsum("kmi,kio->kmo", np.asarray(x, np.float64), np.asarray(w, np.float64))
    err = np.linalg.norm(np.asarray(one(x, w), np.float64) - ref) / np.linalg.norm(ref)
    fn = jax.jit(chain, compiler_options=options or None)
    jax.block_until_ready(fn(x, w))
    times = []
    for _ in range(7):
        start = time.perf_counter()
        jax.block_until_ready(fn(x, w))
        times.append(time.perf_counter() - start)
    t = float(np.median(times))
    return {"what": "gemm_chain", "precision": precision, "options": options,
            "us_per_gemm": 1e6 * t / steps, "tflops": 2.0 * e * rows * h * h * steps / t / 1e12,
            "rel_err": float(err)}


def planning_run(config: str, precision: str, options: dict, actions: int) -> dict:
    compile_.compiler_options = lambda backend=None: dict(options)
    argv = ["--config", config, "--actions", str(actions)]
    if precision != "default":
        argv += ["--matmul-precision", precision]
    result = bench.main(argv)
    result.update(what="planning", options=options)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="planning runs per switch")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    original = compile_.compiler_options
    rows = []
    path = os.path.join(args.out, "variants.jsonl")

    def record(fn, *a):
        try:
            r = fn(*a)
        except Exception as err:
            r = {"what": fn.__name__, "args": repr(a), "error": f"{type(err).__name__}: {err}"}
        rows.append(r)
        with open(path, "a") as f:
            f.write(json.dumps(r, default=str) + "\n")
        print(json.dumps(r, default=str)[:300], flush=True)
        return r

    switches = [{}, {"xla_gpu_enable_triton_gemm": False}]
    for options in switches:
        for precision in args.precisions:
            record(chain_gemm, precision, options)
    for config in ("pets_halfcheetah", "pets_cartpole"):
        for _ in range(args.repeats):  # alternately, so drifts hit both switches alike
            for options in switches:
                record(planning_run, config, "default", options, args.actions)
    compile_.compiler_options = original

    print("=" * 30 + " summary")
    for r in rows:
        if "error" in r:
            print(f"{r['what']} {r.get('args')}: {r['error']}")
        elif r["what"] == "gemm_chain":
            print(f"gemm [5,2000,200]x[5,200,200] {r['precision']:>13} {str(r['options']):>38}: "
                  f"{r['us_per_gemm']:6.1f} us, {r['tflops']:6.1f} TFLOP/s, rel err "
                  f"{r['rel_err']:.1e}")
        else:
            print(f"{r['config']:<17} {r['matmul_precision']:>13} {str(r['options']):>38}: "
                  f"{1e3 * r['seconds_per_action']:6.2f} ms/action (median "
                  f"{1e3 * r['seconds_median']:.2f}), compile {r['compile_seconds']:.1f} s, "
                  f"unroll {r['unroll']}")


if __name__ == "__main__":
    main()
