"""MountainCarContinuous-v0 (gymnasium classic control) in JAX: reward, termination, dynamics.

Observation (float32, 2 entries): ``(position, velocity)``, position in ``[-1.2, 0.6]``,
velocity in ``[-0.07, 0.07]``. Action: force ``a`` in ``[-1, 1]`` (the env clips it for the
dynamics, but charges the *unclipped* action). Dynamics (``power = 0.0015``)::

    velocity' = clip(velocity + clip(a, -1, 1) power - 0.0025 cos(3 position), -0.07, 0.07)
    position' = clip(position + velocity', -1.2, 0.6);  velocity' = 0 if at -1.2 moving left

Terminates when ``position' >= 0.45`` and ``velocity' >= 0`` (the flag). Reward::

    reward = 100 [terminated] - 0.1 a^2

Starts at rest at a uniform position in ``[-0.6, -0.4]`` (the valley); truncated after 999
steps. The flag is a sparse reward: the engine is too weak to climb directly, the car must swing
back and forth (~100 steps), and a planner that trusts only the mean of a model fitted to the
valley sees just the action cost and learns to stand still.

With ``envs.task("mountaincar", action_repeat=k)`` each agent step holds one action for ``k``
env steps (`envs.ActionRepeat`); the reward of such a block is `block_reward_fn` (see there).
"""

from __future__ import annotations

import jax.numpy as jnp

MIN_POSITION, MAX_POSITION = -1.2, 0.6
MAX_SPEED = 0.07
GOAL_POSITION, GOAL_VELOCITY = 0.45, 0.0
POWER = 0.0015
FLAG_REWARD = 100.0
ACTION_COST = 0.1
EPISODE_LENGTH = 999

OBS_DIM = 2
ACT_DIM = 1


def termination_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """At the flag: ``next_obs[..., 0] >= 0.45`` and ``next_obs[..., 1] >= 0``; ``[...]`` bool."""
    del obs, act
    next_obs = jnp.asarray(next_obs, jnp.float32)
    return (next_obs[..., 0] >= GOAL_POSITION) & (next_obs[..., 1] >= GOAL_VELOCITY)


def reward_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """JAX reward: ``obs, next_obs [..., 2]``, ``act [..., 1]`` -> ``[...]`` float32."""
    return block_reward_fn(1)(obs, act, next_obs)


def block_reward_fn(repeat: int):
    """Reward of ``repeat`` env steps under one held action (`envs.ActionRepeat`)::

        100 [terminated(next_obs)] - 0.1 repeat a^2

    Exact for every block except the one that reaches the flag, where the env stops after the
    ``j <= repeat`` steps it took and charges ``0.1 j a^2``: that block is over-charged by
    ``0.1 (repeat - j) a^2 <= 0.1 (repeat - 1)`` (next to the +100).
    """
    repeat = int(repeat)

    def fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
        act = jnp.asarray(act, jnp.float32)
        flag = termination_fn(obs, act, next_obs).astype(jnp.float32)
        return (FLAG_REWARD * flag - ACTION_COST * repeat * act[..., 0] ** 2).astype(jnp.float32)

    return fn


def step_obs(obs: jnp.ndarray, act: jnp.ndarray) -> jnp.ndarray:
    """Exact JAX dynamics: ``obs [..., 2]``, ``act [..., 1]`` -> ``next_obs [..., 2]`` float32."""
    obs = jnp.asarray(obs, jnp.float32)
    force = jnp.clip(jnp.asarray(act, jnp.float32)[..., 0], -1.0, 1.0)
    position, velocity = obs[..., 0], obs[..., 1]
    velocity = velocity + force * POWER - 0.0025 * jnp.cos(3 * position)
    velocity = jnp.clip(velocity, -MAX_SPEED, MAX_SPEED)
    position = jnp.clip(position + velocity, MIN_POSITION, MAX_POSITION)
    velocity = jnp.where((position == MIN_POSITION) & (velocity < 0), 0.0, velocity)
    return jnp.stack([position, velocity], axis=-1)
