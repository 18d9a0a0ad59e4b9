"""``jit`` for the toolkit's hot loops: ``jax.jit`` plus per-computation XLA compiler options.

On CPUs with AVX-512, XLA:CPU still emits its elementwise loop fusions with 256-bit vectors by
default. The planner's rollouts and the model updates spend a large share of their non-matmul time
in such loops (bias + SiLU after every hidden layer: ``exp`` and a divide over ``[k, rows, 200]``),
and 512-bit vectors halve that time (measured in ``benchmarks/planning.py``: the SiLU passes go
from ~24 to ~12.6 ms per layer per action on the cartpole configuration, seconds per action from
0.46-0.48 to 0.42-0.44). The option is passed per jitted function (``compiler_options``), so it
does not touch the user's global ``XLA_FLAGS`` nor any other computation; numerics are unchanged
(the same polynomial per lane).

On the same CPUs, the models' products (``[5, 2000, 200] x [5, 200, 200]`` per hidden layer and
step) run faster through XLA:CPU's own dot kernels than through the YNNPACK fusions that jax 0.10
uses by default; ``xla_cpu_experimental_ynn_fusion_type=""`` selects the former for the toolkit's
jitted functions only. Measured A/B in one process (``benchmarks/planning.py``'s model):
pets_halfcheetah 1.153 -> 1.081 s per action, pets_cartpole 0.372 -> 0.340 s; training
(``benchmarks/training.py``) 193,000 -> 206,000 and 214,000 -> 226,000 samples/s. Each CPU option
is probed once (a scalar function compiled with it); a jaxlib that rejects one does without it.

On GPUs, the models' small batched products (``[5, 2000, 200] x [5, 200, 200]`` per layer and
step) run slightly faster through cuBLAS than through XLA's Triton GEMM fusions, which XLA
otherwise picks: ``xla_gpu_enable_triton_gemm=False`` took pets_halfcheetah from 14.4 to 13.3 ms
per action on an H100 (measured by ``benchmarks/gpu_variants.py``, in git history), and
compiles faster. Elsewhere (CPUs
without AVX-512, TPUs) no option is added.

Used where these gains were measured, and nowhere else: the planner's jitted functions
(``planning.MPC``) and the model update and evaluation of ``models.train``. This module imports
nothing from the package.
"""

from __future__ import annotations

import functools
import platform
from typing import Any, Callable, Dict, Tuple

import jax
import numpy as np


@functools.lru_cache(maxsize=None)
def _cpu_has_avx512() -> bool:
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


# XLA:CPU's own dot kernels instead of YNNPACK fusions (see the module docstring).
CPU_DOTS_WITHOUT_YNNPACK = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.lru_cache(maxsize=None)
def _cpu_accepts(options: Tuple[Tuple[str, Any], ...]) -> bool:
    """Whether this jaxlib's XLA:CPU compiles with ``options`` (older ones lack some)."""
    try:
        x = jax.device_put(np.float32(0.0), jax.devices("cpu")[0])
        jax.jit(lambda v: v + 1.0, compiler_options=dict(options)).lower(x).compile()
    except Exception:  # an unknown option or value: XLA raises INVALID_ARGUMENT
        return False
    return True


def compiler_options(backend: str | None = None) -> Dict[str, Any]:
    """XLA options for a hot jitted function on ``backend`` (default: JAX's default backend)."""
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu" and _cpu_has_avx512():
        options: Dict[str, Any] = {}
        for candidate in ({"xla_cpu_prefer_vector_width": 512}, CPU_DOTS_WITHOUT_YNNPACK):
            if _cpu_accepts(tuple(candidate.items())):
                options.update(candidate)
        return options
    if backend == "gpu":
        return {"xla_gpu_enable_triton_gemm": False}
    return {}


def jit(fun: Callable, **kwargs: Any) -> Callable:
    """``jax.jit(fun, **kwargs)`` with :func:`compiler_options` for the default backend."""
    options = {**compiler_options(), **kwargs.pop("compiler_options", {})}
    return jax.jit(fun, compiler_options=options or None, **kwargs)
