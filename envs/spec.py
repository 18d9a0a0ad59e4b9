"""`TaskSpec`: everything a model-based agent needs to know about one task."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import jax
import numpy as np

Array = jax.Array
# reward_fn / termination_fn: (obs [..., d], act [..., a], next_obs [..., d]) -> [...]
TransitionFn = Callable[[Array, Array, Array], Array]
# dynamics_fn: (obs [..., d], act [..., a]) -> next_obs [..., d]
DynamicsFn = Callable[[Array, Array], Array]


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSpec:
    """A registered task (see `envs.task`).

    Equality and hashing are by identity, so a spec can be a static argument of `jax.jit`.

    Attributes:
        name: registry name, e.g. ``"cartpole_swingup"``.
        make: ``make(**kwargs) -> gymnasium.Env``; same as ``envs.make(name, **kwargs)``. The
            env validates actions (shape, finite values) and stops at ``episode_length`` steps.
        reward_fn: JAX ``reward_fn(obs, act, next_obs) -> reward``. Arrays have arbitrary
            leading batch dims: ``obs [..., obs_dim]``, ``act [..., act_dim]``,
            ``next_obs [..., obs_dim]`` -> ``[...]`` float32. ``act`` is the action handed
            to ``env.step`` (the function clips it where the env does). Equals the env's own
            reward for the transition ``obs -> next_obs``.
        termination_fn: JAX ``termination_fn(obs, act, next_obs) -> [...]`` bool; equals the
            env's ``terminated`` flag (never its time-limit truncation).
        episode_length: the task's horizon: the env truncates after this many steps.
        obs_dim: observation size.
        act_dim: action size.
        action_low: lower action bounds, float32 ``[act_dim]``.
        action_high: upper action bounds, float32 ``[act_dim]``.
        env_kwargs: constructor options this task pins because ``reward_fn``,
            ``termination_fn`` or ``dynamics_fn`` rely on them (e.g. exposing the cheetah's
            x position); ``make`` refuses to override them.
        absolute_position_dims: observation entries that are absolute positions exposed only
            so the reward can be computed (the x coordinate of the cheetah and the hopper). The
            dynamics do not depend on them, so the agents' models drop them from their inputs
            (``agents.build_agent`` passes them as the model's ``ignored_obs_dims``) and still
            predict their change.
        dynamics_fn: exact JAX dynamics ``step(obs [..., d], act [..., a]) -> next_obs``
            where the env's true dynamics have a closed form in JAX, else None
            (see `envs.jax_dynamics`).
        action_repeat: env steps per agent step (`envs.task(name, action_repeat=k)`): ``make``
            wraps the env in `ActionRepeat`, ``reward_fn`` is the reward of a ``k``-step block,
            ``dynamics_fn`` steps ``k`` times and ``episode_length`` counts blocks.
    """

    name: str
    make: Callable[..., gym.Env]
    reward_fn: TransitionFn
    termination_fn: TransitionFn
    episode_length: int
    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    absolute_position_dims: tuple[int, ...] = ()
    dynamics_fn: DynamicsFn | None = None
    action_repeat: int = 1
