"""A PETS ensemble's whole planning horizon in one GPU kernel on Pallas' Mosaic GPU backend.

The same computation as :func:`~mbrl_bayes.kernels.fused_rollout.fused_rollout`, with the same
per-step formulas (:mod:`~mbrl_bayes.models.transition_math`), written for the backend JAX
develops for Hopper and later GPUs: JAX 0.11 deprecated Pallas' Triton backend ("will be removed
in a future version"), and Mosaic GPU gives explicit control of what Triton decides on its own,
which matters here because the Triton kernel spends all 255 registers and spills
(``benchmarks/triton_resources.py``).

One CUDA block (one warpgroup, 128 threads) takes ``block_rows`` particles of one draw through
all ``horizon`` steps:

- the particles' state stays in registers (float32, the accumulator layout) from step to step;
- each step, the first and hidden layers' weights stream from global memory (L2) into one
  shared-memory slot by TMA (the first layer's real ``S + A`` rows only), and the next layer's
  copy is issued as soon as the tensor cores have read the slot, so it overlaps the bias,
  activation and write-back of the current layer; the output layer's weights, small, stay in
  shared memory for the whole horizon;
- each layer is one ``wgmma`` (16-bit operands from shared memory, float32 accumulation) on the
  whole ``[block_rows, width]`` block; the activations go back to shared memory in the operand
  dtype as the next layer's left operand;
- the step's actions and noise arrive by TMA one step ahead; the next state leaves by TMA.

Layout (``pack_mosaic``): the first and hidden layers are padded to one square ``[D, D]`` block,
``D`` the widest of ``S + A`` and the hidden widths (``S``, ``A``: the state and action widths of
:class:`~mbrl_bayes.kernels.fused_rollout.PackedRollout`, multiples of 16), so that one slot
serves them all; the output layer to ``[D, out]``. Zero padding keeps padded units out of the
outputs for any activation. The actions are standardized by XLA before the launch (they are
known in advance). At the PETS halfcheetah widths a 128-row block uses 218,168 of the 232,448
bytes of shared memory a Hopper block may have (``shared_memory_bytes``; more rows are refused
with a one-line error).

Forward only, 16-bit operands only (``dot_dtype`` bfloat16 or float16), ``block_rows`` a
multiple of 64 (the ``wgmma`` row group). ``interpret=True`` runs the kernel with Mosaic GPU's
interpreter, which is how it is tested on CPUs; ``jax.export`` for CUDA lowers it on any machine.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from mbrl_bayes.kernels.config import KernelConfig
from mbrl_bayes.kernels.fused_rollout import (
    _KEEP,
    _LOGVAR_MAX,
    _OBS_MEAN,
    _OBS_STD,
    _TARGET_MEAN,
    _TARGET_STD,
    _VAR_MIN,
    PackedRollout,
    check_rollout_inputs,
)
from mbrl_bayes.models.transition_math import denormalized_sample, next_state, standardize

_OPERAND_SWIZZLE = 32  # bytes: 16 16-bit elements, so every multiple-of-16 width tiles exactly
SHARED_MEMORY_LIMIT = 227 * 1024  # bytes of shared memory one block may use on an H100/H200
# Options of Mosaic GPU's interpreter (``InterpretGPUParams``) when ``config.interpret``; the
# tests set ``detect_races=True``.
INTERPRET_OPTIONS: dict = {}


def square_width(packed: PackedRollout) -> int:
    """``D``: the side of the square block the first and hidden layers are padded to."""
    s, a = packed.state_width, packed.act_width
    return max([s + a] + [w.shape[-1] for w in packed.weights[:-1]])


def _bias_width(packed: PackedRollout) -> int:
    # TMA moves multiples of 128 bytes: the bias rows are padded to 32 float32.
    widest = max(square_width(packed), packed.weights[-1].shape[-1])
    return 32 * math.ceil(widest / 32)


def pack_mosaic(packed: PackedRollout) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``packed``'s layers zero-padded for :func:`mosaic_rollout`: the first and hidden layers
    as ``[k, L - 1, D, D]`` weights, the output layer as ``[k, D, out]`` (dot dtype), and
    ``[k, L, 32 * ceil(max(D, out) / 32)]`` float32 biases."""
    d, width = square_width(packed), _bias_width(packed)
    weights = [jnp.pad(w, ((0, 0), (0, d - w.shape[1]), (0, d - w.shape[2])))
               for w in packed.weights[:-1]]
    last = packed.weights[-1]
    last = jnp.pad(last, ((0, 0), (0, d - last.shape[1]), (0, 0)))
    biases = [jnp.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in packed.biases]
    return jnp.stack(weights, axis=1), last, jnp.stack(biases, axis=1)


def _shared_buffers(packed: PackedRollout, config: KernelConfig) -> list:
    """``(shape, dtype, tiled)`` of each shared-memory buffer of a block, in the kernel's order:
    the weight slot, the resident output layer, the activations, the state and action operands
    (tiled for ``wgmma``), the state and noise tiles (tiled for the accumulator layout), the
    biases and the statistics."""
    d, s, a, r = square_width(packed), packed.state_width, packed.act_width, config.block_rows
    dot = jnp.dtype(config.dot_dtype)
    out = packed.weights[-1].shape[-1]
    return [((d, d), dot, True), ((d, out), dot, True), ((r, d), dot, True), ((r, s), dot, True),
            ((r, a), dot, True), ((r, s), jnp.float32, True), ((r, s), jnp.float32, True),
            ((len(packed.weights), _bias_width(packed)), jnp.float32, False),
            ((8, s), jnp.float32, False)]


_BARRIERS = (1, 1, 1, 4)  # weights, actions, noise, the four start-up copies


def shared_memory_bytes(packed: PackedRollout, config: KernelConfig) -> int:
    """Shared memory one block of :func:`mosaic_rollout` allocates: its buffers, each aligned to
    1 KB as Mosaic GPU allocates them, and its 8-byte barriers (equal to Mosaic GPU 0.10.2's own
    count)."""
    sizes = [math.prod(shape) * jnp.dtype(dtype).itemsize
             for shape, dtype, _ in _shared_buffers(packed, config)]
    return sum(1024 * math.ceil(b / 1024) for b in sizes) + 8 * sum(_BARRIERS)


def _tiled(width: int, dtype) -> tuple:
    """Tiling and swizzle transforms for a ``[rows, width]`` shared-memory buffer."""
    from jax.experimental.pallas import mosaic_gpu as plgpu

    itemsize = jnp.dtype(dtype).itemsize
    swizzle = _OPERAND_SWIZZLE if itemsize == 2 else min(128, width * itemsize)
    return (plgpu.TilingTransform((8, swizzle // itemsize)), plgpu.SwizzleTransform(swizzle))


def mosaic_rollout(
    packed: PackedRollout,
    obs: jax.Array,
    act: jax.Array,
    noise: Optional[jax.Array],
    activation: Callable[[jax.Array], jax.Array],
    config: KernelConfig,
) -> jax.Array:
    """Draw ``i`` of ``packed`` rolled out from ``obs[i]`` under ``act[i]``, in one launch.

    Same arguments and result as :func:`~mbrl_bayes.kernels.fused_rollout.fused_rollout`:
    ``obs`` [k, m, d], ``act`` [k, H, m, a] (unstandardized), ``noise`` [k, H, m, t] or None;
    returns [k, H, m, t].
    """
    from jax import lax
    from jax.experimental import pallas as pl  # imported on use: it costs ~1 s at startup
    from jax.experimental.pallas import mosaic_gpu as plgpu

    if config.backend != "mosaic":
        raise ValueError(f"mosaic_rollout runs KernelConfig(backend='mosaic'), got "
                         f"backend={config.backend!r}.")
    check_rollout_inputs(packed, obs, act, noise, "mosaic_rollout")
    k, m, _ = obs.shape
    horizon, t = act.shape[1], packed.target_dim
    if not config.interpret and jax.default_backend() == "gpu":
        capability = getattr(jax.devices()[0], "compute_capability", "9.0")
        if float(capability) < 9.0:
            raise ValueError(f"the Mosaic GPU kernel needs a Hopper or later GPU (compute "
                             f"capability >= 9.0), got {capability}: use backend='triton'.")
    smem = shared_memory_bytes(packed, config)
    if smem > SHARED_MEMORY_LIMIT:
        raise ValueError(f"mosaic_rollout needs {smem} bytes of shared memory per block with "
                         f"block_rows={config.block_rows}; a Hopper block has "
                         f"{SHARED_MEMORY_LIMIT}: use fewer block_rows.")
    dtype = jnp.dtype(config.dot_dtype)
    s, a, r = packed.state_width, packed.act_width, config.block_rows
    rows = r * math.ceil(m / r)
    width = square_width(packed)
    num_layers = len(packed.weights)
    use_noise = packed.probabilistic and noise is not None
    weights, last_weights, biases = pack_mosaic(packed)
    weights, last_weights = weights.astype(dtype), last_weights.astype(dtype)
    first_rows = s + a  # the first layer's real rows: only those are copied

    def padded(x, width, steps=0):  # [..., (H,) m, w] -> [..., (H + steps,) rows, width]
        pad = [(0, 0)] * (x.ndim - 2) + [(0, rows - m), (0, width - x.shape[-1])]
        if steps:
            pad[1] = (0, steps)
        return jnp.pad(x, pad)

    act_mean = packed.act_stats[:, None, None, 0, : packed.act_dim]
    act_std = packed.act_stats[:, None, None, 1, : packed.act_dim]
    # One spare step at the end: the kernel prefetches step t + 1's inputs unconditionally.
    act_in = padded(standardize(act, act_mean, act_std).astype(dtype), a, steps=1)
    operands = [padded(obs.astype(jnp.float32), s), act_in]
    if use_noise:
        operands.append(padded(noise.astype(jnp.float32), s, steps=1))
    operands += [weights, last_weights, biases, packed.state_stats]
    hidden_layers = range(1, num_layers - 1)
    heads = ((0, s), (s, s)) if use_noise else ((0, s),)

    def kernel(*refs):
        obs_g, act_g = refs[:2]
        noise_g = refs[2] if use_noise else None
        w_g, w_last_g, b_g, stats_g, out_g = refs[-5:]
        draw, block = lax.axis_index("draw"), lax.axis_index("block")
        block_rows = pl.ds(block * r, r)

        def scoped(w_smem, w_last_smem, h_smem, x_smem, a_smem, io_smem, n_smem, b_smem,
                   stats_smem, w_bar, a_bar, n_bar, init_bar):
            def load_weights(layer):  # into the slot; the first layer's real rows only
                if layer == 0:
                    plgpu.copy_gmem_to_smem(w_g.at[draw, 0, pl.ds(0, first_rows)],
                                            w_smem.at[pl.ds(0, first_rows)], w_bar)
                else:
                    plgpu.copy_gmem_to_smem(w_g.at[draw, layer], w_smem, w_bar)

            plgpu.copy_gmem_to_smem(b_g.at[draw], b_smem, init_bar.at[0])
            plgpu.copy_gmem_to_smem(stats_g.at[draw], stats_smem, init_bar.at[1])
            plgpu.copy_gmem_to_smem(obs_g.at[draw, block_rows], io_smem, init_bar.at[2])
            plgpu.copy_gmem_to_smem(w_last_g.at[draw], w_last_smem, init_bar.at[3])
            load_weights(0)
            plgpu.copy_gmem_to_smem(act_g.at[draw, 0, block_rows], a_smem, a_bar)
            if use_noise:
                plgpu.copy_gmem_to_smem(noise_g.at[draw, 0, block_rows], n_smem, n_bar)
            for i in range(4):
                plgpu.barrier_wait(init_bar.at[i])

            column = plgpu.Layout.WGMMA.reduce(0)

            def cast(x, layout):  # layouts mean nothing to (and are unknown in) the interpreter
                return x if config.interpret else plgpu.layout_cast(x, layout)

            def stat(row):  # [S] column statistics, broadcast against [block_rows, S]
                vec = cast(stats_smem[row], column)
                return lax.broadcast_in_dim(vec, (r, s), [1])

            def bias(layer, start, size):
                vec = cast(b_smem[layer, pl.ds(start, size)], column)
                return lax.broadcast_in_dim(vec, (r, size), [1])

            def product(pairs, cols):  # sum of lhs @ rhs over pairs, float32 [r, cols]
                def run(acc):
                    for lhs, rhs in pairs:
                        plgpu.wgmma(acc, lhs, rhs)
                    return acc[...]
                return pl.run_scoped(run, plgpu.ACC((r, cols), jnp.float32))

            def next_weights(layer):  # the slot is free once the last product is read
                # After the last hidden layer: the next step's first layer (the output layer's
                # weights stay in shared memory).
                load_weights(layer + 1 if layer + 1 < num_layers - 1 else 0)

            def step(i, state):
                xs = standardize(state, stat(_OBS_MEAN), stat(_OBS_STD))
                x_smem[...] = xs.astype(dtype)
                plgpu.commit_smem()
                plgpu.barrier_wait(w_bar)
                plgpu.barrier_wait(a_bar)
                h = product([(x_smem, w_smem.at[pl.ds(0, s)]),
                             (a_smem, w_smem.at[pl.ds(s, a)])], width)
                next_weights(0)
                plgpu.copy_gmem_to_smem(act_g.at[draw, i + 1, block_rows], a_smem, a_bar)
                h_smem[...] = activation(h + bias(0, 0, width)).astype(dtype)
                plgpu.commit_smem()
                for layer in hidden_layers:
                    plgpu.barrier_wait(w_bar)
                    h = product([(h_smem, w_smem)], width)
                    next_weights(layer)
                    h_smem[...] = activation(h + bias(layer, 0, width)).astype(dtype)
                    plgpu.commit_smem()
                last = num_layers - 1
                outs = [product([(h_smem, w_last_smem.at[:, pl.ds(start, size)])], size)
                        + bias(last, start, size) for start, size in heads]
                if use_noise:
                    plgpu.barrier_wait(n_bar)
                    eps = n_smem[...]
                    plgpu.commit_smem()  # every thread has read the noise before TMA refills it
                    plgpu.copy_gmem_to_smem(noise_g.at[draw, i + 1, block_rows], n_smem, n_bar)
                    (mean, raw), bounds = outs, (stat(_LOGVAR_MAX), stat(_VAR_MIN))
                else:
                    (mean,), raw, eps, bounds = outs, None, None, (None, None)
                # Mosaic GPU lowers rsqrt, not sqrt.
                out = denormalized_sample(mean, raw, eps, *bounds, stat(_TARGET_MEAN),
                                          stat(_TARGET_STD), sqrt=lambda v: v * lax.rsqrt(v))
                nxt = next_state(state, out, keep=stat(_KEEP))
                plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the last step's copy read
                io_smem[...] = nxt
                plgpu.commit_smem()
                plgpu.copy_smem_to_gmem(io_smem, out_g.at[draw, i, block_rows])
                return nxt

            state = io_smem[...]
            lax.fori_loop(0, horizon, step, state)
            # Drain the copies issued for the spare step before the block exits.
            plgpu.barrier_wait(w_bar)
            plgpu.barrier_wait(a_bar)
            if use_noise:
                plgpu.barrier_wait(n_bar)
            plgpu.wait_smem_to_gmem(0)

        pl.run_scoped(
            scoped,
            *[plgpu.SMEM(shape, dtype, transforms=_tiled(shape[-1], dtype) if tiled else ())
              for shape, dtype, tiled in _shared_buffers(packed, config)],
            *[plgpu.Barrier(num_barriers=n) for n in _BARRIERS],
        )

    interpret = None
    if config.interpret:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

        interpret = InterpretGPUParams(**INTERPRET_OPTIONS)
    out = plgpu.kernel(
        kernel,
        out_type=jax.ShapeDtypeStruct((k, horizon, rows, s), jnp.float32),
        grid=(k, rows // r),
        grid_names=("draw", "block"),
        interpret=interpret,
    )(*operands)
    return out[:, :, :m, :t]
