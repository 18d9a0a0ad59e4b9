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
        num_stages: Triton software-pipelining stages (None: Triton's default).
        dot_dtype: dtype the products' operands are rounded to (float32 products run as TF32 on
            NVIDIA GPUs, like XLA's default precision; ``bfloat16`` and ``float16`` halve the
            weight traffic and double the tensor-core rate; ``float16`` keeps TF32's 10-bit
            mantissa, but overflows past 65504). Accumulation is float32 either way.
        max_chunk: the widest piece a layer width is cut into (a power of two, 16-256): fewer,
            larger products against more registers per piece.
        pad_to_power_of_two: pad each width to a power of two (200 -> 256: one piece per layer
            with ``max_chunk=256``, at 1.6x the hidden layers' FLOPs) instead of to a multiple
            of 16 (200 -> 208).
        interpret: run with the Pallas interpreter (CPUs, tests) instead of compiling for a GPU.
    """

    block_rows: int = 64
    num_warps: int = 4
    num_stages: Optional[int] = None
    dot_dtype: str = "float32"
    max_chunk: int = 64
    pad_to_power_of_two: bool = False
    interpret: bool = False

    def __post_init__(self):
        if self.block_rows < _MIN_CHUNK or self.block_rows & (self.block_rows - 1):
            raise ValueError(f"block_rows must be a power of two >= 16, got {self.block_rows}.")
        if not _MIN_CHUNK <= self.max_chunk <= 256 or self.max_chunk & (self.max_chunk - 1):
            raise ValueError(f"max_chunk must be a power of two in [16, 256], got "
                             f"{self.max_chunk}.")
        if self.num_warps < 1 or self.num_warps & (self.num_warps - 1):
            raise ValueError(f"num_warps must be a power of two, got {self.num_warps}.")
        if self.dot_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"dot_dtype must be 'float32', 'bfloat16' or 'float16', got {self.dot_dtype!r}."
            )


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


def _mlp_kernel(x_ref, *refs, pieces, activation, dot_dtype):
    """One program: ``block_rows`` rows of one draw through every layer. ``pieces[l]`` are the
    ``(offset, size)`` chunks of layer ``l``'s input width (the last: of the output width)."""
    from jax.experimental import pallas as pl

    param_refs, out_ref = refs[:-1], refs[-1]
    num_layers = len(pieces) - 1
    h: List[jax.Array] = [x_ref[:, pl.ds(o, s)] for o, s in pieces[0]]
    for layer in range(num_layers):
        w_ref, b_ref = param_refs[2 * layer], param_refs[2 * layer + 1]
        out = []
        for out_offset, out_size in pieces[layer + 1]:
            acc = jnp.broadcast_to(
                b_ref[pl.ds(out_offset, out_size)][None, :], (h[0].shape[0], out_size)
            )
            for (in_offset, in_size), h_chunk in zip(pieces[layer], h, strict=True):
                w = w_ref[pl.ds(in_offset, in_size), pl.ds(out_offset, out_size)]
                acc = acc + jnp.dot(h_chunk.astype(dot_dtype), w,
                                    preferred_element_type=jnp.float32)
            out.append(activation(acc) if layer < num_layers - 1 else acc)
        h = out
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

    in_specs = [pl.BlockSpec((None, config.block_rows, padded[0]), lambda i, j: (i, j, 0))]
    operands = [x]
    draw = (lambda i: i) if draws == k else (lambda i: 0)  # one weight set shared by all draws
    for w, b in zip(packed.weights, packed.biases, strict=True):
        in_specs.append(pl.BlockSpec((None,) + w.shape[1:], lambda i, j: (draw(i), 0, 0)))
        in_specs.append(pl.BlockSpec((None, b.shape[1]), lambda i, j: (draw(i), 0)))
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
        out_specs=pl.BlockSpec((None, config.block_rows, padded[-1]), lambda i, j: (i, j, 0)),
        compiler_params=compiler_params,
        interpret=config.interpret,
        name="fused_stacked_mlp",
    )(*operands)
    return out[:, :m, :out_size]
