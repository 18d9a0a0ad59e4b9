"""A stacked MLP's whole forward pass in one GPU kernel (Pallas, Triton backend): the per-step
network kernel of a ``KernelEnsemble(backend="triton")``, for the propagation modes that reshuffle
particles between draws at every step (``ts1``) or average the draws (``mean``), which the
whole-horizon kernel cannot serve.

On a GPU, ``apply_stacked_mlp`` runs as one matrix product plus one elementwise pass (bias +
activation) per layer; each pass reads and writes the ``[rows, hidden]`` activations in HBM, and
at planning sizes (10,000 rows x 200 units: 8 MB per pass) those passes, not the FLOPs, set the
time. ``fused_stacked_mlp`` keeps a block of rows on chip through every layer: each kernel
program loads ``block_rows`` input rows of one function draw, applies all layers to them in
registers and writes only the outputs.

Triton works on tensors whose every dimension is a power of two, so each layer width is padded to
a multiple of 16 and cut into power-of-two *chunks* of at most 64 (200 -> 208 = 64 + 64 + 64 +
16; 36 -> 48 = 32 + 16); a layer is then a set of chunk x chunk products. The padding rows and
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
from typing import Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp

from mbrl_bayes.kernels.config import KernelConfig

_MIN_CHUNK = 16  # the smallest operand side of a Triton ``dot``
_MAX_CHUNK = 64  # wider pieces hold more registers per product (benchmarks/triton_resources.py)


def padded_width(n: int, power_of_two: bool = False) -> int:
    """``n`` rounded up to a multiple of 16 (or to a power of two >= 16)."""
    if power_of_two:
        return max(_MIN_CHUNK, 1 << (n - 1).bit_length())
    return _MIN_CHUNK * math.ceil(n / _MIN_CHUNK)


def chunks(n: int) -> Tuple[Tuple[int, int], ...]:
    """``(offset, size)`` pieces covering ``padded_width(n)``: 64-wide ones, then the powers of
    two of the rest (each >= 16). ``chunks(200) == ((0, 64), (64, 64), (128, 64), (192, 16))``."""
    rest, out, offset = padded_width(n), [], 0
    while rest:
        size = min(_MAX_CHUNK, 1 << (rest.bit_length() - 1))
        out.append((offset, size))
        offset, rest = offset + size, rest - size
    return tuple(out)


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


def pack_stacked_mlp(layers: Sequence[dict], config: KernelConfig) -> PackedMLP:
    """Pads stacked layers ``[{'w': [k, in, out], 'b': [k, out]}, ...]`` for the kernel."""
    weights, biases = [], []
    for layer in layers:
        w, b = layer["w"], layer["b"]
        fan_in, fan_out = w.shape[-2:]
        pad_in, pad_out = padded_width(fan_in) - fan_in, padded_width(fan_out) - fan_out
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


def _network(h, param_refs, pieces, activation, dot_dtype) -> List[jax.Array]:
    """Every layer on chunked activations ``h`` (pieces of ``pieces[0]``); returns the output
    pieces of ``pieces[-1]`` (no activation on the last layer)."""
    num_layers = len(pieces) - 1
    for layer in range(num_layers):
        w_ref, b_ref = param_refs[2 * layer], param_refs[2 * layer + 1]
        h = _dense(h, w_ref, b_ref, pieces[layer], pieces[layer + 1], dot_dtype)
        if layer < num_layers - 1:
            h = [activation(chunk).astype(dot_dtype) for chunk in h]
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
    config: KernelConfig,
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
    padded = (padded_width(fan_in),) + tuple(w.shape[-1] for w in packed.weights)
    rows = config.block_rows * math.ceil(m / config.block_rows)
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, rows - m), (0, padded[0] - fan_in)))
    pieces = tuple(chunks(w) for w in padded)

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
        compiler_params = pl_triton.CompilerParams(num_warps=config.num_warps)
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
