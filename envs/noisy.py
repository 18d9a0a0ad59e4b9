"""Noisy-dynamics variants of the classic tasks: a ground truth for calibration.

``pendulum_noisy`` and ``cartpole_swingup_noisy`` are ``pendulum`` and ``cartpole_swingup``
with Gaussian process noise of known std added to the physical state after every step::

    state' = f(state, action) + eps,    eps ~ N(0, diag(STATE_NOISE_STD**2))

(pendulum state ``(theta, theta_dot)``; cart-pole ``(x, x_dot, theta, theta_dot)``), drawn from
the env's ``np_random`` (reproducible with ``reset(seed=...)``). Rewards and terminations are
the noise-free tasks' functions of the observations (the cart-pole reward is recomputed from the
noisy observation), so the registry reuses their JAX reward and termination functions.

The noise is on the state, so an angle's ``cos``/``sin`` observations are not exactly Gaussian;
`next_obs_moments` gives the exact mean and variance of each next observation entry (Gaussian
noise moments of ``cos``/``sin`` in closed form): the "oracle" predictive whose intervals a
calibrated model should match. For the small angle noise used here its central 90% Gaussian
interval covers 90% of env transitions (tests/test_envs.py).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from envs import cartpole_swingup, pendulum

# Std of the noise on (theta, theta_dot) per step: rad, rad/s.
PENDULUM_NOISE_STD = (0.05, 0.2)
# Std of the noise on (x, x_dot, theta, theta_dot) per step: m, m/s, rad, rad/s.
CARTPOLE_NOISE_STD = (0.01, 0.05, 0.02, 0.1)


class NoisyPendulumEnv(PendulumEnv):
    """Pendulum-v1 plus N(0, diag(PENDULUM_NOISE_STD^2)) on ``(theta, theta_dot)`` each step."""

    def step(self, u: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        _, reward, terminated, truncated, info = super().step(u)  # reward: pre-step state
        self.state = self.state + np.asarray(PENDULUM_NOISE_STD) * self.np_random.standard_normal(2)
        return self._get_obs(), reward, terminated, truncated, info


class NoisyCartpoleSwingupEnv(cartpole_swingup.CartpoleSwingupEnv):
    """The cart-pole swing-up plus N(0, diag(CARTPOLE_NOISE_STD^2)) on its state each step."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        _, _, terminated, truncated, info = super().step(action)  # checks the action
        self.state = self.state + np.asarray(CARTPOLE_NOISE_STD) * self.np_random.standard_normal(4)
        obs = self._obs()
        clipped = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        reward = float(cartpole_swingup._reward(np, obs.astype(np.float64), clipped))
        return obs, reward, terminated, truncated, info


def _angle_moments(theta: jnp.ndarray, std: float) -> tuple[jnp.ndarray, ...]:
    """Mean and variance of ``cos(theta + e)`` and ``sin(theta + e)``, ``e ~ N(0, std^2)``."""
    # Var = (1 - e^{-s^2}) (1 -/+ cos(2 theta) e^{-s^2}) / 2, written without the float32
    # cancellation of E[cos^2] - E[cos]^2 near theta = 0 or pi.
    a = -jnp.expm1(-(std**2))
    cos, sin, cos2 = jnp.cos(theta), jnp.sin(theta), jnp.cos(2.0 * theta)
    damp = jnp.exp(-0.5 * std**2)
    cos_var = 0.5 * a * (2.0 * sin**2 + a * cos2)
    sin_var = 0.5 * a * (2.0 * cos**2 - a * cos2)
    return cos * damp, sin * damp, cos_var, sin_var


def next_obs_moments(name: str, obs: jnp.ndarray, act: jnp.ndarray
                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Exact mean and variance of the next observation of noisy task ``name``.

    Args:
        name: ``"pendulum_noisy"`` or ``"cartpole_swingup_noisy"``.
        obs: observations ``[..., d]``; act: actions ``[..., a]``.

    Returns:
        ``(mean, var)``, each ``[..., d]`` float32: the moments of each next observation entry
        (entries are independent given ``obs, act`` except ``cos``/``sin`` of the same angle).
    """
    if name == "pendulum_noisy":
        nxt = pendulum.step_obs(obs, act)
        theta = jnp.arctan2(nxt[..., 1], nxt[..., 0])
        s_theta, s_theta_dot = PENDULUM_NOISE_STD
        cos_m, sin_m, cos_v, sin_v = _angle_moments(theta, s_theta)
        mean = jnp.stack([cos_m, sin_m, nxt[..., 2]], -1)
        var = jnp.stack([cos_v, sin_v, jnp.full_like(theta, s_theta_dot**2)], -1)
    elif name == "cartpole_swingup_noisy":
        nxt = cartpole_swingup.step_obs(obs, act)
        theta = jnp.arctan2(nxt[..., 3], nxt[..., 2])
        s_x, s_x_dot, s_theta, s_theta_dot = CARTPOLE_NOISE_STD
        cos_m, sin_m, cos_v, sin_v = _angle_moments(theta, s_theta)
        mean = jnp.stack([nxt[..., 0], nxt[..., 1], cos_m, sin_m, nxt[..., 4]], -1)
        ones = jnp.ones_like(theta)
        var = jnp.stack([s_x**2 * ones, s_x_dot**2 * ones, cos_v, sin_v, s_theta_dot**2 * ones],
                        -1)
    else:
        raise ValueError(f"next_obs_moments: no noisy task {name!r}; known: pendulum_noisy, "
                         "cartpole_swingup_noisy.")
    return mean.astype(jnp.float32), var.astype(jnp.float32)
