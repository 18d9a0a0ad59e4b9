"""``KernelConfig``: which planning kernel runs, and how."""

from __future__ import annotations

import dataclasses
from typing import Optional

BACKENDS = ("triton", "mosaic")
_MIN_ROWS = 16  # the smallest operand side of a Triton ``dot``
_WGMMA_ROWS = 64  # the row group of a Hopper ``wgmma``


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """The planning kernels of a :class:`~mbrl_bayes.kernels.KernelEnsemble`.

    Attributes:
        backend: ``"triton"``: the whole-horizon rollout kernel
            (:func:`~mbrl_bayes.kernels.fused_rollout.fused_rollout`) for ``ts_inf``,
            ``thompson`` and ``optimistic``, and the per-step network kernel
            (:func:`~mbrl_bayes.kernels.fused_mlp.fused_stacked_mlp`) for ``ts1`` and
            ``mean``, both on Pallas' Triton backend (any CUDA GPU). ``"mosaic"``: the
            whole-horizon rollout kernel on Pallas' Mosaic GPU backend
            (:func:`~mbrl_bayes.kernels.mosaic_rollout.mosaic_rollout`; Hopper and later);
            ``ts1`` and ``mean`` keep XLA's products.
        block_rows: particles (rows) per kernel program. Triton: a power of two >= 16
            (default 64; the program runs ``block_rows / 16`` warps). Mosaic GPU: a multiple of
            64 (default 128: the PETS halfcheetah grid is then one wave of blocks on an H100).
        dot_dtype: dtype the products' operands are rounded to, with float32 accumulation:
            ``"bfloat16"`` (default), ``"float16"`` (TF32's 10-bit mantissa, overflows past
            65504) or, Triton only, ``"float32"`` (TF32 products, XLA's default precision;
            it spills registers, so it is slower).
        interpret: run the kernels in Pallas' interpreter (CPUs, tests) instead of compiling
            them for a GPU.
    """

    backend: str = "triton"
    block_rows: Optional[int] = None
    dot_dtype: str = "bfloat16"
    interpret: bool = False

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}.")
        if self.block_rows is None:
            object.__setattr__(self, "block_rows", 128 if self.backend == "mosaic" else 64)
        rows = self.block_rows
        if self.backend == "mosaic":
            if rows < _WGMMA_ROWS or rows % _WGMMA_ROWS:
                raise ValueError(f"the Mosaic GPU kernel needs block_rows a multiple of 64, got "
                                 f"{rows}.")
            if self.dot_dtype not in ("bfloat16", "float16"):
                raise ValueError(f"the Mosaic GPU kernel multiplies 16-bit operands: dot_dtype "
                                 f"'bfloat16' or 'float16', got {self.dot_dtype!r}.")
        else:
            if rows < _MIN_ROWS or rows & (rows - 1):
                raise ValueError(f"block_rows must be a power of two >= 16, got {rows}.")
            if self.dot_dtype not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"dot_dtype must be 'float32', 'bfloat16' or 'float16', got "
                                 f"{self.dot_dtype!r}.")

    @property
    def num_warps(self) -> int:
        """Triton warps per program: one per 16 rows (64 rows: 4 warps, 128: 8)."""
        return self.block_rows // _MIN_ROWS
