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
