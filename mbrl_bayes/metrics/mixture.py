"""Predictive Gaussian mixtures over function draws: moments, CDF and quantiles.

Shapes use ``k`` for function draws, ``n`` for points and ``d`` for output dimensions.
A prediction (``Predictive``) is any of:

* a distrax distribution: the mixture returned by ``model.predict`` (``distrax.MixtureSameFamily``
  with a ``Categorical`` over ``k`` draws and diagonal-Gaussian components, batch shape [n], event
  shape [d]), or a single diagonal Gaussian (``MultivariateNormalDiag`` / ``Independent(Normal)``
  with batch [n] and event [d], or ``Normal`` with batch [n, d]), taken as ``k = 1``;
* a ``GaussianMixture(means, variances, weights=None)`` of arrays;
* a tuple ``(means, variances)`` of arrays [k, n, d] (uniform weights).

Per-dimension quantities (CDF, quantiles, PIT values) use each dimension's *marginal* mixture
``F_j(x) = sum_i w_i Phi((x - mu_ij) / sigma_ij)``, which is exact, not a Gaussian approximation.
Everything here is a pure function of arrays and can be jitted; value checks (finite inputs,
positive variances, weights summing to one) run only on concrete (non-traced) arrays.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri
from jax.scipy.stats import norm

Array = Union[jax.Array, np.ndarray]


class GaussianMixture(NamedTuple):
    """A mixture over ``k`` function draws of diagonal Gaussians, for ``n`` points.

    Attributes:
        means: per-draw predictive means [k, n, d].
        variances: per-draw (aleatoric) predictive variances [k, n, d], > 0.
        weights: mixture weights [k] or [k, n], non-negative and summing to one over ``k``;
            ``None`` means uniform ``1 / k``.
    """

    means: Array
    variances: Array
    weights: Optional[Array] = None


Predictive = Union[distrax.Distribution, GaussianMixture, Tuple[Array, Array]]


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _diagonal_gaussian_moments(dist: distrax.Distribution, what: str) -> Tuple[Array, Array]:
    """Mean and variance (batch + event shape) of a diagonal Gaussian distrax distribution."""
    independent_normal = (isinstance(dist, distrax.Independent)
                          and isinstance(dist.distribution, distrax.Normal))
    if isinstance(dist, (distrax.MultivariateNormalDiag, distrax.Normal)) or independent_normal:
        return dist.mean(), dist.variance()
    raise ValueError(f"{what}: expected diagonal-Gaussian components (MultivariateNormalDiag, "
                     f"Independent(Normal) or Normal), got {type(dist).__name__}.")


def from_mixture(dist: distrax.Distribution) -> GaussianMixture:
    """Extracts per-draw means, variances and weights from a distrax predictive distribution.

    Args:
        dist: ``distrax.MixtureSameFamily`` (``Categorical`` over ``k`` draws, diagonal-Gaussian
            components with batch shape [n, k] and event shape [d]); or a single diagonal
            Gaussian with batch [n] and event [d] (or a ``Normal`` with batch [n, d]).

    Returns:
        ``GaussianMixture`` with ``means``/``variances`` [k, n, d] and ``weights`` [k, n]
        (``None``, i.e. ``k = 1``, for a single Gaussian).
    """
    if isinstance(dist, distrax.MixtureSameFamily):
        components = dist.components_distribution
        if len(components.batch_shape) != 2 or len(components.event_shape) != 1:
            raise ValueError(
                f"from_mixture: expected components with batch shape [n, k] and event shape [d], "
                f"got batch {components.batch_shape} and event {components.event_shape}.")
        if not isinstance(dist.mixture_distribution, distrax.Categorical):
            raise ValueError("from_mixture: the mixture distribution must be a Categorical.")
        means, variances = _diagonal_gaussian_moments(components, "from_mixture")
        weights = jnp.moveaxis(dist.mixture_distribution.probs, -1, 0)
        return GaussianMixture(jnp.moveaxis(means, -2, 0), jnp.moveaxis(variances, -2, 0), weights)
    if isinstance(dist, distrax.Distribution):
        means, variances = _diagonal_gaussian_moments(dist, "from_mixture")
        if means.ndim != 2:
            raise ValueError(f"from_mixture: expected a Gaussian over [n, d], got batch "
                             f"{dist.batch_shape} and event {dist.event_shape}.")
        return GaussianMixture(means[None], variances[None], None)
    raise ValueError(f"from_mixture: expected a distrax distribution, got {type(dist).__name__}.")


def as_gaussian_mixture(pred: Predictive, what: str = "as_gaussian_mixture") -> GaussianMixture:
    """Validates ``pred`` and returns it as arrays: means, variances [k, n, d], weights [k, n].

    Args:
        pred: a ``Predictive`` (see the module docstring).
        what: the caller's name, used in error messages.

    Raises:
        ValueError: on a wrong kind of input, mismatched shapes, non-finite values, non-positive
            variances or weights that do not sum to one (value checks on concrete arrays only).
    """
    if isinstance(pred, distrax.Distribution):
        pred = from_mixture(pred)
    elif isinstance(pred, tuple) and not isinstance(pred, GaussianMixture):
        if len(pred) not in (2, 3):
            raise ValueError(f"{what}: a tuple prediction must be (means, variances[, weights]), "
                             f"got {len(pred)} items.")
        pred = GaussianMixture(*pred)
    elif not isinstance(pred, GaussianMixture):
        raise ValueError(f"{what}: expected a distrax distribution, a GaussianMixture or a "
                         f"(means, variances) tuple, got {type(pred).__name__}.")
    means, variances = jnp.asarray(pred.means), jnp.asarray(pred.variances)
    if means.ndim != 3:
        raise ValueError(f"{what}: means must have shape [k, n, d], got {means.shape}.")
    if variances.shape != means.shape:
        raise ValueError(f"{what}: variances have shape {variances.shape}, but means have "
                         f"{means.shape}.")
    k, n, _ = means.shape
    if pred.weights is None:
        weights = jnp.full((k, n), 1.0 / k, dtype=means.dtype)
    else:
        weights = jnp.asarray(pred.weights, dtype=means.dtype)
        if weights.shape not in ((k,), (k, n)):
            raise ValueError(f"{what}: weights must have shape [k] = ({k},) or [k, n] = "
                             f"({k}, {n}), got {weights.shape}.")
        weights = jnp.broadcast_to(weights.reshape(k, -1), (k, n))
    if _is_concrete(means) and not np.all(np.isfinite(np.asarray(means))):
        raise ValueError(f"{what}: means contain NaN or inf.")
    if _is_concrete(variances):
        variances_np = np.asarray(variances)
        if not np.all(np.isfinite(variances_np)) or not np.all(variances_np > 0):
            raise ValueError(f"{what}: variances must be finite and > 0 (floor them for "
                             f"deterministic models).")
    if _is_concrete(weights):
        weights_np = np.asarray(weights)
        if (not np.all(np.isfinite(weights_np)) or np.any(weights_np < 0)
                or not np.allclose(weights_np.sum(axis=0), 1.0, atol=1e-4)):
            raise ValueError(f"{what}: weights must be non-negative and sum to 1 over draws.")
    return GaussianMixture(means, variances, weights)


def _check_targets(y: Array, means: jax.Array, what: str) -> jax.Array:
    """``y`` as a jax array, checked to be finite with shape [n, d] matching ``means`` [k, n, d]."""
    y = jnp.asarray(y, dtype=means.dtype)
    if y.shape != means.shape[1:]:
        raise ValueError(f"{what}: y has shape {y.shape}, expected [n, d] = {means.shape[1:]}.")
    if _is_concrete(y) and not np.all(np.isfinite(np.asarray(y))):
        raise ValueError(f"{what}: y contains NaN or inf.")
    return y


def _mean(mixture: GaussianMixture) -> jax.Array:
    return jnp.sum(mixture.weights[..., None] * mixture.means, axis=0)


def _aleatoric(mixture: GaussianMixture) -> jax.Array:
    return jnp.sum(mixture.weights[..., None] * mixture.variances, axis=0)


def _epistemic(mixture: GaussianMixture) -> jax.Array:
    spread = jnp.square(mixture.means - _mean(mixture))
    return jnp.sum(mixture.weights[..., None] * spread, axis=0)


def predictive_mean(pred: Predictive) -> jax.Array:
    """Mean of the predictive mixture, ``sum_i w_i mu_i``: [n, d]."""
    return _mean(as_gaussian_mixture(pred, "predictive_mean"))


def aleatoric_variance(pred: Predictive) -> jax.Array:
    """Expected within-draw (noise) variance, ``sum_i w_i sigma_i^2``: [n, d]."""
    return _aleatoric(as_gaussian_mixture(pred, "aleatoric_variance"))


def epistemic_variance(pred: Predictive) -> jax.Array:
    """Variance of the per-draw means across draws, ``sum_i w_i (mu_i - mu)^2``: [n, d]."""
    return _epistemic(as_gaussian_mixture(pred, "epistemic_variance"))


def total_variance(pred: Predictive) -> jax.Array:
    """Variance of the predictive mixture per dimension, [n, d]: by the law of total variance,
    ``aleatoric_variance + epistemic_variance``."""
    mixture = as_gaussian_mixture(pred, "total_variance")
    return _aleatoric(mixture) + _epistemic(mixture)


def _marginal_cdf(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    """Marginal mixture CDF at ``x`` [..., n, d] -> [..., n, d] (validated mixture)."""
    means, variances, weights = mixture
    z = (x[..., None, :, :] - means) / jnp.sqrt(variances)  # [..., k, n, d]
    return jnp.sum(weights[..., None] * norm.cdf(z), axis=-3)


def mixture_cdf(pred: Predictive, x: Array) -> jax.Array:
    """Per-dimension marginal CDF of the predictive mixture, ``F_j(x)``.

    Args:
        pred: a ``Predictive`` with means [k, n, d].
        x: points [..., n, d] (any leading shape).

    Returns:
        ``sum_i w_i Phi((x - mu_i) / sigma_i)``, shape [..., n, d].
    """
    mixture = as_gaussian_mixture(pred, "mixture_cdf")
    x = jnp.asarray(x, dtype=mixture.means.dtype)
    if x.shape[-2:] != mixture.means.shape[1:]:
        raise ValueError(f"mixture_cdf: x has shape {x.shape}, expected [..., n, d] with "
                         f"[n, d] = {mixture.means.shape[1:]}.")
    return _marginal_cdf(mixture, x)


def pit_values(pred: Predictive, y: Array) -> jax.Array:
    """Probability integral transform ``F_j(y_j)`` per point and dimension: [n, d].

    Uniform on [0, 1] when the predictions are calibrated.
    """
    mixture = as_gaussian_mixture(pred, "pit_values")
    y = _check_targets(y, mixture.means, "pit_values")
    return _marginal_cdf(mixture, y)


def _check_probabilities(q: jax.Array, name: str, what: str) -> None:
    if _is_concrete(q):
        q_np = np.asarray(q)
        if not np.all((q_np > 0) & (q_np < 1)):
            raise ValueError(f"{what}: {name} must lie strictly between 0 and 1, got {q_np}.")


def mixture_quantile(pred: Predictive, q: Union[float, Array],
                     num_iterations: int = 64) -> jax.Array:
    """Per-dimension quantiles of the predictive mixture, by bisection on its marginal CDF.

    The ``q``-quantile of a mixture lies between the smallest and largest ``q``-quantiles of its
    components; bisection on that bracket runs a fixed ``num_iterations`` (jittable, vectorized
    over every ``q``, point and dimension). For ``k = 1`` the bracket is a single point, so the
    result is the exact Gaussian quantile.

    Args:
        pred: a ``Predictive`` with means [k, n, d].
        q: probabilities in (0, 1), scalar or any shape ``Q``.
        num_iterations: bisection steps (64 reaches float32/float64 resolution in practice).

    Returns:
        Quantiles of shape [*Q, n, d].
    """
    mixture = as_gaussian_mixture(pred, "mixture_quantile")
    means, variances, _ = mixture
    q = jnp.asarray(q, dtype=means.dtype)
    _check_probabilities(q, "q", "mixture_quantile")
    component_quantiles = means + jnp.sqrt(variances) * ndtri(q)[..., None, None, None]
    lower = jnp.min(component_quantiles, axis=-3)  # [*Q, n, d]
    upper = jnp.max(component_quantiles, axis=-3)
    target = q[..., None, None]

    def bisect(_, bounds):
        lower, upper = bounds
        middle = 0.5 * (lower + upper)
        below = _marginal_cdf(mixture, middle) < target
        return jnp.where(below, middle, lower), jnp.where(below, upper, middle)

    lower, upper = jax.lax.fori_loop(0, num_iterations, bisect, (lower, upper))
    return 0.5 * (lower + upper)
