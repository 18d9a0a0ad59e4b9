"""Calibration metrics for regression predictive distributions (floor 3; jax/distrax/numpy only).

A prediction is a distrax predictive distribution (``model.predict``'s mixture over function
draws), a ``GaussianMixture(means, variances, weights=None)`` or a ``(means, variances)`` tuple of
arrays [k, n, d]; targets ``y`` are [n, d].
"""

from mbrl_bayes.metrics.calibration import (
    DEFAULT_CALIBRATION_LEVELS,
    calibration_curve,
    calibration_error,
    coverage,
    nll,
    predictive_interval,
    rmse,
    sharpness,
)
from mbrl_bayes.metrics.mixture import (
    GaussianMixture,
    Predictive,
    aleatoric_variance,
    as_gaussian_mixture,
    epistemic_variance,
    from_mixture,
    mixture_cdf,
    mixture_quantile,
    pit_values,
    predictive_mean,
    total_variance,
)
from mbrl_bayes.metrics.rollout import kstep_rollout_error

__all__ = [
    "DEFAULT_CALIBRATION_LEVELS",
    "GaussianMixture",
    "Predictive",
    "aleatoric_variance",
    "as_gaussian_mixture",
    "calibration_curve",
    "calibration_error",
    "coverage",
    "epistemic_variance",
    "from_mixture",
    "kstep_rollout_error",
    "mixture_cdf",
    "mixture_quantile",
    "nll",
    "pit_values",
    "predictive_interval",
    "predictive_mean",
    "rmse",
    "sharpness",
    "total_variance",
]
