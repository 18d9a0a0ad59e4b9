"""Pendulum-v1 (gymnasium classic control) in JAX: reward and exact dynamics.

Observation (float32, 3 entries): ``(cos(theta), sin(theta), theta_dot)``, ``theta = 0``
upright. Action: torque ``u`` in ``[-2, 2]`` (the env clips it). Pendulum-v1 charges the
*pre-step* state::

    reward = -(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)

so `reward_fn` reads ``theta = atan2(sin, cos)`` and ``theta_dot`` from ``obs``, not
``next_obs``. Never terminates; truncated after 200 steps. Dynamics (``dt = 0.05``, ``g = 10``,
``m = l = 1``)::

    theta_dot' = clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -8, 8)
    theta'     = theta + theta_dot' dt
"""

from __future__ import annotations

import jax.numpy as jnp

GRAVITY = 10.0  # Pendulum-v1's default g; `envs.make` pins it.
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_SPEED = 8.0
MAX_TORQUE = 2.0
EPISODE_LENGTH = 200

OBS_DIM = 3
ACT_DIM = 1


def reward_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """JAX reward: ``obs, next_obs [..., 3]``, ``act [..., 1]`` -> ``[...]`` float32.

    Uses the pre-step ``obs``; ``atan2`` already lies in ``[-pi, pi]``, which is what
    gymnasium's ``angle_normalize`` returns.
    """
    del next_obs
    obs = jnp.asarray(obs, jnp.float32)
    torque = jnp.clip(jnp.asarray(act, jnp.float32)[..., 0], -MAX_TORQUE, MAX_TORQUE)
    theta = jnp.arctan2(obs[..., 1], obs[..., 0])
    theta_dot = obs[..., 2]
    return -(theta**2 + 0.1 * theta_dot**2 + 0.001 * torque**2)


def termination_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """Pendulum-v1 never terminates: ``[...]`` of False."""
    del obs, act
    return jnp.zeros(jnp.shape(next_obs)[:-1], dtype=bool)


def step_obs(obs: jnp.ndarray, act: jnp.ndarray) -> jnp.ndarray:
    """Exact JAX dynamics: ``obs [..., 3]``, ``act [..., 1]`` -> ``next_obs [..., 3]`` float32."""
    obs = jnp.asarray(obs, jnp.float32)
    torque = jnp.clip(jnp.asarray(act, jnp.float32)[..., 0], -MAX_TORQUE, MAX_TORQUE)
    theta = jnp.arctan2(obs[..., 1], obs[..., 0])
    theta_dot = obs[..., 2]
    theta_acc = 3 * GRAVITY / (2 * LENGTH) * jnp.sin(theta) + 3.0 / (MASS * LENGTH**2) * torque
    new_theta_dot = jnp.clip(theta_dot + theta_acc * DT, -MAX_SPEED, MAX_SPEED)
    new_theta = theta + new_theta_dot * DT
    return jnp.stack([jnp.cos(new_theta), jnp.sin(new_theta), new_theta_dot], axis=-1)
