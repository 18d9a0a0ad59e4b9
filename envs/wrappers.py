"""Input checks at the env boundary."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np


class ValidateAction(gym.Wrapper):
    """Rejects actions of the wrong shape, non-numeric dtype or with non-finite values.

    Raises ``ValueError`` with one sentence naming the task, instead of letting a bad action
    reach the simulator (where it would broadcast, crash obscurely or produce NaNs). Values
    outside the action bounds are allowed: the envs clip or clamp them themselves.
    """

    def __init__(self, env: gym.Env, task_name: str):
        super().__init__(env)
        self._task_name = task_name

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        array = np.asarray(action)
        expected = self.action_space.shape
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"{self._task_name}: action must be a numeric array, got dtype {array.dtype}."
            )
        if array.shape != expected:
            raise ValueError(
                f"{self._task_name}: action must have shape {expected}, got {array.shape}."
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{self._task_name}: action has non-finite values {array}.")
        return self.env.step(array)


class ActionRepeat(gym.Wrapper):
    """Holds each action for ``repeat`` steps of ``env``; returns the last observation and the
    summed reward. Stops early when the env terminates or truncates (the observation is then the
    one it stopped at). ``envs.task(name, action_repeat=k).make()`` builds one."""

    def __init__(self, env: gym.Env, repeat: int):
        if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or repeat < 1:
            raise ValueError(f"action_repeat must be an int >= 1, got {repeat!r}.")
        super().__init__(env)
        self.repeat = int(repeat)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info
