"""Sparse-reward swing-up tasks: reward 1 in a small target region, 0 elsewhere.

Dense swing-up rewards grade every state, so a planner that follows the mean model is led
upwards step by step; with these rewards, states the data has never reached all look the same
(0), and only exploration that goes to unvisited states finds the reward.

``cartpole_swingup_sparse``: `envs.cartpole_swingup`'s physics, observation and reset, with
DeepMind Control's ``swingup_sparse`` idea (Tassa et al. 2018) for the reward, from the post-step
observation::

    reward = 1  if cos(theta') > 0.95 and |x'| < 0.25  else 0

(within ~18 degrees of upright and the cart near the centre; DMC uses 0.995 and a cart bounded
at 0.25; no action cost). Never terminates; 200 steps.

``pendulum_sparse``: Pendulum-v1's dynamics (``g = 10``, torque in ``[-2, 2]``), but starting
*hanging down* (``theta = pi`` plus N(0, 0.1^2) on angle and speed) and rewarded only near the
top::

    reward = 1  if cos(theta') > 0.95  else 0

Why this task: the torque limit (2) is below what holding the pole sideways needs (``m g l / 2 =
5``), so reaching the top takes several coordinated swings that pump energy into states a
random policy (and a model fitted to its data) has not visited; a planner whose horizon sees no
reward in the known region has nothing to follow, which is where directed exploration
(optimism, disagreement) should pay. Pendulum-v1 itself starts anywhere on the circle (often at
the top) and charges every state, so it cannot show this. Never terminates; 200 steps.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import jax.numpy as jnp
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from envs.cartpole_swingup import CartpoleSwingupEnv

CARTPOLE_UPRIGHT_COS = 0.95
CARTPOLE_CENTRE = 0.25
PENDULUM_UPRIGHT_COS = 0.95
RESET_NOISE_SCALE = 0.1
EPISODE_LENGTH = 200


def _cartpole_sparse(xp: Any, next_obs: Any) -> Any:
    upright = next_obs[..., 2] > CARTPOLE_UPRIGHT_COS
    centred = xp.abs(next_obs[..., 0]) < CARTPOLE_CENTRE
    return (upright & centred).astype(xp.float32)


def _pendulum_sparse(xp: Any, next_obs: Any) -> Any:
    return (next_obs[..., 0] > PENDULUM_UPRIGHT_COS).astype(xp.float32)


def cartpole_reward_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """``cartpole_swingup_sparse`` reward: ``obs, next_obs [..., 5]`` -> ``[...]`` float32."""
    del obs, act
    return _cartpole_sparse(jnp, jnp.asarray(next_obs, jnp.float32))


def pendulum_reward_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """``pendulum_sparse`` reward: ``obs, next_obs [..., 3]`` -> ``[...]`` float32."""
    del obs, act
    return _pendulum_sparse(jnp, jnp.asarray(next_obs, jnp.float32))


class CartpoleSwingupSparseEnv(CartpoleSwingupEnv):
    """`CartpoleSwingupEnv` with the sparse reward (module docstring)."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(_cartpole_sparse(np, obs)), terminated, truncated, info


class PendulumSparseEnv(PendulumEnv):
    """Pendulum-v1 started hanging down, with the sparse reward (module docstring)."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Hanging (``theta = pi``) plus N(0, 0.1^2) on angle and angular speed."""
        gym.Env.reset(self, seed=seed)
        self.state = np.array([np.pi, 0.0]) + RESET_NOISE_SCALE * self.np_random.standard_normal(2)
        self.last_u = None
        return self._get_obs(), {}

    def step(self, u: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(u)
        return obs, float(_pendulum_sparse(np, obs)), terminated, truncated, info
