"""The Gaussian likelihood that every dynamics model trains on and is scored with.

One convention, everywhere: the NLL of a data point is the full negative log density of its
target vector under the predicted diagonal Gaussian, ``0.5 * log(2 pi)`` included, **summed over
the target dimensions**; a set of points is scored by the **mean over points** of that value.
Models apply it to standardized targets (``[delta, reward?]`` after ``params['stats']['target']``),
so the NLL of every model family (the ``'nll'`` of ``model.loss`` and ``model.evaluate``,
``train``'s ``train_nll``/``holdout_nll`` histories, the ``holdout_nll`` column of a run's
``metrics.csv``) is in nats per transition, in standardized target units, and compares across
families. (``mbrl_bayes.metrics.nll`` scores a model's predictive mixture in raw observation
units instead.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(mean: jax.Array, logvar: jax.Array, target: jax.Array) -> jax.Array:
    """Per-point negative log-likelihood of ``target`` under ``N(mean, exp(logvar))``.

    Args:
        mean: predicted means [..., t].
        logvar: predicted log-variances, broadcastable against ``mean`` (a scalar ``0.0``: unit
            variance).
        target: observed values, broadcastable against ``mean``.

    Returns:
        ``0.5 * sum_j ((target_j - mean_j)^2 / var_j + log var_j + log(2 pi))`` over the last
        axis: one NLL per data point, shape ``[...]`` (nats). Average it over the points with
        ``.mean()`` (or over the point axis only, for one score per ensemble member).
    """
    sq_err = jnp.square(target - mean)
    return 0.5 * jnp.sum(sq_err * jnp.exp(-logvar) + logvar + LOG_2PI, axis=-1)


def mixture_nll(per_draw_nll: jax.Array) -> jax.Array:
    """Per-point NLL under the equal mixture of ``m`` predictive distributions, from each
    one's per-point NLL.

    Args:
        per_draw_nll: ``[m, ...]``, the NLL of every point under each of the ``m`` draws
            (e.g. :func:`gaussian_nll` of each function draw).

    Returns:
        ``-log((1 / m) * sum_i exp(-per_draw_nll[i]))``, shape ``[...]`` (nats; never more than
        the mean over draws, by Jensen's inequality), computed stably with ``logsumexp``.
    """
    m = per_draw_nll.shape[0]
    return -(jax.nn.logsumexp(-per_draw_nll, axis=0) - math.log(m))
