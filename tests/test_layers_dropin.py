"""The layers are drop-in for Haiku's: the same init key gives posterior means equal to the
weights of the Haiku layer (default or given ``w_init`` / ``b_init``), and a weight draw is
``loc + scale * jax.random.normal`` from ``hk.next_rng_key()``, checked against the Haiku layer
applied to that draw."""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

INIT_KEY = jax.random.PRNGKey(3)
APPLY_KEY = jax.random.PRNGKey(4)
X = np.random.default_rng(0).standard_normal([5, 3]).astype(np.float32)
IMAGES = np.random.default_rng(1).standard_normal([2, 5, 5, 3]).astype(np.float32)
SEQ = np.random.default_rng(2).standard_normal([4, 2, 3]).astype(np.float32)  # [T, B, n_in]
# softplus(-40) ~ 4e-18: a posterior that is its mean to float32 precision.
POINT_LIKE = bl.TrainableNormal(raw_scale_init=hk.initializers.Constant(-40.0))
W_INIT = hk.initializers.VarianceScaling(2.0, "fan_avg", "uniform")
B_INIT = hk.initializers.RandomNormal(0.5)


def mlp(linear, **kwargs):
    def forward(x):
        h = jax.nn.relu(linear(8, **kwargs)(x))
        h = jax.nn.relu(linear(8, **kwargs)(h))
        return linear(2, **kwargs)(h)
    return hk.transform(forward)


def lstm(core, **kwargs):
    def forward(xs):
        cell = core(4, **kwargs)
        return hk.dynamic_unroll(cell, xs, cell.initial_state(xs.shape[1]))[0]
    return hk.transform(forward)


def conv(layer, **kwargs):
    return hk.transform(lambda x: layer(4, 3, **kwargs)(x))


# name -> (Haiku model, its Bayesian swap given extra kwargs, input)
CASES = {
    "dense": (mlp(hk.Linear), lambda **kw: mlp(bl.DenseReparameterization, **kw), X),
    "dense_flipout": (mlp(hk.Linear), lambda **kw: mlp(bl.DenseFlipout, **kw), X),
    "dense_w_init": (mlp(hk.Linear, w_init=W_INIT, b_init=B_INIT),
                     lambda **kw: mlp(bl.DenseReparameterization, w_init=W_INIT, b_init=B_INIT,
                                      **kw), X),
    "conv": (conv(hk.Conv2D), lambda **kw: conv(bl.Conv2DReparameterization, **kw), IMAGES),
    "conv_flipout_w_init": (conv(hk.Conv2D, w_init=W_INIT, b_init=B_INIT),
                            lambda **kw: conv(bl.Conv2DFlipout, w_init=W_INIT, b_init=B_INIT,
                                              **kw), IMAGES),
    "lstm": (lstm(hk.LSTM), lambda **kw: lstm(bl.LSTMCellReparameterization, **kw), SEQ),
    "lstm_flipout": (lstm(hk.LSTM), lambda **kw: lstm(bl.LSTMCellFlipout, **kw), SEQ),
}


def haiku_params(bayesian_params):
    """The Bayesian params as the Haiku layers name them: ``w_loc`` -> ``w`` (and the LSTM's
    gate weights under ``.../linear``), scales dropped."""
    out = {}
    for module, params in bayesian_params.items():
        module = re.sub(r"_(reparameterization|flipout)", "", module).replace("dense", "linear")
        if module.startswith("lstm_cell"):
            module = "lstm/linear"
        out[module] = {"w": params["w_loc"], "b": params["b"]}
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_same_key_same_means_and_a_point_posterior_computes_the_haiku_layer(case):
    reference, bayesian, x = CASES[case]
    swap = bayesian()
    point = bayesian(kernel_initializer=POINT_LIKE)

    @jax.jit
    def run():
        ref_params = reference.init(INIT_KEY, x)
        params = swap.init(INIT_KEY, x)
        point_params = point.init(INIT_KEY, x)
        return (ref_params, params, reference.apply(ref_params, None, x),
                point.apply(point_params, APPLY_KEY, x))

    ref_params, params, ref_out, point_out = run()
    # The default scale is softplus(-3) everywhere and takes no init key.
    for module in params.values():
        np.testing.assert_allclose(jax.nn.softplus(module["w_raw_scale"]),
                                   np.log1p(np.exp(-3.0)), rtol=1e-6)
    mapped = haiku_params(params)
    assert jax.tree.structure(mapped) == jax.tree.structure(ref_params)
    jax.tree.map(np.testing.assert_array_equal, mapped, ref_params)
    np.testing.assert_allclose(point_out, ref_out, rtol=1e-5, atol=1e-6)


def _next_rng_key(key):
    """The first ``hk.next_rng_key()`` of ``apply(params, key, ...)``."""
    return hk.transform(hk.next_rng_key).apply({}, key)


def _draw(loc, raw_scale, key):
    return loc + jax.nn.softplus(raw_scale) * jax.random.normal(key, loc.shape, loc.dtype)


def _spread_params(model, x, seed):
    """Params of ``model`` from numpy, far from a point mass (stddevs 0.13-0.31), so a draw is
    far from the mean: the closed forms below would miss a wrong key or a wrong noise."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, INIT_KEY, x)
    return {module: {name: rng.uniform(*((-2.0, -1.0) if name == "w_raw_scale" else
                                         (-1.0, 1.0)), s.shape).astype(np.float32)
                     for name, s in p.items()} for module, p in shapes.items()}


@pytest.mark.parametrize("case", ["dense", "conv", "lstm"])
def test_a_weight_draw_is_jax_random_normal_from_the_next_rng_key(case):
    """Reparameterization: one draw ``W = loc + softplus(raw) * normal(split(k)[0])``,
    ``k = hk.next_rng_key()``, then exactly the Haiku layer with weights ``W``."""
    reference, bayesian, x = CASES[case]
    swap = bayesian()
    params = _spread_params(swap, x, 0)

    @jax.jit
    def run(params):
        # One key per Bayesian layer, in call order (the LSTM's from its initial_state).
        keys = hk.transform(lambda: [hk.next_rng_key() for _ in params]).apply({}, APPLY_KEY)
        drawn = {}
        for key, (module, p) in zip(keys, params.items()):
            kernel_key, _ = jax.random.split(key)
            drawn[module] = {"w_loc": _draw(p["w_loc"], p["w_raw_scale"], kernel_key),
                             "b": p["b"]}
        return (swap.apply(params, APPLY_KEY, x),
                reference.apply(haiku_params(drawn), None, x),
                bl.posterior_mean()(swap.apply)(params, None, x))

    out, expected, mean = run(params)
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)
    assert float(jnp.max(jnp.abs(out - mean))) > 0.1


def test_a_flipout_draw_is_the_closed_form_with_jax_random():
    """``x @ loc + ((x * s_in) @ dW) * s_out + b`` with ``dW = softplus(raw) * normal(k1)``,
    ``s_in``, ``s_out`` Rademacher from ``k2``, ``k3``, ``(k1, k2, k3, k4) = split(k, 4)``."""
    model = hk.transform(lambda x: bl.DenseFlipout(3)(x))
    params = _spread_params(model, X, 1)

    @jax.jit
    def run(params):
        p = params["dense_flipout"]
        k1, k2, k3, _ = jax.random.split(_next_rng_key(APPLY_KEY), 4)
        delta = jax.nn.softplus(p["w_raw_scale"]) * jax.random.normal(k1, (3, 3))
        s_in = jax.random.rademacher(k2, X.shape, jnp.float32)
        s_out = jax.random.rademacher(k3, (5, 3), jnp.float32)
        expected = X @ p["w_loc"] + ((X * s_in) @ delta) * s_out + p["b"]
        return model.apply(params, APPLY_KEY, X), expected

    out, expected = run(params)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
