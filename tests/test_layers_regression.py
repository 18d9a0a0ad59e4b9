"""A variational MLP fitted by ELBO is calibrated in-distribution and unsure far from data."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbrl_bayes import layers as bl

DATASET_SIZE = 1000


def _noise_std(x):
    return 0.05 + 0.125 * (x + 1)  # heteroscedastic: 0.05 at x = -1, 0.3 at x = 1


def _dataset(rng, n):
    x = rng.uniform(-1, 1, [n, 1]).astype(np.float32)
    y = np.sin(2.5 * x) + _noise_std(x) * rng.standard_normal([n, 1]).astype(np.float32)
    return x, y[:, 0]


def predict(x):
    """Mean and stddev of y given x [n, 1], for one function draw."""
    h = jax.nn.tanh(bl.DenseReparameterization(32)(x))
    out = bl.DenseReparameterization(2)(h)
    return out[:, 0], jax.nn.softplus(out[:, 1]) + 1e-3


def loss_fn(x, y):
    mean, std = predict(x)
    nll = -jnp.mean(jax.scipy.stats.norm.logpdf(y, mean, std))
    return nll + sum(bl.losses()) / DATASET_SIZE


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x, y = _dataset(rng, DATASET_SIZE)
    x_test, y_test = _dataset(rng, 1000)
    x_grid = np.linspace(-3, 3, 13, dtype=np.float32)[:, None]
    model, predictor = hk.transform(loss_fn), hk.transform(predict)
    optimizer = optax.adam(2e-2)

    @jax.jit
    def run(key):
        init_key, train_key, predict_key, noise_key = jax.random.split(key, 4)
        params = model.init(init_key, x, y)

        def step(carry, step_key):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(model.apply)(params, step_key, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                           jax.random.split(train_key, 1500))
        draws = jax.random.split(predict_key, 200)  # 200 function samples
        test_mean, test_std = jax.vmap(predictor.apply, (None, 0, None))(params, draws, x_test)
        predictive = test_mean + test_std * jax.random.normal(noise_key, test_mean.shape)
        grid_mean, grid_std = jax.vmap(predictor.apply, (None, 0, None))(params, draws, x_grid)
        return losses, predictive, grid_mean, grid_std

    losses, predictive, grid_mean, grid_std = run(jax.random.PRNGKey(0))
    return dict(losses=np.asarray(losses), predictive=np.asarray(predictive), y_test=y_test,
                x_grid=x_grid[:, 0], grid_mean=np.asarray(grid_mean),
                grid_std=np.asarray(grid_std))


def test_elbo_decreases(fitted):
    losses = fitted["losses"]
    assert np.all(np.isfinite(losses))
    assert losses[-100:].mean() < losses[:100].mean() - 0.3


def test_predictive_interval_is_calibrated(fitted):
    lower, upper = np.quantile(fitted["predictive"], [0.05, 0.95], axis=0)
    coverage = np.mean((fitted["y_test"] >= lower) & (fitted["y_test"] <= upper))
    assert 0.8 <= coverage <= 0.97, coverage


def test_epistemic_spread_grows_away_from_data(fitted):
    x, spread = fitted["x_grid"], fitted["grid_mean"].std(0)  # std of the mean across draws
    inside = spread[np.abs(x) <= 1].mean()
    assert spread[0] > 2 * inside and spread[-1] > 2 * inside, spread


def test_aleatoric_noise_is_heteroscedastic(fitted):
    x, noise = fitted["x_grid"], fitted["grid_std"].mean(0)
    at = lambda value: noise[np.argmin(np.abs(x - value))]
    assert at(-0.5) < at(0.5) < at(1.0), noise
