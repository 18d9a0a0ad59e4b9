"""What the preset benchmarks share: a preset with ``--set`` overrides, and random seed data."""

from __future__ import annotations

from typing import Sequence

import envs
from agents import RunConfig
from agents.agents import RandomAgent
from agents.episode import env_seed, episode_key, run_episode
from experiments.presets import preset_config
from experiments.tune import parse_value, set_field
from mbrl_bayes.data import ReplayBuffer


def preset_with(env: str, overrides: Sequence[str]) -> RunConfig:
    """The preset of ``env`` with ``section.field=value`` overrides (``value`` JSON or a bare
    string: ``planner.num_particles=10``, ``model.name=gp``), validated; one-line ValueError
    for an unknown field or an invalid value."""
    config = preset_config(env)
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE.")
        set_field(config, path, parse_value(text))
    return config.validate()


def random_buffer(config: RunConfig, steps: int, seed: int = 0) -> ReplayBuffer:
    """``steps`` transitions of uniformly random actions in ``config``'s env (with its action
    repeat), collected as a run collects its seed data (``RandomAgent``, ``run_episode``)."""
    spec = envs.task(config.env, action_repeat=config.action_repeat)
    env = envs.make(config.env, action_repeat=config.action_repeat)
    agent = RandomAgent(spec.action_low, spec.action_high)
    buffer = ReplayBuffer(steps, spec.obs_dim, spec.act_dim)
    episode = 0
    while len(buffer) < steps:
        run_episode(env, agent, episode_key(seed, 0, episode), env_seed(seed, 0, episode),
                    steps - len(buffer), buffer)
        episode += 1
    env.close()
    return buffer


