"""One network, either estimator: ``bl.estimator`` switches every layer of a network at trace
time with the parameters shared by construction, and Flipout and the local reparameterization
have the reparameterization estimator's per-output mean and variance (closed forms) with
decorrelated rows."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

KEY = jax.random.PRNGKey(0)
FLIPOUT = dict(dense=bl.DenseFlipout, conv=bl.Conv1DFlipout, gru=bl.GRUFlipout)
REPARAMETERIZATION = dict(dense=bl.DenseReparameterization, conv=bl.Conv1DReparameterization,
                          gru=bl.GRUReparameterization)
# Three identical rows: one function gives them identical outputs.
SIGNALS = np.repeat(np.random.default_rng(0).standard_normal([1, 5, 2]), 3, 0).astype(np.float32)


def network(classes, per_row):
    """Conv1D -> GRU over the signal's positions -> dense -> MC dropout -> dense."""
    def forward(x):  # [m, W, C]
        h = jax.nn.relu(classes["conv"](3, 2, name="conv")(x))
        cell = classes["gru"](3, name="gru")
        h, _ = hk.dynamic_unroll(cell, jnp.swapaxes(h, 0, 1), cell.initial_state(x.shape[0]))
        h = jax.nn.relu(classes["dense"](4, name="hidden")(h[-1]))
        h = bl.MCDropout(0.3, per_row=per_row, name="dropout")(h)
        return classes["dense"](2, name="out")(h)
    return hk.transform(forward)


def _spread(params, seed=1):
    """Stddevs 0.1-0.4 so that draws differ visibly from the mean."""
    rng = np.random.default_rng(seed)
    return {m: {n: (np.log(np.expm1(rng.uniform(0.1, 0.4, v.shape))) if n.endswith("raw_scale")
                    else v).astype(np.float32) for n, v in p.items()} for m, p in params.items()}


@pytest.fixture(scope="module")
def switched():
    per_row_net, function_net = network(FLIPOUT, True), network(REPARAMETERIZATION, False)

    @jax.jit
    def run():
        params = per_row_net.init(KEY, SIGNALS)
        inits = [bl.estimator(name)(per_row_net.init)(KEY, SIGNALS)
                 for name in ("reparameterization", "flipout")]
        inits.append(function_net.init(KEY, SIGNALS))
        return params, inits

    params, inits = run()
    params = _spread(jax.device_get(params))

    @jax.jit
    def apply(params, key):
        planned = bl.estimator("reparameterization")(per_row_net.apply)
        trained = bl.estimator("flipout")(function_net.apply)
        with bl.estimator("reparameterization"):
            restored = bl.estimator(None)(per_row_net.apply)(params, key, SIGNALS)
        return {
            "per_row": per_row_net.apply(params, key, SIGNALS),
            "function": function_net.apply(params, key, SIGNALS),
            "planned": planned(params, key, SIGNALS),
            "trained": trained(params, key, SIGNALS),
            "restored": restored,
            "mean_per_row": bl.posterior_mean()(per_row_net.apply)(params, None, SIGNALS),
            "mean_function": bl.posterior_mean()(function_net.apply)(params, None, SIGNALS),
        }

    return params, inits, apply(params, jax.random.PRNGKey(7))


def test_both_estimators_have_the_same_parameters(switched):
    params, inits, _ = switched
    for other in inits:
        assert jax.tree.structure(other) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, inits[0], inits[1])
    jax.tree.map(np.testing.assert_array_equal, inits[0], inits[2])


def test_the_switch_reaches_every_layer(switched):
    _, _, out = switched
    # The classes' own: per-row noise, three identical rows get three different outputs.
    assert float(jnp.min(jnp.abs(out["per_row"][0] - out["per_row"][1:]))) > 1e-3
    # bl.estimator("reparameterization"): a key is one function, for the whole network, and
    # it is exactly the network built from the reparameterization classes.
    np.testing.assert_allclose(out["planned"], out["planned"][:1].repeat(3, 0), atol=1e-6)
    np.testing.assert_allclose(out["planned"], out["function"], rtol=1e-6, atol=1e-6)
    # bl.estimator("flipout") turns the reparameterization classes into the Flipout ones;
    # bl.estimator(None) restores each layer's own inside an enclosing context.
    np.testing.assert_allclose(out["trained"], out["per_row"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["restored"], out["per_row"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["mean_per_row"], out["mean_function"], rtol=1e-6)
    assert float(jnp.max(jnp.abs(out["planned"] - out["mean_function"]))) > 1e-2


def test_unknown_estimator_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown estimator 'local'"):
        bl.estimator("local")


N_DRAWS = 4000


def _moment_cases():
    x = np.random.default_rng(2).standard_normal
    return {
        "dense": (lambda: bl.DenseFlipout(3), x([2, 4]).astype(np.float32)),
        "conv1d": (lambda: bl.Conv1DFlipout(2, 3, stride=2), x([2, 5, 2]).astype(np.float32)),
        "conv2d_transpose": (lambda: bl.Conv2DTransposeFlipout(2, 2, stride=2),
                             x([2, 2, 2, 2]).astype(np.float32)),
    }


@pytest.mark.parametrize("case", ["dense", "conv1d", "conv2d_transpose"])
def test_flipout_is_unbiased_with_the_reparameterization_variance(case):
    """Per output, over 4000 keys: mean = the layer at its posterior mean, variance =
    ``layer(x**2)`` with the kernel mean replaced by ``scale**2`` (no bias), for Flipout and
    for the reparameterization estimator alike; two identical rows are uncorrelated under
    Flipout and identical under reparameterization."""
    make, x = _moment_cases()[case]
    x = np.concatenate([x, x[:1]])  # row -1 repeats row 0
    model = hk.transform(lambda x: make()(x))
    params = _spread(jax.device_get(jax.jit(model.init)(KEY, x)), seed=3)
    (module, p), = params.items()
    variance_params = {module: {"w_loc": jax.nn.softplus(p["w_raw_scale"]) ** 2,
                                "w_raw_scale": p["w_raw_scale"], "b": 0 * p["b"]}}

    @jax.jit
    def run(params):
        keys = jax.random.split(jax.random.PRNGKey(11), N_DRAWS)
        draws = {name: jax.vmap(bl.estimator(name)(model.apply), (None, 0, None))(params, keys, x)
                 for name in ("flipout", "reparameterization", "local_reparameterization")}
        mean_apply = bl.posterior_mean()(model.apply)
        return draws, mean_apply(params, None, x), mean_apply(variance_params, None, x ** 2)

    draws, mean, variance = run(params)
    assert float(variance.min()) > 1e-3
    for name, samples in draws.items():
        stderr = np.sqrt(variance / N_DRAWS)
        assert np.all(np.abs(samples.mean(0) - mean) < 5 * stderr + 1e-4), name
        np.testing.assert_allclose(samples.var(0), variance, rtol=0.2, err_msg=name)
    for name in ("flipout", "local_reparameterization"):
        first, repeat = draws[name][:, 0], draws[name][:, -1]
        correlation = ((first - mean[0]) * (repeat - mean[-1])).mean(0) / variance[0]
        assert float(np.max(np.abs(correlation))) < 0.15, (name, correlation)
    np.testing.assert_array_equal(draws["reparameterization"][:, 0],
                                  draws["reparameterization"][:, -1])


def test_local_reparameterization_draws_outputs_in_closed_form():
    """``x @ loc + sqrt(x**2 @ scale**2) * normal(split(k)[0], out.shape) + b``, ``k`` the
    layer's ``hk.next_rng_key()``; recurrent cells refuse it (one draw per sequence)."""
    x = np.random.default_rng(4).standard_normal([3, 4]).astype(np.float32)
    model = hk.transform(lambda x: bl.DenseReparameterization(2, b_init=jnp.ones)(x))
    params = _spread(jax.device_get(jax.jit(model.init)(KEY, x)), seed=5)
    p = params["dense_reparameterization"]

    @jax.jit
    def run(params):
        k = hk.transform(hk.next_rng_key).apply({}, KEY)
        scale = jax.nn.softplus(p["w_raw_scale"])
        noise = jax.random.normal(jax.random.split(k)[0], (3, 2))
        expected = x @ p["w_loc"] + jnp.sqrt(jnp.square(x) @ jnp.square(scale)) * noise + p["b"]
        return bl.estimator("local_reparameterization")(model.apply)(params, KEY, x), expected

    out, expected = run(params)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    gru = hk.transform(lambda xs: hk.dynamic_unroll(
        cell := bl.GRUFlipout(2), xs, cell.initial_state(1))[0])
    with pytest.raises(ValueError, match="one weight sample per sequence"):
        bl.estimator("local_reparameterization")(gru.init)(KEY, x[:, None])
