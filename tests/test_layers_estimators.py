"""KL penalties, gradients, keys and the two estimators (reparameterization, Flipout)."""

import math

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

KEY = jax.random.PRNGKey(0)


def _posterior_params(shapes, seed=0, scale_range=(0.05, 0.5)):
    """Spread-out posterior parameters from numpy (no compilation)."""
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        if path[-1].key == "w_raw_scale":
            return np.log(np.expm1(rng.uniform(*scale_range, shape))).astype(np.float32)
        return (0.5 * rng.standard_normal(shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes, is_leaf=lambda s: isinstance(s, tuple))


def _params_for(model, *args, **kwargs):
    shapes = jax.eval_shape(model.init, KEY, *args)
    return _posterior_params(jax.tree.map(lambda a: a.shape, shapes), **kwargs)


def _normal_kl(loc, scale, prior_loc, prior_scale):
    return (np.log(prior_scale / scale) + (scale ** 2 + (loc - prior_loc) ** 2)
            / (2 * prior_scale ** 2) - 0.5)


def _normal_laplace_kl(loc, scale, prior_loc, prior_scale):
    """KL(N(loc, scale) || Laplace(prior_loc, prior_scale)) = -H(q) - E_q log p, in closed form:
    E|w - mu| for w ~ N(m, s) is s sqrt(2/pi) exp(-d^2 / 2s^2) + d erf(d / (s sqrt 2)), d = m - mu.
    """
    d = loc - prior_loc
    abs_moment = (scale * np.sqrt(2 / np.pi) * np.exp(-d ** 2 / (2 * scale ** 2))
                  + d * np.vectorize(math.erf)(d / (scale * np.sqrt(2))))
    entropy = 0.5 * np.log(2 * np.pi * np.e * scale ** 2)
    return -entropy + np.log(2 * prior_scale) + abs_moment / prior_scale


def _penalized_layers(x):
    bl.DenseReparameterization(3, name="default")(x)
    bl.DenseFlipout(3, kernel_regularizer=bl.NormalKLDivergence(0.5, 2.0, scale_factor=3.0),
                    name="shifted")(x)
    bl.DenseReparameterization(
        3, kernel_regularizer=bl.LaplaceKLDivergence(0.1, 0.5, num_samples=20000),
        name="laplace")(x)
    bl.DenseReparameterization(3, kernel_regularizer=None, name="unregularized")(x)
    return bl.losses()


@pytest.fixture(scope="module")
def penalties():
    x = np.ones([2, 4], np.float32)
    model = hk.transform(_penalized_layers)
    params = _params_for(model, x)
    mc = bl.KLDivergence(distrax.Laplace(0.5, 2.0), num_samples=20000)  # no analytic KL

    @jax.jit
    def run(params, key):
        shifted = params["shifted"]
        posterior = distrax.Normal(shifted["w_loc"], jax.nn.softplus(shifted["w_raw_scale"]))
        normal_mc = bl.KLDivergence(distrax.Normal(0.5, 2.0), num_samples=20000).monte_carlo(
            posterior, key)
        kl_grads = jax.grad(lambda p: sum(model.apply(p, key, x)))(params)
        return model.apply(params, key, x), normal_mc, mc(posterior, key), kl_grads

    return params, run(params, KEY)


def _loc_scale(p):
    return np.asarray(p["w_loc"], np.float64), np.log1p(np.exp(np.asarray(p["w_raw_scale"],
                                                                           np.float64)))


def test_losses_equal_closed_form_kl(penalties):
    params, (losses, _, _, _) = penalties
    assert len(losses) == 3  # one per regularized layer, in order of application
    expected_default = _normal_kl(*_loc_scale(params["default"]), 0.0, 1.0).sum()
    expected_shifted = 3.0 * _normal_kl(*_loc_scale(params["shifted"]), 0.5, 2.0).sum()
    np.testing.assert_allclose(losses[0], expected_default, rtol=1e-5)
    np.testing.assert_allclose(losses[1], expected_shifted, rtol=1e-5)


def test_kl_gradients_reach_mean_and_scale(penalties):
    params, (_, _, _, grads) = penalties
    loc, scale = _loc_scale(params["default"])
    # d KL / d loc = loc; d KL / d raw = (scale - 1 / scale) * sigmoid(raw) for N(0, 1).
    np.testing.assert_allclose(grads["default"]["w_loc"], loc, rtol=1e-4, atol=1e-6)
    raw = np.asarray(params["default"]["w_raw_scale"], np.float64)
    np.testing.assert_allclose(grads["default"]["w_raw_scale"],
                               (scale - 1 / scale) / (1 + np.exp(-raw)), rtol=1e-4)
    assert np.abs(grads["laplace"]["w_raw_scale"]).min() > 0  # MC penalty: pathwise gradient
    assert not np.any(grads["unregularized"]["w_loc"])


def test_monte_carlo_kl_agrees_with_closed_form(penalties):
    params, (losses, normal_mc, laplace_prior_mc, _) = penalties
    analytic = _normal_kl(*_loc_scale(params["shifted"]), 0.5, 2.0).sum()
    np.testing.assert_allclose(normal_mc, analytic, rtol=0.02)
    # Laplace priors have no analytic KL in distrax: the MC estimate matches the closed form.
    np.testing.assert_allclose(
        losses[2], _normal_laplace_kl(*_loc_scale(params["laplace"]), 0.1, 0.5).sum(), rtol=0.02)
    np.testing.assert_allclose(
        laplace_prior_mc, _normal_laplace_kl(*_loc_scale(params["shifted"]), 0.5, 2.0).sum(),
        rtol=0.02)


def _all_layers(x, images):  # the LSTM cells: tests/test_layers_lstm.py
    dense = bl.DenseReparameterization(3)(x)
    flipout = bl.DenseFlipout(3)(x)
    conv = bl.Conv2DReparameterization(2, 3)(images)
    conv_flipout = bl.Conv2DFlipout(2, 3)(images)
    return dict(dense=dense, flipout=flipout, conv=conv, conv_flipout=conv_flipout)


@pytest.fixture(scope="module")
def all_layers():
    """Every layer's outputs for keys (3, 3, 4), and gradients of a data term."""
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal([4, 5]).astype(np.float32),
              rng.standard_normal([2, 4, 4, 2]).astype(np.float32))
    model = hk.transform(_all_layers)
    params = _params_for(model, *inputs)

    def data_term(params, key):
        return sum(jnp.sum(jnp.sin(out)) for out in model.apply(params, key, *inputs).values())

    @jax.jit
    def run(params):
        keys = jnp.stack([jax.random.PRNGKey(3), jax.random.PRNGKey(3), jax.random.PRNGKey(4)])
        outputs = jax.vmap(model.apply, in_axes=(None, 0, None, None))(params, keys, *inputs)
        return outputs, jax.grad(data_term)(params, keys[0])

    return run(params)


def test_gradients_reach_mean_and_scale(all_layers):
    _, grads = all_layers
    assert len(grads) == 4
    # Through the sampled weights (reparameterization / Flipout) to both posterior parameters.
    for name, module_grads in grads.items():
        for param in ("w_loc", "w_raw_scale"):
            g = np.asarray(module_grads[param])
            assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4, (name, param)


def test_one_key_one_function(all_layers):
    outputs, _ = all_layers
    for name, (first, again, other) in outputs.items():
        np.testing.assert_array_equal(first, again, err_msg=name)
        assert float(jnp.max(jnp.abs(first - other))) > 1e-3, name


@pytest.fixture(scope="module")
def estimator_samples():
    """Outputs of both dense estimators for 4000 keys, same posterior and inputs."""
    rng = np.random.default_rng(2)
    row = rng.standard_normal([1, 4]).astype(np.float32)
    x = np.concatenate([row, row, rng.standard_normal([1, 4]).astype(np.float32)])

    def both(x):
        return bl.DenseReparameterization(2, name="dense")(x), \
            bl.DenseFlipout(2, name="flipout")(x)

    model = hk.transform(both)
    params = _params_for(model, x, scale_range=(0.3, 0.8))
    params["flipout"] = params["dense"]  # the same posterior for both
    keys = jax.random.split(jax.random.PRNGKey(5), 4000)
    samples = jax.jit(jax.vmap(model.apply, in_axes=(None, 0, None)))(params, keys, x)
    return x, params["dense"], samples


def test_flipout_matches_reparameterization_moments(estimator_samples):
    x, posterior, (reparam, flipout) = estimator_samples
    loc, scale = _loc_scale(posterior)
    mean = x @ loc + posterior["b"]
    var = (x ** 2) @ (scale ** 2)
    for samples in (reparam, flipout):  # [keys, rows, out]
        standard_error = np.sqrt(var / samples.shape[0])
        np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 4 * standard_error)
        np.testing.assert_allclose(samples.var(0), var, rtol=0.12)


def test_flipout_decorrelates_rows(estimator_samples):
    _, _, (reparam, flipout) = estimator_samples
    # Rows 0 and 1 hold the same input: one shared weight draw gives them identical outputs,
    # Flipout's per-row signs give them (nearly) uncorrelated ones.
    np.testing.assert_array_equal(reparam[:, 0], reparam[:, 1])
    for unit in range(2):
        correlation = np.corrcoef(flipout[:, 0, unit], flipout[:, 1, unit])[0, 1]
        assert abs(correlation) < 0.1


def test_function_axis_first_one_weight_draw_per_function():
    """k functions each applied to its own m rows: row i of function j is x[j, i] @ W_j + b."""
    k, m, d = 3, 6, 4
    rng = np.random.default_rng(3)
    # The first d rows of every function are the identity: they read off W_j + b.
    x = np.concatenate([np.broadcast_to(np.eye(d, dtype=np.float32), (k, d, d)),
                        rng.standard_normal([k, m - d, d]).astype(np.float32)], axis=1)
    layer = lambda x: bl.DenseReparameterization(2, name="dense")(x)
    model = hk.transform(layer)
    mapped = hk.transform(lambda x: hk.vmap(layer, split_rng=not hk.running_init())(x))
    params = _params_for(model, x[0])
    keys = jax.random.split(jax.random.PRNGKey(6), k)

    @jax.jit
    def run(params):
        by_keys = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, keys, x)
        return by_keys, mapped.apply(params, jax.random.PRNGKey(7), x)

    b = params["dense"]["b"]
    for out in run(params):  # jax.vmap over keys, and hk.vmap with split_rng
        weights = out[:, :d] - b  # [k, d, 2]
        np.testing.assert_allclose(out[:, d:], np.einsum("kmd,kdo->kmo", x[:, d:], weights) + b,
                                   rtol=1e-5, atol=1e-5)
        assert np.abs(weights[0] - weights[1]).max() > 1e-3  # distinct functions
