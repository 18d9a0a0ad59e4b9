"""Registers, spills and shared memory of the Triton kernels, compiled for a GPU without one.

    pip install -e '.[triton]'   # Triton's compiler, ptxas, nvdisasm: any x86-64 Linux machine
    python benchmarks/triton_resources.py --out docs/results/triton_resources [--arch 90]

For each Triton kernel of ``mbrl_bayes.kernels`` (``KERNELS``: the per-step network kernel of
``fused_mlp`` and the whole-horizon rollout kernel of ``fused_rollout``, at the
``pets_halfcheetah`` sizes, for the ``KernelConfig`` choices a user has), Pallas lowers the kernel
to Triton IR on this machine (the lowering ``jax.export`` runs for CUDA); the ``triton`` package
compiles that IR for the chosen architecture (``--arch 90``: H100/H200, ``sm_90a``) and its
bundled ``ptxas -v`` reports what each thread needs. Per variant: registers per thread, the bytes
spilled to local memory, the spill instructions in the machine code (``nvdisasm``: stores
``STL`` / loads ``LDL``; a few dozen are loop-invariant values reloaded from L1, a thousand mean
the accumulators do not fit), shared memory per program (over 227 KB a kernel cannot launch on
sm_90), whether the products became Hopper ``wgmma`` instructions and whether ptxas had to
serialize them for lack of registers, and the occupancy that follows on an H100/H200 (132 SMs):
programs in the grid, programs resident per SM, and the waves the grid takes.

These are estimates of what XLA builds: jaxlib carries its own Triton (OpenXLA's), not the
``triton`` package's release, with the same passes up to version drift; only
``benchmarks/gpu_fused.py`` on a GPU measures speed. One JSON object per kernel in
``DIR/resources.jsonl``, a table in ``DIR/resources.txt``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # as XLA compiles Triton kernels

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# (kernel, KernelConfig arguments): the defaults first, then the other block size and dtypes.
KERNELS = [
    ("rollout", {}), ("rollout", dict(block_rows=128)), ("rollout", dict(dot_dtype="float32")),
    ("mlp", {}), ("mlp", dict(block_rows=128)), ("mlp", dict(dot_dtype="float32")),
]
SHARED_LIMIT_KB = 227  # per block on sm_90 (opt-in maximum)
# An H100/H200 (sm_90): streaming multiprocessors and per-SM limits.
NUM_SMS, SM_REGISTERS, SM_SHARED_KB, SM_WARPS, SM_BLOCKS = 132, 65536, 228, 64, 32


def occupancy(registers: int, num_warps: int, shared_kb: float, programs: int) -> dict:
    """Programs resident per SM (the tightest of registers, shared memory, warps) and the waves
    ``programs`` take on an H100/H200. Registers are allocated per warp in units of 256 (8 per
    thread); each block also reserves 1 KB of shared memory."""
    per_warp = -(-registers * 32 // 256) * 256
    by_registers = SM_REGISTERS // (per_warp * num_warps)
    by_shared = int(SM_SHARED_KB // (shared_kb + 1.0))
    per_sm = min(by_registers, by_shared, SM_WARPS // num_warps, SM_BLOCKS)
    waves = -(-programs // (NUM_SMS * per_sm)) if per_sm else None
    return {"programs": programs, "programs_per_sm": per_sm, "waves": waves}


def variant_name(fused) -> str:
    """``r<block_rows> w<warps> <dot dtype>`` of a ``KernelConfig``."""
    return f"r{fused.block_rows} w{fused.num_warps} {fused.dot_dtype}"


def _lowered_triton_ir(kernel: str, fused) -> str:
    """The Triton IR that Pallas emits for ``kernel`` ('mlp' or 'rollout') at halfcheetah size
    with the ``KernelConfig`` ``fused``."""
    import jax
    import jax.numpy as jnp
    import planning as bench
    from jax._src.pallas.triton import pallas_call_registration as registration

    from mbrl_bayes.kernels.fused_mlp import fused_stacked_mlp, pack_stacked_mlp
    from mbrl_bayes.kernels.fused_rollout import fused_rollout, pack_rollout
    from mbrl_bayes.models.ensemble import init_stacked_mlp
    from mbrl_bayes.models.normalization import Normalizer

    captured = []
    lower = registration.lowering.lower_jaxpr_to_triton_module

    def capture(*args, **kwargs):
        result = lower(*args, **kwargs)
        captured.append(result.module.operation.get_asm(enable_debug_info=False))
        return result

    cfg = bench.CONFIGS["pets_halfcheetah"]
    d, a, k = cfg["obs_dim"], cfg["act_dim"], cfg["ensemble_size"]
    m, horizon = _rows_per_draw(), cfg["horizon"]
    layers = init_stacked_mlp(jax.random.PRNGKey(0), k, (d + a,) + cfg["hidden"] + (2 * d,))
    if kernel == "rollout":
        stats = {"input": Normalizer.identity(d + a), "target": Normalizer.identity(d)}
        bounds = {"max": jnp.zeros((d,)), "min": jnp.zeros((d,))}
        run = functools.partial(fused_rollout, activation=jax.nn.silu, config=fused)
        args = (pack_rollout(layers, stats, bounds, d, fused), jnp.zeros((k, m, d)),
                jnp.zeros((k, horizon, m, a)), jnp.zeros((k, horizon, m, d)))
    else:
        run = functools.partial(fused_stacked_mlp, activation=jax.nn.silu, out_size=2 * d,
                                config=fused)
        args = (pack_stacked_mlp(layers, fused), jnp.zeros((k, m, d + a)))
    registration.lowering.lower_jaxpr_to_triton_module = capture
    try:
        jax.export.export(
            jax.jit(run), platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
        )(*args)
    finally:
        registration.lowering.lower_jaxpr_to_triton_module = lower
    if len(captured) != 1:
        raise RuntimeError(f"expected one Triton module from the lowering, got {len(captured)} "
                           f"(has jax's Pallas lowering changed?)")
    return captured[0]


def _rows_per_draw() -> int:
    """Particle rows per function draw when planning pets_halfcheetah (2000)."""
    import planning as bench

    cfg = bench.CONFIGS["pets_halfcheetah"]
    return cfg["population"] * cfg["particles"] // cfg["ensemble_size"]


def _programs(fused) -> int:
    """The kernel's grid size at the pets_halfcheetah planning size: draws x row blocks."""
    import planning as bench

    return bench.CONFIGS["pets_halfcheetah"]["ensemble_size"] * -(-_rows_per_draw()
                                                                  // fused.block_rows)


def parse_ptxas(log: str) -> dict:
    """Registers and spill bytes from ``ptxas -v`` output (one entry function)."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if regs is None or spills is None:
        raise ValueError(f"no register/spill report in the ptxas output: {log[-300:]!r}")
    return {"registers": int(regs.group(1)), "spill_store_bytes": int(spills.group(1)),
            "spill_load_bytes": int(spills.group(2)),
            "wgmma_serialized": "wgmma.mma_async instructions are serialized" in log}


def count_local_memory(sass: str) -> dict:
    """Spill instructions in the machine code (``nvdisasm`` output): local-memory stores and
    loads. Where they sit matters more than the bytes: a few stores of loop-invariant values
    in the prologue, reloaded from L1, cost little; hundreds inside the layers mean the
    accumulators themselves do not fit."""
    return {"local_store_instructions": len(re.findall(r"\bSTL(?:\.\w+)*\s", sass)),
            "local_load_instructions": len(re.findall(r"\bLDL(?:\.\w+)*\s", sass))}


def measure(kernel: str, arguments: dict, arch: int) -> dict:
    """Compiles one kernel with ``KernelConfig(**arguments)``; returns its resources (or the
    error)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas

    from mbrl_bayes.kernels import KernelConfig
    from mbrl_bayes.kernels.fused_rollout import _NUM_STAGES

    fused = KernelConfig(**arguments)
    stages = _NUM_STAGES if kernel == "rollout" else 3  # as the kernels compile (3: Triton's)
    entry = {"kernel": kernel, "variant": variant_name(fused), "num_stages": stages,
             "arch": f"sm_{arch}a"}
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "kernel.ttir")
            with open(source, "w") as f:
                f.write(_lowered_triton_ir(kernel, fused))
            compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                      options={"num_warps": fused.num_warps,
                                               "num_stages": stages})
            ptx = os.path.join(tmp, "kernel.ptx")
            with open(ptx, "w") as f:
                f.write(compiled.asm["ptx"])
            cubin = os.path.join(tmp, "kernel.cubin")
            ptxas = get_ptxas(arch).path
            log = subprocess.run([ptxas, "-v", "--gpu-name", f"sm_{arch}a", ptx, "-o", cubin],
                                 capture_output=True, text=True, check=True)
            sass = subprocess.run([os.path.join(os.path.dirname(ptxas), "nvdisasm"), "-c", cubin],
                                  capture_output=True, text=True, check=True).stdout
        entry.update(parse_ptxas(log.stdout + log.stderr))
        entry.update(count_local_memory(sass))
        entry.update(shared_kb=compiled.metadata.shared / 1024,
                     wgmma="wgmma" in compiled.asm["ptx"], triton=triton.__version__)
        entry["launches"] = entry["shared_kb"] <= SHARED_LIMIT_KB
        entry.update(occupancy(entry["registers"], fused.num_warps, entry["shared_kb"],
                               _programs(fused)))
    except Exception as error:  # recorded, the other variants go on
        entry["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    entry["compile_s"] = round(time.perf_counter() - start, 1)
    return entry


def table(entries: list) -> str:
    lines = [f"{'kernel':<8} {'variant':<30} {'regs':>4} {'spill st/ld B':>14} "
             f"{'STL/LDL':>9} {'smem KB':>8} {'wgmma':>6} {'serialized':>10} {'launches':>8} "
             f"{'programs':>8} {'per SM':>6} {'waves':>5}"]
    for e in entries:
        if "error" in e:
            lines.append(f"{e['kernel']:<8} {e['variant']:<30} error: {e['error'][:80]}")
            continue
        spills = f"{e['spill_store_bytes']}/{e['spill_load_bytes']}"
        local = f"{e['local_store_instructions']}/{e['local_load_instructions']}"
        lines.append(f"{e['kernel']:<8} {e['variant']:<30} {e['registers']:>4} {spills:>14} "
                     f"{local:>9} {e['shared_kb']:>8.1f} {str(e['wgmma']):>6} "
                     f"{str(e['wgmma_serialized']):>10} {str(e['launches']):>8} "
                     f"{e['programs']:>8} {e['programs_per_sm']:>6} {str(e['waves']):>5}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="triton_resources")
    parser.add_argument("--arch", type=int, default=90, help="compute capability (90: H100/H200)")
    parser.add_argument("--kernels", nargs="+", choices=["mlp", "rollout"],
                        default=["mlp", "rollout"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        import triton  # noqa: F401
    except ImportError:
        parser.error("needs the triton package: pip install -e '.[triton]' (or pip install triton)")
    jobs = [(kernel, arguments) for kernel, arguments in KERNELS if kernel in args.kernels]
    os.makedirs(args.out, exist_ok=True)
    entries = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.workers) as pool, \
            open(os.path.join(args.out, "resources.jsonl"), "w") as log:
        futures = [pool.submit(measure, kernel, arguments, args.arch)
                   for kernel, arguments in jobs]
        for future in futures:  # in job order
            entry = future.result()
            entries.append(entry)
            print(json.dumps(entry), flush=True)
            log.write(json.dumps(entry) + "\n")
    summary = table(entries)
    print(summary)
    with open(os.path.join(args.out, "resources.txt"), "w") as f:
        f.write(summary + "\n")


if __name__ == "__main__":
    main()
