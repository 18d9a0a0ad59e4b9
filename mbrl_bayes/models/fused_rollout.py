"""A PETS ensemble's whole planning horizon in one GPU kernel (Pallas, Triton backend).

``fused_stacked_mlp`` makes a step's network one kernel, but a planning step is still several
launches (the network, the Gaussian head and its noise, the reward), and an action is 5 CEM
iterations x 30 dependent steps of them: on a GPU the launches and the ``[rows, 200]`` passes
through memory between them, not the FLOPs, set the time. When each particle keeps its function
draw for the whole horizon (``ts_inf``, ``thompson``, ``optimistic``), nothing crosses between
the draws' rows, so ``fused_rollout`` runs every step in one launch: each program takes
``block_rows`` particles of one draw, keeps their state in registers from step to step and writes
each step's next state (``staged``: the hidden activations go through a scratch buffer, see
``FusedMLPConfig``). Per step it computes what ``GaussianDynamics.transition`` computes:

    x = [(obs - mean_in) / std_in, (act - mean_in) / std_in]        (input standardization)
    mean, raw = network(x)                                         (the draw's MLP)
    std = sqrt(exp(min) + exp(min(raw, max)) / (1 + exp(-|raw - max|)))   (PETS bounds)
    out = (mean + std * noise) * std_target + mean_target
    next_obs = obs + out[:d]        (and the learned reward, if any, is out[d])

The noise comes in precomputed (the same draws ``transition`` would make from the same keys,
see ``ProbabilisticEnsemble.rollout_states``); rewards and terminations do not feed back into
the dynamics, so the planner computes them afterwards for all steps at once.

Layout: the state is padded to ``S = padded_width(target_dim, power_of_two=True)`` columns and
the action to ``A`` (each a power of two >= 16: Triton's tensors are powers of two); the first
layer's weights are ``[S + A, hidden]`` (zero rows under the padding, so padded columns never
reach the network), the last layer's ``[hidden, 2 S]`` (mean, then raw log-variance). Hidden
widths are padded and chunked as in :mod:`~mbrl_bayes.models.fused_mlp`. Forward only;
``interpret=True`` runs it with Pallas' interpreter (how it is tested on CPUs); ``jax.vmap`` adds
a grid axis. As with the per-step kernel, XLA's SPMD partitioner cannot split it: when the MPC
shards candidates over several GPUs each computes the whole kernel (correct, not faster).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from mbrl_bayes.models.fused_mlp import (
    FusedMLPConfig,
    _network,
    _staged_network,
    _width,
    chunks,
    pack_stacked_mlp,
    padded_width,
)
from mbrl_bayes.models.gaussian import bounded_variance

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
            :func:`~mbrl_bayes.models.fused_mlp.pack_stacked_mlp`, last ``[k, hL, 2 S]`` (or
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
    config: FusedMLPConfig,
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
    h1 = _width(first["w"].shape[-1], config)
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
    w = jnp.pad(last["w"], ((0, 0), (0, _width(fan_in, config) - fan_in), (0, 0)))
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


def _rollout_kernel(obs_ref, act_ref, *refs, pieces, activation, dot_dtype, horizon, noisy,
                    staged, interpret):
    """One program: ``block_rows`` particles of one draw through all ``horizon`` steps.

    Operands: ``obs_ref`` [R, S], ``act_ref`` [H, R, A], (``noisy``) noise [H, R, S], the
    layers' weights and biases, the state and action statistics, a [16] int32 zero, the output
    [H, R, S] and (``staged``) the activation scratch [R, width].
    """
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pl_triton

    noise_ref = refs[0] if noisy else None
    refs = refs[1:] if noisy else refs
    scratch_ref = refs[-1] if staged else None
    refs = refs[:-1] if staged else refs
    param_refs, (state_ref, act_stats_ref, zero_ref, out_ref) = refs[:-4], refs[-4:]

    def step(t, obs):
        # A 0 the compiler cannot see through: the weights' addresses (and the statistics,
        # reloaded from cache) are computed per step instead of being hoisted out of the loop,
        # where they would hold registers for all of it (benchmarks/triton_resources.py).
        zero = zero_ref[0] if interpret else pl_triton.load(zero_ref.at[0], volatile=True)
        row = lambda i: state_ref[pl.ds(i + zero, 1), :]  # [1, S]
        obs_mean, obs_std = row(_OBS_MEAN), row(_OBS_STD)
        target_mean, target_std = row(_TARGET_MEAN), row(_TARGET_STD)
        keep, logvar_max, var_min = row(_KEEP), row(_LOGVAR_MAX), row(_VAR_MIN)
        act_mean, act_std = act_stats_ref[pl.ds(zero, 1), :], act_stats_ref[pl.ds(1 + zero, 1), :]
        x = [(obs - obs_mean) / obs_std, (act_ref[t] - act_mean) / act_std]
        if staged:
            out = _staged_network(x, scratch_ref, param_refs, pieces, activation, dot_dtype,
                                  zero, interpret)
        else:
            out = _network(x, param_refs, pieces, activation, dot_dtype, zero)
        if noisy:
            mean, raw = out
            out = mean + jnp.sqrt(bounded_variance(raw, logvar_max, var_min)) * noise_ref[t]
        else:
            (out,) = out
        next_obs = obs * keep + (out * target_std + target_mean)
        out_ref[t] = next_obs
        return next_obs

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
    config: FusedMLPConfig,
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
    pieces = (((0, s), (s, a)),) + tuple(
        chunks(h, config.max_chunk, config.pad_to_power_of_two) for h in hidden)
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
        staged=config.staged, interpret=config.interpret,
    )
    compiler_params = None
    if not config.interpret:
        # Unstaged, Triton's software pipelining would buffer every weight chunk loaded in the
        # time loop in shared memory (1.8 MB at 3 stages for the halfcheetah network): one stage.
        stages = config.num_stages or (3 if config.staged else 1)
        compiler_params = pl_triton.CompilerParams(num_warps=config.num_warps, num_stages=stages)
    out_shape = [jax.ShapeDtypeStruct((k, horizon, rows, s), jnp.float32)]
    out_specs = [per_step(s)]
    if config.staged:  # each program's activations, [block_rows, widest hidden layer]
        width = max(hidden)
        out_shape.append(jax.ShapeDtypeStruct((k, rows, width), config.dot_dtype))
        out_specs.append(pl.BlockSpec((pl.squeezed, r, width), lambda i, j: (i, j, 0)))
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
