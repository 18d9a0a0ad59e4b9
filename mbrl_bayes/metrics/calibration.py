"""Calibration and accuracy metrics for regression predictive distributions.

Each metric takes a prediction ``pred`` (a distrax predictive distribution, a ``GaussianMixture``
or a ``(means, variances)`` tuple of arrays [k, n, d]; see ``mbrl_bayes.metrics.mixture``) and,
where it scores data, targets ``y`` [n, d]. Scalars are averaged over points (and dimensions,
where stated). All are pure and jittable; input checks run on concrete arrays only.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_bayes.metrics.mixture import (
    Array,
    Predictive,
    _aleatoric,
    _check_probabilities,
    _check_targets,
    _epistemic,
    _marginal_cdf,
    _mean,
    as_gaussian_mixture,
    mixture_quantile,
)

DEFAULT_CALIBRATION_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


def nll(pred: Predictive, y: Array) -> jax.Array:
    """Negative log-likelihood of ``y`` [n, d] under the predictive mixture, mean over points.

    Per point this is the *joint* density over the ``d`` dimensions,
    ``-log sum_i w_i prod_j N(y_j; mu_ij, sigma_ij^2)`` (so, for ``k = 1``, the per-dimension
    Gaussian NLLs summed), i.e. ``-dist.log_prob(y)`` averaged over the ``n`` points. Scalar.
    """
    means, variances, weights = as_gaussian_mixture(pred, "nll")
    y = _check_targets(y, means, "nll")
    log_densities = -0.5 * jnp.sum(
        jnp.log(2.0 * jnp.pi * variances) + jnp.square(y - means) / variances, axis=-1)  # [k, n]
    log_likelihood = jax.nn.logsumexp(log_densities, axis=0, b=weights)  # [n]
    return -jnp.mean(log_likelihood)


def rmse(pred: Union[Predictive, Array], y: Array) -> jax.Array:
    """Root mean squared error of the predictive mean, over all points and dimensions. Scalar.

    ``pred`` may also be an array [n, d] of point predictions.
    """
    if isinstance(pred, (jax.Array, np.ndarray)):
        mean = jnp.asarray(pred)
        if mean.ndim != 2:
            raise ValueError(f"rmse: a point prediction must have shape [n, d], got {mean.shape}.")
        y = _check_targets(y, mean[None], "rmse")
        _check_targets(mean, mean[None], "rmse")  # finite check on the prediction
    else:
        mixture = as_gaussian_mixture(pred, "rmse")
        y = _check_targets(y, mixture.means, "rmse")
        mean = _mean(mixture)
    return jnp.sqrt(jnp.mean(jnp.square(mean - y)))


def sharpness(pred: Predictive) -> jax.Array:
    """Mean predictive standard deviation, ``mean_{n,d} sqrt(total variance)``. Scalar.

    In the units of ``y``; smaller is sharper. (Kuleshov et al. 2018 report the mean variance,
    ``jnp.mean(total_variance(pred))``.)
    """
    mixture = as_gaussian_mixture(pred, "sharpness")
    return jnp.mean(jnp.sqrt(_aleatoric(mixture) + _epistemic(mixture)))


def predictive_interval(pred: Predictive,
                        level: Union[float, Array] = 0.9) -> Tuple[jax.Array, jax.Array]:
    """Central predictive interval per point and dimension, from the mixture's quantiles.

    Args:
        pred: a ``Predictive`` with means [k, n, d].
        level: probability mass inside the interval, in (0, 1); scalar or shape ``L``.

    Returns:
        ``(lower, upper)``, the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles, each
        [*L, n, d].
    """
    mixture = as_gaussian_mixture(pred, "predictive_interval")
    level = jnp.asarray(level, dtype=mixture.means.dtype)
    _check_probabilities(level, "level", "predictive_interval")
    quantiles = mixture_quantile(mixture, jnp.stack([(1.0 - level) / 2, (1.0 + level) / 2]))
    return quantiles[0], quantiles[1]


def coverage(pred: Predictive, y: Array, level: Union[float, Array] = 0.9) -> jax.Array:
    """Fraction of targets inside the central ``level`` predictive interval.

    Averaged over points and dimensions (each dimension's marginal interval). Should be close to
    ``level`` for calibrated predictions.

    Returns:
        Shape of ``level`` (a scalar for a scalar level).
    """
    mixture = as_gaussian_mixture(pred, "coverage")
    y = _check_targets(y, mixture.means, "coverage")
    level = jnp.asarray(level, dtype=mixture.means.dtype)
    _check_probabilities(level, "level", "coverage")
    lower, upper = predictive_interval(mixture, level)
    inside = (y >= lower) & (y <= upper)
    return jnp.mean(inside, axis=(-2, -1))


def calibration_curve(pred: Predictive, y: Array,
                      levels: Optional[Array] = None) -> Tuple[jax.Array, jax.Array]:
    """Reliability curve for regression (Kuleshov et al. 2018).

    For each expected level ``p``, the observed fraction of targets at or below the predictive
    ``p``-quantile, i.e. of PIT values ``F_j(y_j) <= p``, pooled over points and dimensions.

    Args:
        pred: a ``Predictive`` with means [k, n, d].
        y: targets [n, d].
        levels: expected levels in (0, 1), shape [P]; defaults to 0.05, 0.10, ..., 0.95.

    Returns:
        ``(expected, observed)``, each [P]; a calibrated model has ``observed ~= expected``.
    """
    mixture = as_gaussian_mixture(pred, "calibration_curve")
    y = _check_targets(y, mixture.means, "calibration_curve")
    expected = jnp.asarray(DEFAULT_CALIBRATION_LEVELS if levels is None else levels,
                           dtype=mixture.means.dtype)
    if expected.ndim != 1:
        raise ValueError(f"calibration_curve: levels must be 1-D, got shape {expected.shape}.")
    _check_probabilities(expected, "levels", "calibration_curve")
    pit = _marginal_cdf(mixture, y)  # [n, d]
    observed = jnp.mean(pit[None] <= expected[:, None, None], axis=(-2, -1))
    return expected, observed


def calibration_error(pred: Predictive, y: Array, levels: Optional[Array] = None) -> jax.Array:
    """Regression calibration error: ``mean_p |observed(p) - p|`` over ``calibration_curve``.

    0 for perfect calibration; up to about 0.5 for badly over- or under-confident predictions.
    (Kuleshov et al. 2018 use the squared difference; this is its absolute-value form.) Scalar.
    """
    expected, observed = calibration_curve(pred, y, levels)
    return jnp.mean(jnp.abs(observed - expected))
