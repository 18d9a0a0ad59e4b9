"""A stacked MLP's whole forward pass in one GPU kernel (Pallas, Triton backend).

On a GPU, ``apply_stacked_mlp`` runs as one matrix product plus one elementwise pass (bias +
activation) per layer; each pass reads and writes the ``[rows, hidden]`` activations in HBM, and
at planning sizes (10,000 rows x 200 units: 8 MB per pass) those passes, not the FLOPs, set the
time. ``fused_stacked_mlp`` keeps a block of rows on chip through every layer: each kernel
program loads ``block_rows`` input rows of one function draw, applies all layers to them in
registers and writes only the outputs.

Triton works on tensors whose every dimension is a power of two, so each layer width is padded to
a multiple of 16 and cut into power-of-two *chunks* of at most ``max_chunk`` (by default 64:
200 -> 208 = 64 + 64 + 64 + 16; 36 -> 48 = 32 + 16); a layer is then a set of chunk x chunk
products. The padding rows and
columns of the packed weights are zero, so the padded units stay at ``activation(0)`` times zero
weights and never reach the outputs (for any activation).

Forward only (no VJP): used for planning, never for training. ``interpret=True`` runs the same
kernel with Pallas' interpreter, which is how it is tested on CPUs. ``jax.vmap`` adds a grid axis.
XLA's SPMD partitioner cannot split a custom kernel, so when the MPC shards candidates over
several GPUs each one computes the whole kernel (correct, not faster): use one GPU with it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

_MIN_CHUNK = 16  # the smallest operand side of a Triton ``dot``


def padded_width(n: int, power_of_two: bool = False) -> int:
    """``n`` rounded up to a multiple of 16 (or to a power of two >= 16)."""
    if power_of_two:
        return max(_MIN_CHUNK, 1 << (n - 1).bit_length())
    return _MIN_CHUNK * math.ceil(n / _MIN_CHUNK)


def chunks(n: int, max_chunk: int = 64, power_of_two: bool = False) -> Tuple[Tuple[int, int], ...]:
    """``(offset, size)`` pieces covering ``padded_width(n)``: ``max_chunk``-sized ones, then the
    powers of two of the rest (each >= 16).
    ``chunks(200) == ((0, 64), (64, 64), (128, 64), (192, 16))``."""
    rest, out, offset = padded_width(n, power_of_two), [], 0
    while rest:
        size = min(max_chunk, 1 << (rest.bit_length() - 1))
        out.append((offset, size))
        offset, rest = offset + size, rest - size
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class FusedMLPConfig:
    """How the fused kernel runs.

    Attributes:
        block_rows: rows per kernel program (a power of two >= 16). Larger blocks reuse each
            weight load for more rows; smaller ones give more programs to spread over the SMs.
        num_warps: Triton warps per program.
        num_stages: Triton software-pipelining stages (None: Triton's default, 3; 1 for the
            whole-horizon kernel unless ``staged``).
        dot_dtype: dtype the products' operands are rounded to (float32 products run as TF32 on
            NVIDIA GPUs, like XLA's default precision; ``bfloat16`` and ``float16`` halve the
            weight traffic and double the tensor-core rate; ``float16`` keeps TF32's 10-bit
            mantissa, but overflows past 65504). Accumulation is float32 either way.
        max_chunk: the widest piece a layer width is cut into (a power of two, 16-256): fewer,
            larger products against more registers per piece.
        pad_to_power_of_two: pad each width to a power of two (200 -> 256: one piece per layer
            with ``max_chunk=256``, at 1.6x the hidden layers' FLOPs) instead of to a multiple
            of 16 (200 -> 208).
        whole_horizon: an ensemble planning with a fixed particle-to-draw assignment (``ts_inf``,
            ``thompson``, ``optimistic``) runs the whole horizon as one kernel launch
            (:mod:`~mbrl_bayes.models.fused_rollout`) instead of one network kernel per step;
            the other propagation modes keep XLA's products.
        staged: (``whole_horizon`` only) keep the hidden activations in a per-program scratch
            buffer (L1/L2) instead of registers, and run each layer as a loop over 64-wide
            input slices that Triton software-pipelines over ``num_stages`` (default 3; 1
            otherwise): fewer registers, weight loads overlapped with the products.
        backend: ``"triton"`` (Pallas' Triton backend, the kernels above) or ``"mosaic"``
            (``whole_horizon`` only: :mod:`~mbrl_bayes.models.mosaic_rollout`, Pallas' Mosaic
            GPU backend for Hopper and later, 16-bit ``dot_dtype``, ``block_rows`` a multiple of
            64; ``num_warps``, ``num_stages``, ``max_chunk`` and ``staged`` are Triton's and do
            not apply). JAX 0.11 deprecated the Triton backend.
        interpret: run with the Pallas interpreter (CPUs, tests) instead of compiling for a GPU.
    """

    block_rows: int = 64
    num_warps: int = 4
    num_stages: Optional[int] = None
    dot_dtype: str = "float32"
    max_chunk: int = 64
    pad_to_power_of_two: bool = False
    whole_horizon: bool = False
    staged: bool = False
    backend: str = "triton"
    interpret: bool = False

    def __post_init__(self):
        if self.block_rows < _MIN_CHUNK or self.block_rows & (self.block_rows - 1):
            raise ValueError(f"block_rows must be a power of two >= 16, got {self.block_rows}.")
        if not _MIN_CHUNK <= self.max_chunk <= 256 or self.max_chunk & (self.max_chunk - 1):
            raise ValueError(f"max_chunk must be a power of two in [16, 256], got "
                             f"{self.max_chunk}.")
        if self.num_warps < 1 or self.num_warps & (self.num_warps - 1):
            raise ValueError(f"num_warps must be a power of two, got {self.num_warps}.")
        if self.num_stages is not None and self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages}.")
        if self.staged and not self.whole_horizon:
            raise ValueError("staged applies to the whole-horizon kernel (whole_horizon=True).")
        if self.dot_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"dot_dtype must be 'float32', 'bfloat16' or 'float16', got {self.dot_dtype!r}."
            )
        if self.backend not in ("triton", "mosaic"):
            raise ValueError(f"backend must be 'triton' or 'mosaic', got {self.backend!r}.")
        if self.backend == "mosaic":
            if not self.whole_horizon or self.staged:
                raise ValueError("the Mosaic GPU backend runs the whole-horizon kernel: "
                                 "whole_horizon=True, staged=False.")
            if self.dot_dtype == "float32":
                raise ValueError("the Mosaic GPU kernel multiplies 16-bit operands: dot_dtype "
                                 "'bfloat16' or 'float16'.")
            if self.block_rows % 64:
                raise ValueError(f"the Mosaic GPU kernel needs block_rows a multiple of 64, got "
                                 f"{self.block_rows}.")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["weights", "biases"],
                   meta_fields=["in_size"])
@dataclasses.dataclass(frozen=True)
class PackedMLP:
    """Zero-padded stacked weights, ready for the kernel (a pytree; leading axis = draws).

    Attributes:
        weights: per layer ``[k, padded_width(in), padded_width(out)]`` in the dot dtype.
        biases: per layer ``[k, padded_width(out)]``, float32.
        in_size: the unpadded input width (static).
    """

    weights: Tuple[jax.Array, ...]
    biases: Tuple[jax.Array, ...]
    in_size: int


def _width(n: int, config: FusedMLPConfig) -> int:
    return padded_width(n, config.pad_to_power_of_two)


def pack_stacked_mlp(layers: Sequence[dict], config: FusedMLPConfig) -> PackedMLP:
    """Pads stacked layers ``[{'w': [k, in, out], 'b': [k, out]}, ...]`` for the kernel."""
    weights, biases = [], []
    for layer in layers:
        w, b = layer["w"], layer["b"]
        fan_in, fan_out = w.shape[-2:]
        pad_in, pad_out = _width(fan_in, config) - fan_in, _width(fan_out, config) - fan_out
        weights.append(jnp.pad(w, ((0, 0), (0, pad_in), (0, pad_out))).astype(config.dot_dtype))
        biases.append(jnp.pad(b, ((0, 0), (0, pad_out))).astype(jnp.float32))
    return PackedMLP(tuple(weights), tuple(biases), int(layers[0]["w"].shape[-2]))


def _dense(h, w_ref, b_ref, in_pieces, out_pieces, dot_dtype, zero=None) -> List[jax.Array]:
    """One layer on chunked activations: ``h[c]`` is input piece ``in_pieces[c]``; returns the
    pre-activation output pieces ``[rows, size]`` of ``out_pieces`` (float32 accumulation).

    ``zero``: a traced int32 0 added to the weights' row offsets. Inside a loop whose body reloads
    the weights, it keeps the compiler from hoisting every weight chunk's address tensor out of the
    loop, where they would stay live (in registers) for the whole loop.
    """
    from jax.experimental import pallas as pl

    out = []
    for out_offset, out_size in out_pieces:
        acc = jnp.broadcast_to(
            b_ref[pl.ds(out_offset, out_size)][None, :], (h[0].shape[0], out_size)
        )
        for (in_offset, in_size), h_chunk in zip(in_pieces, h, strict=True):
            row = in_offset if zero is None else in_offset + zero
            w = w_ref[pl.ds(row, in_size), pl.ds(out_offset, out_size)]
            acc = acc + jnp.dot(h_chunk.astype(dot_dtype), w, preferred_element_type=jnp.float32)
        out.append(acc)
    return out


def _network(h, param_refs, pieces, activation, dot_dtype, zero=None) -> List[jax.Array]:
    """Every layer on chunked activations ``h`` (pieces of ``pieces[0]``); returns the output
    pieces of ``pieces[-1]`` (no activation on the last layer). ``zero``: see ``_dense``."""
    num_layers = len(pieces) - 1
    for layer in range(num_layers):
        w_ref, b_ref = param_refs[2 * layer], param_refs[2 * layer + 1]
        h = _dense(h, w_ref, b_ref, pieces[layer], pieces[layer + 1], dot_dtype, zero)
        if layer < num_layers - 1:
            h = [activation(chunk).astype(dot_dtype) for chunk in h]
    return h


def _barrier(interpret: bool) -> None:
    """All of the program's threads reach this point before any goes on (their global-memory
    writes visible to each other); nothing to do in the sequential interpreter."""
    if not interpret:
        from jax.experimental.pallas import triton as pl_triton

        pl_triton.debug_barrier()


def _staged_dense(scratch_ref, in_width, w_ref, b_ref, out_pieces, dot_dtype, zero,
                  k_chunk: int = 64) -> List[jax.Array]:
    """One layer whose input ``[rows, in_width]`` sits in memory (``scratch_ref``): a loop over
    ``k_chunk``-wide input slices, each multiplied into every output piece, then the remaining
    (power-of-two) slices. Triton software-pipelines the loop's loads (``num_stages``), so only
    the output pieces' accumulators stay in registers."""
    from jax.experimental import pallas as pl

    rows = scratch_ref.shape[0]
    accs = tuple(jnp.broadcast_to(b_ref[pl.ds(o, n)][None, :], (rows, n)) for o, n in out_pieces)

    def product(accs, offset, size):
        a = scratch_ref[:, pl.ds(offset, size)]
        return tuple(acc + jnp.dot(a, w_ref[pl.ds(offset, size), pl.ds(o, n)],
                                   preferred_element_type=jnp.float32)
                     for acc, (o, n) in zip(accs, out_pieces, strict=True))

    full = in_width // k_chunk
    if full:
        accs = jax.lax.fori_loop(0, full, lambda c, accs: product(accs, c * k_chunk + zero,
                                                                  k_chunk), accs)
    for offset, size in chunks(in_width - full * k_chunk):  # none when k_chunk divides it
        accs = product(accs, full * k_chunk + offset + zero, size)
    return list(accs)


def _staged_network(h, scratch_ref, param_refs, pieces, activation, dot_dtype, zero,
                    interpret) -> List[jax.Array]:
    """``_network`` with the hidden activations in memory: each hidden layer's activated output
    is written to ``scratch_ref`` (the program's ``[rows, width]`` block of a scratch buffer)
    and read back by the next layer's ``_staged_dense``. The first layer takes the register
    pieces ``h``; the last returns its output pieces.

    (One loop per layer accumulating every output piece compiles to fewer spills than one loop
    per output piece, ``benchmarks/triton_resources.py``.)"""
    from jax.experimental import pallas as pl

    num_layers = len(pieces) - 1
    h = _dense(h, param_refs[0], param_refs[1], pieces[0], pieces[1], dot_dtype, zero)
    for layer in range(1, num_layers):
        _barrier(interpret)  # every thread is done reading the previous layer's activations
        for (offset, size), chunk in zip(pieces[layer], h, strict=True):
            scratch_ref[:, pl.ds(offset, size)] = activation(chunk).astype(dot_dtype)
        _barrier(interpret)  # ... and sees all of this layer's
        width = sum(size for _, size in pieces[layer])
        h = _staged_dense(scratch_ref, width, param_refs[2 * layer], param_refs[2 * layer + 1],
                          pieces[layer + 1], dot_dtype, zero)
    return h


def _mlp_kernel(x_ref, *refs, pieces, activation, dot_dtype):
    """One program: ``block_rows`` rows of one draw through every layer. ``pieces[l]`` are the
    ``(offset, size)`` chunks of layer ``l``'s input width (the last: of the output width)."""
    from jax.experimental import pallas as pl

    param_refs, out_ref = refs[:-1], refs[-1]
    h = _network([x_ref[:, pl.ds(o, s)] for o, s in pieces[0]], param_refs, pieces, activation,
                 dot_dtype)
    for (offset, size), h_chunk in zip(pieces[-1], h, strict=True):
        out_ref[:, pl.ds(offset, size)] = h_chunk


def fused_stacked_mlp(
    packed: PackedMLP,
    x: jax.Array,
    activation: Callable[[jax.Array], jax.Array],
    out_size: int,
    config: FusedMLPConfig,
) -> jax.Array:
    """Draw ``i`` of the packed MLP applied to rows ``x[i]``: [k, m, in] -> [k, m, out_size].

    The same function as ``apply_stacked_mlp`` on the unpacked layers (up to the products'
    rounding), as one kernel launch over a ``(k, ceil(m / block_rows))`` grid. Packed weights
    with a leading axis of 1 are shared by all ``k`` draws.
    """
    from jax.experimental import pallas as pl  # imported on use: it costs ~1 s at startup
    from jax.experimental.pallas import triton as pl_triton

    k, m, fan_in = x.shape
    draws = packed.weights[0].shape[0]
    if draws not in (1, k):
        raise ValueError(f"x has rows for {k} draws; the packed weights hold {draws}.")
    if fan_in != packed.in_size:
        raise ValueError(f"x has {fan_in} features; the packed network takes {packed.in_size}.")
    padded = (_width(fan_in, config),) + tuple(w.shape[-1] for w in packed.weights)
    if packed.weights[0].shape[1] != padded[0] or any(_width(w, config) != w for w in padded):
        raise ValueError(f"the packed widths {padded} are not padded as this config pads them "
                         f"(packed with another config).")
    rows = config.block_rows * math.ceil(m / config.block_rows)
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, rows - m), (0, padded[0] - fan_in)))
    pieces = tuple(chunks(w, config.max_chunk, config.pad_to_power_of_two) for w in padded)

    in_specs = [pl.BlockSpec((pl.squeezed, config.block_rows, padded[0]), lambda i, j: (i, j, 0))]
    operands = [x]
    draw = (lambda i: i) if draws == k else (lambda i: 0)  # one weight set shared by all draws
    for w, b in zip(packed.weights, packed.biases, strict=True):
        in_specs.append(pl.BlockSpec((pl.squeezed,) + w.shape[1:], lambda i, j: (draw(i), 0, 0)))
        in_specs.append(pl.BlockSpec((pl.squeezed, b.shape[1]), lambda i, j: (draw(i), 0)))
        operands += [w, b]
    kernel = functools.partial(
        _mlp_kernel, pieces=pieces, activation=activation, dot_dtype=jnp.dtype(config.dot_dtype)
    )
    compiler_params = None
    if not config.interpret:
        compiler_params = pl_triton.CompilerParams(
            num_warps=config.num_warps, num_stages=config.num_stages
        )
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((k, rows, padded[-1]), jnp.float32),
        grid=(k, rows // config.block_rows),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((pl.squeezed, config.block_rows, padded[-1]),
                               lambda i, j: (i, j, 0)),
        compiler_params=compiler_params,
        interpret=config.interpret,
        name="fused_stacked_mlp",
    )(*operands)
    return out[:, :m, :out_size]
