"""Trace-time argument checks shared by the layers package."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_positive(value: Any, what: str) -> None:
    """Raises ``ValueError`` unless every entry of a concrete ``value`` is > 0.

    Traced values cannot be checked at trace time and pass through.
    """
    if isinstance(value, jax.core.Tracer):
        return
    if not np.all(np.asarray(value) > 0):
        raise ValueError(f"{what} must be > 0, got {value!r}.")
