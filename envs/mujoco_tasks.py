"""Rewards and terminations, in JAX, of gymnasium's MuJoCo v5 tasks.

Each function mirrors the env's ``step`` (gymnasium 1.x, ``*_v5.py``) for the default
weights, which `envs.make` pins (`PINNED_KWARGS`). Arrays carry arbitrary leading batch dims:
``obs, next_obs [..., obs_dim]``, ``act [..., act_dim]`` -> ``[...]`` (float32 rewards, bool
terminations). Actions enter the control cost unclipped, as in the envs (MuJoCo clamps the
control internally, but the reward sees the action passed to ``step``).
"""

from __future__ import annotations

import jax.numpy as jnp

# Seconds per env step (model timestep * frame_skip), used for forward velocities.
HALF_CHEETAH_DT = 0.01 * 5
HOPPER_DT = 0.002 * 4

PINNED_KWARGS: dict[str, dict[str, object]] = {
    "halfcheetah": dict(
        exclude_current_positions_from_observation=False,
        frame_skip=5,
        forward_reward_weight=1.0,
        ctrl_cost_weight=0.1,
    ),
    "hopper": dict(
        exclude_current_positions_from_observation=False,
        frame_skip=4,
        forward_reward_weight=1.0,
        ctrl_cost_weight=1e-3,
        healthy_reward=1.0,
        terminate_when_unhealthy=True,
        healthy_state_range=(-100.0, 100.0),
        healthy_z_range=(0.7, float("inf")),
        healthy_angle_range=(-0.2, 0.2),
    ),
    "reacher": dict(reward_dist_weight=1.0, reward_control_weight=1.0),
    "pusher": dict(reward_near_weight=0.5, reward_dist_weight=1.0, reward_control_weight=0.1),
    "inverted_pendulum": dict(),
}


def _f32(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.asarray(x, jnp.float32)


def _never(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    del obs, act
    return jnp.zeros(jnp.shape(next_obs)[:-1], dtype=bool)


def _norm(v: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(jnp.sum(v**2, axis=-1))


# --- HalfCheetah-v5 -------------------------------------------------------------------------
# obs [..., 18] = (qpos[0:9], qvel[0:9]); obs[0] is the root x position (exposed via
# exclude_current_positions_from_observation=False). act [..., 6] in [-1, 1].


def halfcheetah_reward(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """``(x' - x) / 0.05 - 0.1 * sum(a^2)``."""
    forward = (_f32(next_obs)[..., 0] - _f32(obs)[..., 0]) / HALF_CHEETAH_DT
    return forward - 0.1 * jnp.sum(_f32(act) ** 2, axis=-1)


halfcheetah_termination = _never


# --- Hopper-v5 ------------------------------------------------------------------------------
# obs [..., 12] = (qpos[0:6], clip(qvel[0:6], -10, 10)); obs[0] = x, obs[1] = z (torso
# height), obs[2] = torso angle. act [..., 3] in [-1, 1].


def hopper_is_healthy(next_obs: jnp.ndarray) -> jnp.ndarray:
    """Hopper-v5's ``is_healthy``: ``[..., 12] -> [...]`` bool.

    ``0.7 < z``, ``-0.2 < angle < 0.2`` and every entry of ``obs[2:]`` in ``(-100, 100)``.
    The env tests its unclipped velocities against the last bound while the observation clips
    them to +-10, so the functions disagree only if a joint speed exceeds 100 (never seen in
    practice). Non-finite values are unhealthy, as in the env.
    """
    next_obs = _f32(next_obs)
    z, angle, state = next_obs[..., 1], next_obs[..., 2], next_obs[..., 2:]
    healthy_state = jnp.all((state > -100.0) & (state < 100.0), axis=-1)
    return healthy_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)


def hopper_reward(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """``healthy(next_obs) + (x' - x) / 0.008 - 1e-3 * sum(a^2)``."""
    healthy = hopper_is_healthy(next_obs).astype(jnp.float32)
    forward = (_f32(next_obs)[..., 0] - _f32(obs)[..., 0]) / HOPPER_DT
    return healthy + forward - 1e-3 * jnp.sum(_f32(act) ** 2, axis=-1)


def hopper_termination(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """Terminated when the post-step state is unhealthy."""
    del obs, act
    return ~hopper_is_healthy(next_obs)


# --- Reacher-v5 -----------------------------------------------------------------------------
# obs [..., 10] = (cos q[0:2], sin q[0:2], target xy, qdot[0:2], (fingertip - target)[xy]).
# The reward is computed after the step; fingertip and target share z = 0.01, so the xy
# difference in the observation is the whole vector. act [..., 2] in [-1, 1].


def reacher_reward(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """``-||next_obs[8:10]|| - sum(a^2)``."""
    del obs
    return -_norm(_f32(next_obs)[..., 8:10]) - jnp.sum(_f32(act) ** 2, axis=-1)


reacher_termination = _never


# --- Pusher-v5 ------------------------------------------------------------------------------
# obs [..., 23] = (qpos[0:7], qvel[0:7], tips_arm xyz, object xyz, goal xyz), after the step.
# act [..., 7] in [-2, 2].


def pusher_reward(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """``-0.5 ||object - tip|| - ||object - goal|| - 0.1 sum(a^2)`` (post-step positions)."""
    del obs
    next_obs = _f32(next_obs)
    tip, obj, goal = next_obs[..., 14:17], next_obs[..., 17:20], next_obs[..., 20:23]
    control = jnp.sum(_f32(act) ** 2, axis=-1)
    return -0.5 * _norm(obj - tip) - _norm(obj - goal) - 0.1 * control


pusher_termination = _never


# --- InvertedPendulum-v5 --------------------------------------------------------------------
# obs [..., 4] = (cart x, pole angle, cart velocity, pole angular velocity). act [..., 1]
# in [-3, 3].


def inverted_pendulum_termination(
    obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray
) -> jnp.ndarray:
    """Terminated when ``next_obs`` has a non-finite entry or ``|angle| > 0.2``."""
    del obs, act
    next_obs = _f32(next_obs)
    finite = jnp.all(jnp.isfinite(next_obs), axis=-1)
    return ~finite | (jnp.abs(next_obs[..., 1]) > 0.2)


def inverted_pendulum_reward(
    obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray
) -> jnp.ndarray:
    """``1`` while the step does not terminate, else ``0`` (v5 semantics)."""
    terminated = inverted_pendulum_termination(obs, act, next_obs)
    return 1.0 - terminated.astype(jnp.float32)
