"""Tests for mbrl_bayes.metrics against hand-computed values."""

import math
from statistics import NormalDist

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import metrics


def _mixture_dist(means, variances, weights=None):
    """distrax mixture shaped like model.predict's: batch [n], event [d], k components."""
    k, n, _ = means.shape
    logits = jnp.zeros((n, k)) if weights is None else jnp.log(jnp.broadcast_to(
        jnp.asarray(weights).reshape(k, -1).T, (n, k)))
    components = distrax.MultivariateNormalDiag(
        jnp.moveaxis(means, 0, 1), jnp.sqrt(jnp.moveaxis(variances, 0, 1)))
    return distrax.MixtureSameFamily(distrax.Categorical(logits=logits), components)


def _mixture_cdf_reference(x, means, stds, weights):
    return sum(w * NormalDist(m, s).cdf(x) for m, s, w in zip(means, stds, weights, strict=True))


def _two_component_samples(rng, n, d=2):
    """A two-draw mixture (bimodal, unequal weights) and targets drawn from it."""
    means = np.stack([np.full((n, d), -1.5), np.full((n, d), 1.0)]).astype(np.float32)
    variances = np.stack([np.full((n, d), 0.25), np.full((n, d), 1.0)]).astype(np.float32)
    weights = np.array([0.3, 0.7], dtype=np.float32)
    draw = (rng.uniform(size=(n, 1)) > weights[0]).astype(int)  # joint draw for all dims
    chosen_mean = np.where(draw == 1, means[1], means[0])
    chosen_std = np.sqrt(np.where(draw == 1, variances[1], variances[0]))
    y = (chosen_mean + chosen_std * rng.normal(size=(n, d))).astype(np.float32)
    return metrics.GaussianMixture(means, variances, weights), y


def test_from_mixture_and_predictive_forms_agree():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 4, 2)).astype(np.float32)
    variances = rng.uniform(0.5, 2.0, size=(3, 4, 2)).astype(np.float32)
    weights = np.array([0.2, 0.3, 0.5], dtype=np.float32)
    dist = _mixture_dist(means, variances, weights)
    mixture = metrics.from_mixture(dist)
    np.testing.assert_allclose(mixture.means, means, rtol=1e-6)
    np.testing.assert_allclose(mixture.variances, variances, rtol=1e-5)
    np.testing.assert_allclose(mixture.weights, np.repeat(weights[:, None], 4, 1), rtol=1e-5)

    single = metrics.from_mixture(distrax.MultivariateNormalDiag(means[0], np.sqrt(variances[0])))
    assert single.means.shape == (1, 4, 2) and single.weights is None
    per_dim = metrics.from_mixture(distrax.Normal(means[0], np.sqrt(variances[0])))
    np.testing.assert_allclose(per_dim.variances[0], variances[0], rtol=1e-5)

    y = rng.normal(size=(4, 2)).astype(np.float32)
    expected = float(-jnp.mean(dist.log_prob(y)))
    for pred in (dist, mixture, metrics.GaussianMixture(means, variances, weights)):
        assert float(metrics.nll(pred, y)) == pytest.approx(expected, rel=1e-5)
    assert float(metrics.nll((means, variances), y)) == pytest.approx(
        float(-jnp.mean(_mixture_dist(means, variances).log_prob(y))), rel=1e-5)


def test_nll_rmse_sharpness_closed_form():
    means = np.array([[[0.0, 1.0], [2.0, -1.0]]], dtype=np.float32)  # k=1, n=2, d=2
    variances = np.array([[[1.0, 4.0], [0.25, 1.0]]], dtype=np.float32)
    y = np.array([[1.0, 1.0], [2.0, 1.0]], dtype=np.float32)
    per_point = [
        sum(0.5 * math.log(2 * math.pi * v) + (t - m) ** 2 / (2 * v)
            for m, v, t in zip(means[0, i], variances[0, i], y[i], strict=True))
        for i in range(2)
    ]
    assert float(metrics.nll((means, variances), y)) == pytest.approx(np.mean(per_point), 1e-6)
    # RMSE of the mixture mean: draws [1, 2] and [3, 4] average to [2, 3]; errors 0 and 2.
    two_draws = (np.array([[[1.0, 2.0]], [[3.0, 4.0]]]), np.ones((2, 1, 2)))
    assert float(metrics.rmse(two_draws, np.array([[2.0, 5.0]]))) == pytest.approx(math.sqrt(2))
    assert float(metrics.rmse(np.array([[2.0, 3.0]]), np.array([[2.0, 5.0]]))) == pytest.approx(
        math.sqrt(2))
    # Sharpness is the mean predictive std: sqrt of [1, 4, 0.25, 1] -> mean 1.125.
    assert float(metrics.sharpness((means, variances))) == pytest.approx(1.125)


def test_variance_split_law_of_total_variance():
    means = np.array([[[0.0]], [[2.0]]], dtype=np.float32)  # two draws, one point, d=1
    variances = np.array([[[1.0]], [[3.0]]], dtype=np.float32)
    np.testing.assert_allclose(metrics.epistemic_variance((means, variances)), [[1.0]])
    np.testing.assert_allclose(metrics.aleatoric_variance((means, variances)), [[2.0]])
    np.testing.assert_allclose(metrics.total_variance((means, variances)), [[3.0]])
    np.testing.assert_allclose(metrics.predictive_mean((means, variances)), [[1.0]])

    rng = np.random.default_rng(1)
    means = rng.normal(size=(4, 3, 2)).astype(np.float32)
    variances = rng.uniform(0.1, 1.0, size=(4, 3, 2)).astype(np.float32)
    weights = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    dist = _mixture_dist(means, variances, weights)
    total = metrics.epistemic_variance(dist) + metrics.aleatoric_variance(dist)
    np.testing.assert_allclose(total, dist.variance(), rtol=1e-5)
    np.testing.assert_allclose(metrics.total_variance(dist), dist.variance(), rtol=1e-5)


def test_quantiles_exact_for_gaussian_and_invert_mixture_cdf():
    means = np.array([[[0.5, -2.0]]], dtype=np.float32)
    variances = np.array([[[4.0, 0.09]]], dtype=np.float32)
    q = metrics.mixture_quantile((means, variances), [0.05, 0.5, 0.9])
    assert q.shape == (3, 1, 2)
    for i, p in enumerate([0.05, 0.5, 0.9]):
        assert float(q[i, 0, 0]) == pytest.approx(NormalDist(0.5, 2.0).inv_cdf(p), abs=1e-5)
        assert float(q[i, 0, 1]) == pytest.approx(NormalDist(-2.0, 0.3).inv_cdf(p), abs=1e-5)

    mixture, _ = _two_component_samples(np.random.default_rng(0), 1)
    levels = np.array([0.05, 0.3, 0.5, 0.95], dtype=np.float32)
    quantiles = jax.jit(metrics.mixture_quantile)(mixture, levels)  # [4, 1, 2]
    for p, x in zip(levels, np.asarray(quantiles)[:, 0, 0], strict=True):
        cdf = _mixture_cdf_reference(float(x), [-1.5, 1.0], [0.5, 1.0], [0.3, 0.7])
        assert cdf == pytest.approx(float(p), abs=1e-5)
    lower, upper = metrics.predictive_interval(mixture, 0.9)
    np.testing.assert_allclose(lower, quantiles[0], rtol=1e-6)
    np.testing.assert_allclose(upper, quantiles[3], rtol=1e-6)


def test_coverage_and_calibration_of_exact_predictive():
    rng = np.random.default_rng(2)
    mixture, y = _two_component_samples(rng, 20000)
    cover = metrics.coverage(mixture, y, jnp.array([0.5, 0.9]))
    np.testing.assert_allclose(cover, [0.5, 0.9], atol=0.01)
    # Coverage of the central interval agrees with the PIT values falling in [0.05, 0.95].
    pit = metrics.pit_values(mixture, y)
    in_interval = np.mean((np.asarray(pit) >= 0.05) & (np.asarray(pit) <= 0.95))
    assert float(cover[1]) == pytest.approx(in_interval, abs=1e-3)

    expected, observed = metrics.calibration_curve(mixture, y)
    assert expected.shape == observed.shape == (19,)
    np.testing.assert_allclose(observed, expected, atol=0.02)
    assert float(metrics.calibration_error(mixture, y)) < 0.01

    # One narrow Gaussian at the predictive mean: ignores both the spread between draws and
    # the noise, so it is badly overconfident.
    overconfident = (metrics.predictive_mean(mixture)[None], np.full((1,) + y.shape, 0.01))
    assert float(metrics.calibration_error(overconfident, y)) > 0.15
    assert float(metrics.coverage(overconfident, y, 0.9)) < 0.5
    jitted = jax.jit(metrics.calibration_error)(_mixture_dist(*mixture), y)
    assert float(jitted) == pytest.approx(float(metrics.calibration_error(mixture, y)), abs=1e-6)


def _linear_system(num_steps, rng, batch=()):
    a = np.array([[0.9, 0.2], [0.0, 0.7]], dtype=np.float32)
    b = np.array([[0.0], [1.0]], dtype=np.float32)

    def true_step(x, u):
        return x @ a.T + u @ b.T

    act = rng.normal(size=batch + (num_steps, 1)).astype(np.float32)
    obs = [rng.normal(size=batch + (2,)).astype(np.float32)]
    for t in range(num_steps):
        obs.append(true_step(obs[-1], act[..., t, :]))
    return true_step, np.stack(obs, axis=-2), act


def test_kstep_rollout_error_linear_system():
    rng = np.random.default_rng(3)
    true_step, obs, act = _linear_system(8, rng)
    np.testing.assert_allclose(metrics.kstep_rollout_error(true_step, obs, act), 0.0, atol=1e-5)
    assert metrics.kstep_rollout_error(true_step, obs, act, horizon=3).shape == (3,)

    # Scalar system x' = 0.5 x + u with a model biased by +0.1: error after h steps is
    # 0.1 * (1 + 0.5 + ... + 0.5^(h-1)) from every start.
    act = rng.normal(size=(2, 6, 1)).astype(np.float32)
    obs = np.zeros((2, 7, 1), dtype=np.float32)
    for t in range(6):
        obs[:, t + 1] = 0.5 * obs[:, t] + act[:, t]
    biased = jax.jit(lambda x, u: 0.5 * x + u + 0.1)
    expected = [0.1, 0.15, 0.175]
    error = metrics.kstep_rollout_error(biased, obs, act, horizon=3)
    np.testing.assert_allclose(error, expected, rtol=1e-4)
    squared = metrics.kstep_rollout_error(biased, obs, act, horizon=3, squared=True)
    np.testing.assert_allclose(squared, np.square(expected), rtol=1e-4)


def test_bad_input_raises_clear_errors():
    means = np.zeros((2, 3, 2), dtype=np.float32)
    variances = np.ones((2, 3, 2), dtype=np.float32)
    y = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"y has shape \(3, 1\), expected \[n, d\]"):
        metrics.nll((means, variances), y[:, :1])
    with pytest.raises(ValueError, match="variances have shape"):
        metrics.coverage((means, variances[:, :2]), y)
    with pytest.raises(ValueError, match=r"means must have shape \[k, n, d\]"):
        metrics.rmse((means[0], variances[0]), y)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        metrics.calibration_error((means, variances), np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="variances must be finite and > 0"):
        metrics.nll((means, -variances), y)
    with pytest.raises(ValueError, match="weights must be non-negative and sum to 1"):
        metrics.nll(metrics.GaussianMixture(means, variances, np.array([0.5, 0.6])), y)
    with pytest.raises(ValueError, match="level must lie strictly between 0 and 1"):
        metrics.coverage((means, variances), y, 1.0)

    true_step, obs, act = _linear_system(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="must have one more step than act"):
        metrics.kstep_rollout_error(true_step, obs[:-2], act)
    with pytest.raises(ValueError, match="horizon must be an integer in 1 .. 4"):
        metrics.kstep_rollout_error(true_step, obs, act, horizon=5)
    with pytest.raises(ValueError, match="step_fn must map obs"):
        metrics.kstep_rollout_error(lambda x, u: x[:, :1], obs, act)
    bad_obs = obs.copy()
    bad_obs[2, 0] = np.inf
    with pytest.raises(ValueError, match="obs contains NaN or inf"):
        metrics.kstep_rollout_error(true_step, bad_obs, act)
