"""The task registry: names -> `TaskSpec`; `make`, `task`, `names`, `jax_dynamics`."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import jax
import numpy as np

from envs import cartpole_swingup, mountaincar, mujoco_tasks, noisy, pendulum, sparse_tasks
from envs.spec import DynamicsFn, TaskSpec, TransitionFn
from envs.wrappers import ActionRepeat, ValidateAction

_CARTPOLE_SWINGUP_SPEC = gym.envs.registration.EnvSpec(
    id="CartpoleSwingup-v0",
    entry_point=cartpole_swingup.CartpoleSwingupEnv,
    max_episode_steps=cartpole_swingup.EPISODE_LENGTH,
)
_NOISY_SPECS = {  # envs/noisy.py: process noise of known std, a ground truth for calibration
    "cartpole_swingup_noisy": gym.envs.registration.EnvSpec(
        id="CartpoleSwingupNoisy-v0", entry_point=noisy.NoisyCartpoleSwingupEnv,
        max_episode_steps=cartpole_swingup.EPISODE_LENGTH),
    "pendulum_noisy": gym.envs.registration.EnvSpec(
        id="PendulumNoisy-v0", entry_point=noisy.NoisyPendulumEnv,
        max_episode_steps=pendulum.EPISODE_LENGTH),
}
_CARTPOLE_SWINGUP_SPARSE_SPEC = gym.envs.registration.EnvSpec(
    id="CartpoleSwingupSparse-v0",
    entry_point=sparse_tasks.CartpoleSwingupSparseEnv,
    max_episode_steps=sparse_tasks.EPISODE_LENGTH,
)
_PENDULUM_SPARSE_SPEC = gym.envs.registration.EnvSpec(
    id="PendulumSparse-v0",
    entry_point=sparse_tasks.PendulumSparseEnv,
    max_episode_steps=sparse_tasks.EPISODE_LENGTH,
)

# Tasks whose reward over a block of repeated actions has a closed form (``action_repeat``).
_BLOCK_REWARDS = {"mountaincar": mountaincar.block_reward_fn}


def _make_env(
    name: str, gym_id: str | gym.envs.registration.EnvSpec, pinned: Mapping[str, Any], **kwargs
) -> gym.Env:
    """``gymnasium.make(gym_id, **pinned, **kwargs)`` wrapped in `ValidateAction`."""
    for key, value in kwargs.items():
        if key in pinned and not _same(value, pinned[key]):
            raise ValueError(
                f"{name}: option {key}={value!r} is pinned to {pinned[key]!r} because the "
                "task's reward/termination/dynamics functions rely on it."
            )
    env = gym.make(gym_id, **{**pinned, **kwargs})
    return ValidateAction(env, name)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b)))
    except (TypeError, ValueError):
        return False


def _spec(
    name: str,
    gym_id: str | gym.envs.registration.EnvSpec,
    reward_fn: TransitionFn,
    termination_fn: TransitionFn,
    episode_length: int,
    obs_dim: int,
    action_low: list[float],
    action_high: list[float],
    pinned: Mapping[str, Any] | None = None,
    absolute_position_dims: tuple[int, ...] = (),
    dynamics_fn: DynamicsFn | None = None,
) -> TaskSpec:
    pinned = types.MappingProxyType(dict(pinned or {}))
    low = np.asarray(action_low, np.float32)
    high = np.asarray(action_high, np.float32)
    low.flags.writeable = False
    high.flags.writeable = False
    make: Callable[..., gym.Env] = functools.partial(_make_env, name, gym_id, pinned)
    return TaskSpec(
        name=name,
        make=make,
        reward_fn=reward_fn,
        termination_fn=termination_fn,
        episode_length=episode_length,
        obs_dim=obs_dim,
        act_dim=low.size,
        action_low=low,
        action_high=high,
        env_kwargs=pinned,
        absolute_position_dims=absolute_position_dims,
        dynamics_fn=dynamics_fn,
    )


_TASKS: Mapping[str, TaskSpec] = types.MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _spec(
                "cartpole_swingup",
                _CARTPOLE_SWINGUP_SPEC,
                cartpole_swingup.reward_fn,
                cartpole_swingup.termination_fn,
                episode_length=cartpole_swingup.EPISODE_LENGTH,
                obs_dim=cartpole_swingup.OBS_DIM,
                action_low=[-1.0],
                action_high=[1.0],
                dynamics_fn=cartpole_swingup.step_obs,
            ),
            _spec(
                "cartpole_swingup_sparse",
                _CARTPOLE_SWINGUP_SPARSE_SPEC,
                sparse_tasks.cartpole_reward_fn,
                cartpole_swingup.termination_fn,
                episode_length=sparse_tasks.EPISODE_LENGTH,
                obs_dim=cartpole_swingup.OBS_DIM,
                action_low=[-1.0],
                action_high=[1.0],
                dynamics_fn=cartpole_swingup.step_obs,
            ),
            _spec(
                "mountaincar",
                "MountainCarContinuous-v0",
                mountaincar.reward_fn,
                mountaincar.termination_fn,
                episode_length=mountaincar.EPISODE_LENGTH,
                obs_dim=mountaincar.OBS_DIM,
                action_low=[-1.0],
                action_high=[1.0],
                dynamics_fn=mountaincar.step_obs,
            ),
            _spec(
                "pendulum_sparse",
                _PENDULUM_SPARSE_SPEC,
                sparse_tasks.pendulum_reward_fn,
                pendulum.termination_fn,
                episode_length=sparse_tasks.EPISODE_LENGTH,
                obs_dim=pendulum.OBS_DIM,
                action_low=[-pendulum.MAX_TORQUE],
                action_high=[pendulum.MAX_TORQUE],
                pinned=dict(g=pendulum.GRAVITY),
                dynamics_fn=pendulum.step_obs,
            ),
            _spec(
                "pendulum",
                "Pendulum-v1",
                pendulum.reward_fn,
                pendulum.termination_fn,
                episode_length=pendulum.EPISODE_LENGTH,
                obs_dim=pendulum.OBS_DIM,
                action_low=[-pendulum.MAX_TORQUE],
                action_high=[pendulum.MAX_TORQUE],
                pinned=dict(g=pendulum.GRAVITY),
                dynamics_fn=pendulum.step_obs,
            ),
            _spec(
                "pendulum_noisy",
                _NOISY_SPECS["pendulum_noisy"],
                pendulum.reward_fn,
                pendulum.termination_fn,
                episode_length=pendulum.EPISODE_LENGTH,
                obs_dim=pendulum.OBS_DIM,
                action_low=[-pendulum.MAX_TORQUE],
                action_high=[pendulum.MAX_TORQUE],
                pinned=dict(g=pendulum.GRAVITY),
            ),
            _spec(
                "cartpole_swingup_noisy",
                _NOISY_SPECS["cartpole_swingup_noisy"],
                cartpole_swingup.reward_fn,
                cartpole_swingup.termination_fn,
                episode_length=cartpole_swingup.EPISODE_LENGTH,
                obs_dim=cartpole_swingup.OBS_DIM,
                action_low=[-1.0],
                action_high=[1.0],
            ),
            _spec(
                "inverted_pendulum",
                "InvertedPendulum-v5",
                mujoco_tasks.inverted_pendulum_reward,
                mujoco_tasks.inverted_pendulum_termination,
                episode_length=1000,
                obs_dim=4,
                action_low=[-3.0],
                action_high=[3.0],
                pinned=mujoco_tasks.PINNED_KWARGS["inverted_pendulum"],
            ),
            _spec(
                "halfcheetah",
                "HalfCheetah-v5",
                mujoco_tasks.halfcheetah_reward,
                mujoco_tasks.halfcheetah_termination,
                episode_length=1000,
                obs_dim=18,
                action_low=[-1.0] * 6,
                action_high=[1.0] * 6,
                pinned=mujoco_tasks.PINNED_KWARGS["halfcheetah"],
                absolute_position_dims=(0,),
            ),
            _spec(
                "hopper",
                "Hopper-v5",
                mujoco_tasks.hopper_reward,
                mujoco_tasks.hopper_termination,
                episode_length=1000,
                obs_dim=12,
                action_low=[-1.0] * 3,
                action_high=[1.0] * 3,
                pinned=mujoco_tasks.PINNED_KWARGS["hopper"],
                absolute_position_dims=(0,),
            ),
            _spec(
                "reacher",
                "Reacher-v5",
                mujoco_tasks.reacher_reward,
                mujoco_tasks.reacher_termination,
                episode_length=50,
                obs_dim=10,
                action_low=[-1.0] * 2,
                action_high=[1.0] * 2,
                pinned=mujoco_tasks.PINNED_KWARGS["reacher"],
            ),
            _spec(
                "pusher",
                "Pusher-v5",
                mujoco_tasks.pusher_reward,
                mujoco_tasks.pusher_termination,
                episode_length=100,
                obs_dim=23,
                action_low=[-2.0] * 7,
                action_high=[2.0] * 7,
                pinned=mujoco_tasks.PINNED_KWARGS["pusher"],
            ),
        )
    }
)


def names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def task(name: str, action_repeat: int = 1) -> TaskSpec:
    """The `TaskSpec` registered as ``name``; ``ValueError`` listing known names otherwise.

    ``action_repeat=k > 1``: the task seen by an agent that holds each action for ``k`` env
    steps (``make`` wraps the env in `ActionRepeat`; ``reward_fn``, ``dynamics_fn`` and
    ``episode_length`` are per block). Only for tasks whose block reward has a closed form
    (``mountaincar``); the same ``(name, k)`` gives the same spec object.
    """
    try:
        spec = _TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(names())}.") from None
    if isinstance(action_repeat, bool) or not isinstance(action_repeat, int) or action_repeat < 1:
        raise ValueError(f"action_repeat must be an int >= 1, got {action_repeat!r}.")
    if action_repeat == 1:
        return spec
    if name not in _BLOCK_REWARDS:
        raise ValueError(f"Task {name!r} has no action_repeat (its reward over a block of steps "
                         f"has no closed form); tasks with one: {', '.join(_BLOCK_REWARDS)}.")
    return _repeated(name, action_repeat)


@functools.lru_cache(maxsize=None)
def _repeated(name: str, repeat: int) -> TaskSpec:
    spec = _TASKS[name]
    step = spec.dynamics_fn

    def dynamics(obs: Any, act: Any) -> Any:  # stops at termination, as `ActionRepeat` does
        def body(carry, _):
            o, done = carry
            nxt = step(o, act)
            nxt = jax.numpy.where(done[..., None], o, nxt)
            return (nxt, done | spec.termination_fn(o, act, nxt)), None

        obs = jax.numpy.asarray(obs, jax.numpy.float32)
        done0 = jax.numpy.zeros(obs.shape[:-1], bool)
        (out, _), _ = jax.lax.scan(body, (obs, done0), None, length=repeat)
        return out

    def make(**kwargs: Any) -> gym.Env:
        return ActionRepeat(spec.make(**kwargs), repeat)

    return dataclasses.replace(
        spec, make=make, reward_fn=_BLOCK_REWARDS[name](repeat),
        episode_length=math.ceil(spec.episode_length / repeat),
        dynamics_fn=None if step is None else dynamics, action_repeat=repeat,
    )


def make(name: str, action_repeat: int = 1, **kwargs: Any) -> gym.Env:
    """Builds the gymnasium env of task ``name`` (of ``task(name, action_repeat)``).

    ``kwargs`` go to ``gymnasium.make`` (e.g. ``render_mode``, ``max_episode_steps``, or the
    env's own options); options the task pins (``task(name).env_kwargs``) cannot be changed.
    The env is wrapped in `ValidateAction` and truncates after ``episode_length`` steps.
    """
    return task(name, action_repeat).make(**kwargs)


def jax_dynamics(name: str) -> DynamicsFn:
    """Exact JAX dynamics ``step(obs [..., d], act [..., a]) -> next_obs [..., d]`` of ``name``.

    Available for tasks whose true dynamics have a closed form (``cartpole_swingup``,
    ``pendulum``); jittable and vmappable; matches ``env.step`` up to float32 rounding. Raises
    ``ValueError`` for other tasks.
    """
    dynamics = task(name).dynamics_fn
    if dynamics is None:
        available = ", ".join(n for n in names() if _TASKS[n].dynamics_fn is not None)
        raise ValueError(f"Task {name!r} has no JAX dynamics; tasks with them: {available}.")
    return dynamics
