"""Multi-step (k-step) open-loop prediction error of a dynamics function."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_bayes.metrics.mixture import Array, _is_concrete

StepFn = Callable[[jax.Array, jax.Array], jax.Array]


def kstep_rollout_error(step_fn: StepFn, obs: Array, act: Array,
                        horizon: Optional[int] = None, squared: bool = False) -> jax.Array:
    """Open-loop rollout error at each horizon ``h = 1 .. H``.

    From every start ``t`` with a full window (``t = 0 .. T - H``) of every trajectory, the state
    is rolled out open loop, ``x_0 = obs[t]``, ``x_h = step_fn(x_{h-1}, act[t + h - 1])``, and
    compared with ``obs[t + h]``. All starts are rolled out together as one batch, horizons with
    ``lax.scan``.

    Args:
        step_fn: batched deterministic dynamics, ``(obs [m, d], act [m, a]) -> next_obs [m, d]``
            (e.g. a model's mean prediction, with params and function draws closed over).
        obs: true observations [T + 1, d], or [B, T + 1, d] for ``B`` trajectories; each
            trajectory must be contiguous (no resets inside).
        act: actions [T, a], or [B, T, a].
        horizon: ``H``, in 1 .. T; defaults to ``T``.
        squared: return the mean squared error instead of its root.

    Returns:
        [H]: entry ``h - 1`` is the RMSE (or MSE) of ``h``-step predictions, averaged over all
        starts, trajectories and observation dimensions.
    """
    obs, act = jnp.asarray(obs), jnp.asarray(act)
    if obs.ndim == 2 and act.ndim == 2:
        obs, act = obs[None], act[None]
    if obs.ndim != 3 or act.ndim != 3:
        raise ValueError(f"kstep_rollout_error: expected obs [T + 1, d] and act [T, a] (or with a "
                         f"leading batch axis), got {obs.shape} and {act.shape}.")
    if obs.shape[0] != act.shape[0] or obs.shape[1] != act.shape[1] + 1:
        raise ValueError(f"kstep_rollout_error: obs {obs.shape} must have one more step than "
                         f"act {act.shape} (obs [B, T + 1, d], act [B, T, a]).")
    num_trajectories, num_steps = act.shape[0], act.shape[1]
    if num_steps < 1:
        raise ValueError("kstep_rollout_error: need at least one action (T >= 1).")
    horizon = num_steps if horizon is None else horizon
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or not (
            1 <= horizon <= num_steps):
        raise ValueError(f"kstep_rollout_error: horizon must be an integer in 1 .. {num_steps}, "
                         f"got {horizon!r}.")
    for name, value in (("obs", obs), ("act", act)):
        if _is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
            raise ValueError(f"kstep_rollout_error: {name} contains NaN or inf.")

    num_starts = num_steps - horizon + 1
    window = jnp.arange(num_starts)[None, :] + jnp.arange(horizon)[:, None]  # [H, S]

    def per_horizon(x: jax.Array) -> jax.Array:  # [B, H, S, ...] -> [H, B * S, ...]
        x = jnp.moveaxis(x, 1, 0)
        return x.reshape((horizon, num_trajectories * num_starts) + x.shape[3:])

    actions = per_horizon(act[:, window])
    targets = per_horizon(obs[:, window + 1])
    initial = obs[:, :num_starts].reshape(num_trajectories * num_starts, obs.shape[-1])

    predicted = jax.eval_shape(step_fn, initial, actions[0])
    if getattr(predicted, "shape", None) != initial.shape:
        raise ValueError(f"kstep_rollout_error: step_fn must map obs {initial.shape} and act "
                         f"{actions[0].shape} to next_obs {initial.shape}, got "
                         f"{getattr(predicted, 'shape', type(predicted).__name__)}.")

    def step(state, inputs):
        action, target = inputs
        next_state = step_fn(state, action).astype(state.dtype)
        return next_state, jnp.mean(jnp.square(next_state - target))

    _, mse = jax.lax.scan(step, initial, (actions, targets))
    return mse if squared else jnp.sqrt(mse)
