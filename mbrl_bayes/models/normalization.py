"""Input/target standardization fitted on data and stored in the model's params."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

# A dimension whose standard deviation is below this is treated as constant: it is centred but
# not scaled, so a constant input (a fixed goal, a zero velocity) never divides by ~0.
_MIN_STD = 1e-6


class Normalizer(NamedTuple):
    """Per-dimension ``mean`` [n] and ``std`` [n]; ``normalize(x) = (x - mean) / std``."""

    mean: jnp.ndarray
    std: jnp.ndarray

    @classmethod
    def identity(cls, size: int) -> "Normalizer":
        return cls(jnp.zeros((size,), jnp.float32), jnp.ones((size,), jnp.float32))

    @classmethod
    def fit(cls, x: np.ndarray) -> "Normalizer":
        """Fits to data ``x`` [n, size] (float64 accumulation, stored as float32)."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std < _MIN_STD, 1.0, std)
        return cls(jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))

    def normalize(self, x: jnp.ndarray) -> jnp.ndarray:
        return (x - self.mean) / self.std

    def denormalize(self, z: jnp.ndarray) -> jnp.ndarray:
        return z * self.std + self.mean
