"""A PETS ensemble's whole planning horizon in one GPU kernel (Pallas, Triton backend).

A planning step on a GPU is several launches (the network, the Gaussian head and its noise, the
reward), and an action is 5 CEM iterations x 30 dependent steps of them: the launches and the
``[rows, 200]`` passes through memory between them, not the FLOPs, set the time. When each
particle keeps its function draw for the whole horizon (``ts_inf``, ``thompson``,
``optimistic``), nothing crosses between the draws' rows, so ``fused_rollout`` runs every step in
one launch: each program takes ``block_rows`` particles of one draw, keeps their state in
registers from step to step and writes each step's next state. Per step it computes what
``GaussianDynamics.transition`` computes, with the same functions
(:mod:`~mbrl_bayes.models.transition_math`: standardize, network, bounded variance, noise,
denormalize, ``s + delta``); only the network is the kernel's own.

The hidden activations go through a per-program scratch buffer (L1/L2) rather than registers,
and each hidden layer is a loop over 64-wide input slices that Triton software-pipelines over
two stages (weight loads overlapped with the products): of the layouts compiled for an H100
(``benchmarks/triton_resources.py``) this one spills the fewest registers.

The noise comes in precomputed (the same draws ``transition`` would make from the same keys,
see ``KernelEnsemble.rollout_states``); rewards and terminations do not feed back into the
dynamics, so the planner computes them afterwards for all steps at once.

Layout: the state is padded to ``S = padded_width(target_dim, power_of_two=True)`` columns and
the action to ``A`` (each a power of two >= 16: Triton's tensors are powers of two); the first
layer's weights are ``[S + A, hidden]`` (zero rows under the padding, so padded columns never
reach the network), the last layer's ``[hidden, 2 S]`` (mean, then raw log-variance). Hidden
widths are padded and chunked as in :mod:`~mbrl_bayes.kernels.fused_mlp`. Forward only;
``interpret=True`` runs it with Pallas' interpreter (how it is tested on CPUs); ``jax.vmap`` adds
a grid axis. As with the per-step kernel, XLA's SPMD partitioner cannot split it: when the MPC
shards candidates over several GPUs each computes the whole kernel (correct, not faster).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from mbrl_bayes.kernels.config import KernelConfig
from mbrl_bayes.kernels.fused_mlp import _dense, chunks, pack_stacked_mlp, padded_width
from mbrl_bayes.models.transition_math import denormalized_sample, next_state, standardize

_NUM_STAGES = 2  # Triton's software pipelining of each layer's slice loop

# Rows of ``PackedRollout.state_stats``.
_OBS_MEAN, _OBS_STD, _TARGET_MEAN, _TARGET_STD, _KEEP, _LOGVAR_MAX, _VAR_MIN = range(7)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["weights", "biases", "state_stats", "act_stats"],
                   meta_fields=["obs_dim", "act_dim", "target_dim", "probabilistic"])
@dataclasses.dataclass(frozen=True)
class PackedRollout:
    """An ensemble's draws and standardization, padded for ``fused_rollout`` (a pytree; every
    leaf has the leading draw axis ``k``).

    Attributes:
        weights: per layer ``[k, in, out]`` in the dot dtype: first ``[k, S + A, h1]``, hidden as
            :func:`~mbrl_bayes.kernels.fused_mlp.pack_stacked_mlp`, last ``[k, hL, 2 S]`` (or
            ``[k, hL, S]`` for a deterministic model).
        biases: per layer ``[k, out]``, float32.
        state_stats: ``[k, 8, S]`` float32 rows: input mean and std of the state, target mean
            and std, the state-update mask (1 for the ``obs_dim`` state columns), log-variance
            ``max`` and ``exp(min)``; padded with mean 0, std 1, mask 0.
        act_stats: ``[k, 2, A]`` float32: input mean and std of the action.
        obs_dim, act_dim, target_dim: unpadded widths; probabilistic: with a variance head.
    """

    weights: Tuple[jax.Array, ...]
    biases: Tuple[jax.Array, ...]
    state_stats: jax.Array
    act_stats: jax.Array
    obs_dim: int
    act_dim: int
    target_dim: int
    probabilistic: bool

    @property
    def state_width(self) -> int:
        return int(self.state_stats.shape[-1])

    @property
    def act_width(self) -> int:
        return int(self.act_stats.shape[-1])


def _pad_to(x: jax.Array, width: int, value: float = 0.0) -> jax.Array:
    pad = [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])]
    return jnp.pad(x, pad, constant_values=value)


def pack_rollout(
    layers: Sequence[dict],
    stats: dict,
    logvar_bounds: Optional[dict],
    obs_dim: int,
    config: KernelConfig,
) -> PackedRollout:
    """Pads ``k`` stacked draws ``[{'w': [k, in, out], 'b': [k, out]}, ...]`` (input
    ``obs_dim + act_dim``, output ``target_dim`` means, then as many raw log-variances when
    ``logvar_bounds`` is given) with the model's ``stats`` (``'input'``, ``'target'``
    Normalizers) for ``fused_rollout``."""
    k, in_dim = layers[0]["w"].shape[:2]
    act_dim = in_dim - obs_dim
    probabilistic = logvar_bounds is not None
    target_dim = layers[-1]["w"].shape[-1] // (2 if probabilistic else 1)
    if act_dim < 1 or target_dim < obs_dim:
        raise ValueError(f"layers take {in_dim} inputs and give {target_dim} targets; expected "
                         f"obs_dim={obs_dim} + act_dim >= 1 inputs and >= obs_dim targets.")
    if len(layers) < 2:
        raise ValueError("the rollout kernel needs at least one hidden layer, got a linear model.")
    s, a = padded_width(target_dim, True), padded_width(act_dim, True)
    first, middle, last = layers[0], layers[1:-1], layers[-1]

    # First layer: state rows [0, obs_dim), action rows [S, S + act_dim), zero elsewhere.
    h1 = padded_width(first["w"].shape[-1])
    w_in = jnp.zeros((k, s + a, h1), jnp.float32)
    w_in = w_in.at[:, :obs_dim, : first["w"].shape[-1]].set(first["w"][:, :obs_dim])
    w_in = w_in.at[:, s : s + act_dim, : first["w"].shape[-1]].set(first["w"][:, obs_dim:])
    weights, biases = [w_in], [_pad_to(first["b"], h1)]
    if middle:  # hidden to hidden: padded as for the per-step kernel
        hidden = pack_stacked_mlp(middle, config)
        weights += hidden.weights
        biases += hidden.biases
    # Last layer: [mean | raw log-variance], each padded to S columns.
    fan_in = last["w"].shape[-2]
    w = jnp.pad(last["w"], ((0, 0), (0, padded_width(fan_in) - fan_in), (0, 0)))
    b = last["b"]
    if probabilistic:
        w = jnp.concatenate([_pad_to(w[..., :target_dim], s), _pad_to(w[..., target_dim:], s)],
                            axis=-1)
        b = jnp.concatenate([_pad_to(b[..., :target_dim], s), _pad_to(b[..., target_dim:], s)],
                            axis=-1)
    else:
        w, b = _pad_to(w, s), _pad_to(b, s)
    weights.append(w)
    biases.append(b)

    inputs, targets = stats["input"], stats["target"]
    rows = [
        _pad_to(inputs.mean[:obs_dim], s), _pad_to(inputs.std[:obs_dim], s, 1.0),
        _pad_to(targets.mean, s), _pad_to(targets.std, s, 1.0),
        _pad_to(jnp.ones((obs_dim,), jnp.float32), s),
    ]
    if probabilistic:
        rows += [_pad_to(logvar_bounds["max"], s), _pad_to(jnp.exp(logvar_bounds["min"]), s)]
    else:
        rows += [jnp.zeros((s,), jnp.float32)] * 2
    rows.append(jnp.zeros((s,), jnp.float32))
    state_stats = jnp.broadcast_to(jnp.stack(rows).astype(jnp.float32), (k, 8, s))
    act_stats = jnp.stack([_pad_to(inputs.mean[obs_dim:], a),
                           _pad_to(inputs.std[obs_dim:], a, 1.0)])
    act_stats = jnp.broadcast_to(act_stats.astype(jnp.float32), (k, 2, a))
    return PackedRollout(
        tuple(w.astype(config.dot_dtype) for w in weights),
        tuple(b.astype(jnp.float32) for b in biases),
        state_stats, act_stats, int(obs_dim), int(act_dim), int(target_dim), probabilistic,
    )


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
    """``fused_mlp._network`` with the hidden activations in memory: each hidden layer's
    activated output is written to ``scratch_ref`` (the program's ``[rows, width]`` block of a
    scratch buffer) and read back by the next layer's ``_staged_dense``. The first layer takes
    the register pieces ``h``; the last returns its output pieces.

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


def _rollout_kernel(obs_ref, act_ref, *refs, pieces, activation, dot_dtype, horizon, noisy,
                    interpret):
    """One program: ``block_rows`` particles of one draw through all ``horizon`` steps.

    Operands: ``obs_ref`` [R, S], ``act_ref`` [H, R, A], (``noisy``) noise [H, R, S], the
    layers' weights and biases, the state and action statistics, a [16] int32 zero, the output
    [H, R, S] and the activation scratch [R, width].
    """
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pl_triton

    noise_ref = refs[0] if noisy else None
    refs = refs[1:] if noisy else refs
    param_refs, (state_ref, act_stats_ref, zero_ref, out_ref, scratch_ref) = refs[:-5], refs[-5:]

    def step(t, obs):
        # A 0 the compiler cannot see through: the weights' addresses (and the statistics,
        # reloaded from cache) are computed per step instead of being hoisted out of the loop,
        # where they would hold registers for all of it (benchmarks/triton_resources.py).
        zero = zero_ref[0] if interpret else pl_triton.load(zero_ref.at[0], volatile=True)
        row = lambda i: state_ref[pl.ds(i + zero, 1), :]  # [1, S]
        act_mean, act_std = act_stats_ref[pl.ds(zero, 1), :], act_stats_ref[pl.ds(1 + zero, 1), :]
        x = [standardize(obs, row(_OBS_MEAN), row(_OBS_STD)),
             standardize(act_ref[t], act_mean, act_std)]
        out = _staged_network(x, scratch_ref, param_refs, pieces, activation, dot_dtype, zero,
                              interpret)
        if noisy:
            (mean, raw), noise = out, noise_ref[t]
            logvar_max, var_min = row(_LOGVAR_MAX), row(_VAR_MIN)
        else:
            (mean,), raw, noise, logvar_max, var_min = out, None, None, None, None
        out = denormalized_sample(mean, raw, noise, logvar_max, var_min, row(_TARGET_MEAN),
                                  row(_TARGET_STD))
        obs = next_state(obs, out, keep=row(_KEEP))
        out_ref[t] = obs
        return obs

    jax.lax.fori_loop(0, horizon, step, obs_ref[...])


def check_rollout_inputs(packed: PackedRollout, obs: jax.Array, act: jax.Array,
                         noise: Optional[jax.Array], where: str) -> None:
    """One-line ValueErrors unless ``obs`` [k, m, d], ``act`` [k, H, m, a] and ``noise``
    [k, H, m, t] (or None) fit the ``k`` draws of ``packed``; ``where`` names the caller."""
    k, m, d = obs.shape
    horizon = act.shape[1]
    if d != packed.obs_dim or act.shape != (k, horizon, m, packed.act_dim):
        raise ValueError(f"{where} expects obs [k, m, {packed.obs_dim}] and act "
                         f"[k, H, m, {packed.act_dim}]; got {obs.shape} and {act.shape}.")
    draws = packed.state_stats.shape[0]
    if draws != k:
        raise ValueError(f"obs has rows for {k} draws; the packed weights hold {draws}.")
    t = packed.target_dim
    if noise is not None and noise.shape != (k, horizon, m, t):
        raise ValueError(f"noise must have shape {(k, horizon, m, t)}, got {noise.shape}.")


def fused_rollout(
    packed: PackedRollout,
    obs: jax.Array,
    act: jax.Array,
    noise: Optional[jax.Array],
    activation: Callable[[jax.Array], jax.Array],
    config: KernelConfig,
) -> jax.Array:
    """Draw ``i`` of ``packed`` rolled out from ``obs[i]`` under ``act[i]``, in one launch.

    Args:
        packed: from :func:`pack_rollout`, ``k`` draws.
        obs: [k, m, d] start states (``m`` particles per draw).
        act: [k, H, m, a] actions (unstandardized), step-major per draw.
        noise: [k, H, m, t] standard normal aleatoric noise (``t`` = target_dim), or None:
            the mean prediction (a deterministic model has no noise).
    Returns:
        [k, H, m, t]: per step the next state in columns ``[0, d)`` and, for ``t > d``, the
        step's learned reward in column ``d``.
    """
    from jax.experimental import pallas as pl  # imported on use: it costs ~1 s at startup
    from jax.experimental.pallas import triton as pl_triton

    check_rollout_inputs(packed, obs, act, noise, "fused_rollout")
    k, m, _ = obs.shape
    horizon, t = act.shape[1], packed.target_dim
    s, a, r = packed.state_width, packed.act_width, config.block_rows
    rows = r * math.ceil(m / r)

    def rows_padded(x, width):  # [..., m, w] -> [..., rows, width], float32
        pad = [(0, 0)] * (x.ndim - 2) + [(0, rows - m), (0, width - x.shape[-1])]
        return jnp.pad(x.astype(jnp.float32), pad)

    hidden = [w.shape[-1] for w in packed.weights[:-1]]
    pieces = (((0, s), (s, a)),) + tuple(chunks(h) for h in hidden)
    pieces += (((0, s), (s, s)) if packed.probabilistic else ((0, s),),)

    def per_step(width):  # [k, H, rows, width] in blocks of one draw's r rows, every step
        return pl.BlockSpec((pl.squeezed, horizon, r, width), lambda i, j: (i, 0, j, 0))

    in_specs = [pl.BlockSpec((pl.squeezed, r, s), lambda i, j: (i, j, 0)), per_step(a)]
    operands = [rows_padded(obs, s), rows_padded(act, a)]
    use_noise = packed.probabilistic and noise is not None
    if use_noise:
        in_specs.append(per_step(s))
        operands.append(rows_padded(noise, s))
    for w, b in zip(packed.weights, packed.biases, strict=True):
        in_specs += [pl.BlockSpec((pl.squeezed,) + w.shape[1:], lambda i, j: (i, 0, 0)),
                     pl.BlockSpec((pl.squeezed, b.shape[1]), lambda i, j: (i, 0))]
        operands += [w, b]
    for stats in (packed.state_stats, packed.act_stats):
        in_specs.append(pl.BlockSpec((pl.squeezed,) + stats.shape[1:], lambda i, j: (i, 0, 0)))
        operands.append(stats)
    in_specs.append(pl.BlockSpec((16,), lambda i, j: (0,)))
    operands.append(jnp.zeros((16,), jnp.int32))
    if packed.probabilistic and not use_noise:  # the mean: drop the variance head
        pieces = pieces[:-1] + (((0, s),),)
    kernel = functools.partial(
        _rollout_kernel, pieces=pieces, activation=activation,
        dot_dtype=jnp.dtype(config.dot_dtype), horizon=horizon, noisy=use_noise,
        interpret=config.interpret,
    )
    compiler_params = None
    if not config.interpret:
        compiler_params = pl_triton.CompilerParams(num_warps=config.num_warps,
                                                   num_stages=_NUM_STAGES)
    width = max(hidden)  # each program's activations, [block_rows, widest hidden layer]
    out_shape = [jax.ShapeDtypeStruct((k, horizon, rows, s), jnp.float32),
                 jax.ShapeDtypeStruct((k, rows, width), config.dot_dtype)]
    out_specs = [per_step(s), pl.BlockSpec((pl.squeezed, r, width), lambda i, j: (i, j, 0))]
    out = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(k, rows // r),
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=compiler_params,
        interpret=config.interpret,
        name="fused_rollout",
    )(*operands)[0]
    return out[:, :, :m, :t]
