"""The Gaussian transition formula, written once, as plain ``jnp`` functions.

One step of an MLP dynamics model (``s' = s + delta``, ``delta ~ N(mu, sigma^2)``, targets
``[delta, reward?]`` standardized) is::

    x         = (input - mean_in) / std_in                       standardize
    mean, raw = network(x)                                       one function draw's network
    var       = exp(min) + exp(min(raw, max)) / (1 + exp(-|raw - max|))   PETS-bounded variance
    z         = mean + sqrt(var) * noise                         aleatoric noise (none: the mean)
    out       = z * std_target + mean_target                     denormalize: [delta, reward?]
    s'        = s + out[:d]

``GaussianDynamics.transition`` (XLA) and the planning kernels of :mod:`mbrl_bayes.kernels`
(inside their Pallas kernel bodies) call these same functions, so the two cannot drift: only
the network in the middle is theirs. Every function broadcasts: the statistics are per-column
vectors (or ``[1, width]`` rows inside a kernel).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp


def standardize(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """``(x - mean) / std``: network inputs (or targets) in standardized units."""
    return (x - mean) / std


def bounded_variance(raw: jax.Array, logvar_max: jax.Array, var_min: jax.Array) -> jax.Array:
    """The PETS-bounded variance ``exp(logvar)`` of raw log-variances ``raw`` [..., t], with two
    ``exp`` and no ``log``; ``logvar_max`` and ``var_min = exp(logvar_min)`` broadcast against it.

    With ``logvar = min + softplus(max - softplus(max - raw) - min)``,
    ``exp(logvar) = exp(min) + exp(max) / (1 + exp(max - raw))``
    ``= exp(min) + exp(min(raw, max)) / (1 + exp(-|raw - max|))`` (no overflow for any ``raw``).
    Equal to the log-variance route up to float32 rounding; the planner computes it for every
    particle, step and dimension, where the route through two softplus and an ``exp`` (three
    ``exp``, two ``log``) costs ~2x more on XLA:CPU.
    """
    return var_min + jnp.exp(jnp.minimum(raw, logvar_max)) / (
        1.0 + jnp.exp(-jnp.abs(raw - logvar_max))
    )


def denormalized_sample(
    mean: jax.Array,
    raw_logvar: Optional[jax.Array],
    noise: Optional[jax.Array],
    logvar_max: Optional[jax.Array],
    var_min: Optional[jax.Array],
    target_mean: jax.Array,
    target_std: jax.Array,
    sqrt: Callable[[jax.Array], jax.Array] = jnp.sqrt,
) -> jax.Array:
    """The step's target ``out`` [..., t] in data units: ``mean + sqrt(var) * noise`` with the
    bounded variance of ``raw_logvar``, denormalized. Without ``noise`` or ``raw_logvar`` (the
    predicted mean, or a deterministic model) it is the denormalized ``mean``.

    ``noise``: standard normal draws, ``mean``'s shape. ``sqrt``: how the standard deviation is
    taken (Mosaic GPU lowers ``rsqrt`` only: its kernel passes ``v * rsqrt(v)``).
    """
    z = mean
    if noise is not None and raw_logvar is not None:
        z = mean + sqrt(bounded_variance(raw_logvar, logvar_max, var_min)) * noise
    return z * target_std + target_mean


def next_state(obs: jax.Array, out: jax.Array, keep: Optional[jax.Array] = None) -> jax.Array:
    """``s + delta``: ``obs`` [..., d] plus the first ``d`` columns of ``out`` [..., t].

    ``keep`` is for the kernels' padded layout, where ``obs`` and ``out`` share one width and
    ``keep`` is 1 on the ``d`` state columns and 0 elsewhere: the other columns then carry
    ``out`` itself (the learned reward in column ``d``).
    """
    if keep is None:
        return obs + out[..., : obs.shape[-1]]
    return obs * keep + out
