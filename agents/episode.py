"""One episode of an agent in an env, and the keys and env seeds episodes are run with."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import jax
import numpy as np

from mbrl_bayes.data import ReplayBuffer


def episode_key(seed: int, *path: int) -> jax.Array:
    """The PRNG key of ``seed`` folded with ``path`` (e.g. ``(phase, index)``): a run's keys
    depend only on where they are used, so a resumed run takes the same ones."""
    key = jax.random.PRNGKey(seed)
    for p in path:
        key = jax.random.fold_in(key, p)
    return key


def env_seed(seed: int, phase: int, index: int) -> int:
    """The env's reset seed of episode ``index`` of ``phase`` in a run seeded ``seed``."""
    return (seed * 1_000_003 + phase * 10_007 + index) % (2**31 - 1)


def run_episode(
    env: Any, agent: Any, key: jax.Array, env_seed: int, max_steps: int,
    buffer: Optional[ReplayBuffer] = None,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> Dict[str, Any]:
    """One episode of ``agent`` in ``env`` (at most ``max_steps``); transitions go to ``buffer``.

    ``on_step(steps, return_so_far)`` is called after every step. Returns ``return``,
    ``steps``, ``seconds_plan`` and the episode's arrays (``obs`` [T, d], ``act`` [T, a],
    ``next_obs`` [T, d], ``reward`` [T]).
    """
    begin_key, key = jax.random.split(key)
    agent.begin_episode(begin_key)
    obs, _ = env.reset(seed=env_seed)
    total, plan_seconds = 0.0, 0.0
    rows: Dict[str, List[np.ndarray]] = {"obs": [], "act": [], "next_obs": [], "reward": []}
    for t in range(max_steps):
        start = time.perf_counter()
        action = agent.act(obs, jax.random.fold_in(key, t))
        plan_seconds += time.perf_counter() - start
        next_obs, reward, terminated, truncated, _ = env.step(action)
        truncated = truncated or t == max_steps - 1
        if buffer is not None:
            buffer.add(obs, action, next_obs, reward, terminated, truncated)
        for name, value in (("obs", obs), ("act", action), ("next_obs", next_obs),
                            ("reward", reward)):
            rows[name].append(np.asarray(value, np.float32))
        total += float(reward)
        if on_step is not None:
            on_step(t + 1, total)
        obs = next_obs
        if terminated or truncated:
            break
    out: Dict[str, Any] = {k: np.stack(v) for k, v in rows.items()}
    out.update({"return": total, "steps": len(rows["reward"]), "seconds_plan": plan_seconds})
    return out
