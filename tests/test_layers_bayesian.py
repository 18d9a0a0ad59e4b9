"""``bl.bayesian``: any Haiku function made Bayesian through custom creators and getters."""

import zlib

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbrl_bayes import layers as bl

X = np.random.default_rng(0).standard_normal([6, 3]).astype(np.float32)
KEY = jax.random.PRNGKey(0)


def mlp(x):
    return hk.nets.MLP([5, 2], activation=jnp.tanh, name="mlp")(x)


def with_kl(fn):
    def forward(*args):
        return fn(*args), bl.losses()
    return hk.transform(forward)


BNN = with_kl(bl.bayesian(mlp))
DET = hk.transform(mlp)


def spread_params(model, *args):
    """Posterior parameters spread out from numpy (stddevs 0.1-0.5), so that draws differ."""
    rng = np.random.default_rng(1)
    shapes = jax.eval_shape(model.init, KEY, *(args or (X,)))

    def leaf(path, a):
        if path[-1].key.endswith("raw_scale"):
            return np.log(np.expm1(rng.uniform(0.1, 0.5, a.shape))).astype(np.float32)
        return (0.5 * rng.standard_normal(a.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def closed_form_kl(p, prior_stddev=1.0):
    loc, raw = (np.asarray(p[k], np.float64) for k in ("w_loc", "w_raw_scale"))
    scale = np.log1p(np.exp(raw))
    return np.sum(np.log(prior_stddev / scale)
                  + (scale ** 2 + loc ** 2) / (2 * prior_stddev ** 2) - 0.5)


def mean_params(params):
    """The deterministic net's params: each ``w_loc`` renamed ``w``, the scales dropped."""
    return {module: {("w" if name == "w_loc" else name): value for name, value in p.items()
                     if name != "w_raw_scale"} for module, p in params.items()}


@pytest.fixture(scope="module")
def params():
    return spread_params(BNN)


def test_weight_matrices_become_posteriors_that_start_at_the_deterministic_init():
    params = jax.jit(BNN.init)(KEY, X)
    det = jax.jit(DET.init)(KEY, X)
    assert set(params) == {"mlp/~/linear_0", "mlp/~/linear_1"}
    for module in params:
        assert set(params[module]) == {"w_loc", "w_raw_scale", "b"}
        np.testing.assert_array_equal(params[module]["w_loc"], det[module]["w"])
        np.testing.assert_array_equal(params[module]["b"], det[module]["b"])
        np.testing.assert_allclose(jax.nn.softplus(params[module]["w_raw_scale"]),
                                   np.log1p(np.exp(-3.0)), rtol=1e-6)


def test_losses_are_the_closed_form_kl_once_per_weight(params):
    def twice(x):
        net = hk.nets.MLP([5, 2], activation=jnp.tanh, name="mlp")
        bnn = bl.bayesian(lambda x: net(net.layers[0](x)[:, :3]))   # linear_0 applied twice
        return bnn(x), bl.losses()                                  # one KL per weight

    _, kls = hk.transform(twice).apply(params, jax.random.PRNGKey(1), X)
    expected = [closed_form_kl(params[m]) for m in ("mlp/~/linear_0", "mlp/~/linear_1")]
    np.testing.assert_allclose(np.asarray(kls), expected, rtol=1e-5)

    prior = bl.NormalKLDivergence(stddev=0.5)
    model = with_kl(bl.bayesian(mlp, regularizer=prior))
    _, kls = model.apply(params, jax.random.PRNGKey(1), X)
    np.testing.assert_allclose(
        sum(kls), sum(closed_form_kl(params[m], 0.5) for m in params), rtol=1e-5)


def test_a_function_sample_is_a_key(params):
    apply = jax.jit(BNN.apply)
    out, _ = apply(params, jax.random.PRNGKey(1), X)
    again, _ = apply(params, jax.random.PRNGKey(1), X)
    other, _ = apply(params, jax.random.PRNGKey(2), X)
    np.testing.assert_array_equal(out, again)
    assert np.abs(out - other).max() > 1e-2
    # Every row sees the same weights: permuting the batch permutes the outputs.
    perm = np.random.default_rng(3).permutation(len(X))
    permuted, _ = apply(params, jax.random.PRNGKey(1), X[perm])
    np.testing.assert_allclose(permuted, out[perm], rtol=1e-5, atol=1e-6)
    # Function axis first: draw i applied to its own rows, as one apply per key.
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    rows = np.stack([X, 2 * X, -X])
    batched, _ = jax.vmap(BNN.apply, (None, 0, 0))(params, keys, rows)
    for i in range(3):
        np.testing.assert_allclose(batched[i], apply(params, keys[i], rows[i])[0], rtol=1e-5,
                                   atol=1e-6)


def test_draws_are_keyed_by_parameter_not_by_order(params):
    """Reading the layers in the other order gives each the same draw (sequential keys from
    hk.next_rng_key() would swap them)."""
    def layers():
        return hk.Linear(4, name="first"), hk.Linear(4, name="second")

    def forward(x):
        first, second = layers()
        return first(x), second(x)

    def backward(x):
        first, second = layers()
        b = second(x)
        return first(x), b

    params = spread_params(hk.transform(bl.bayesian(forward)))
    key = jax.random.PRNGKey(5)
    a = hk.transform(bl.bayesian(forward)).apply(params, key, X)
    b = hk.transform(bl.bayesian(backward)).apply(params, key, X)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # The draw is fold_in(call key, crc32(full name)) of the posterior.
    call_key = hk.PRNGSequence(key).next()
    name = "first/w"
    eps = jax.random.normal(jax.random.fold_in(call_key, zlib.crc32(name.encode()) & 0x7FFFFFFF),
                            (3, 4))
    w = params["first"]["w_loc"] + jax.nn.softplus(params["first"]["w_raw_scale"]) * eps
    np.testing.assert_allclose(a[0], X @ w + params["first"]["b"], rtol=1e-5, atol=1e-6)


def test_a_module_applied_twice_or_scanned_uses_one_draw():
    def twice(x):
        linear = hk.Linear(3, name="linear")
        return linear(x), linear(x)

    model = hk.transform(bl.bayesian(twice))
    params = spread_params(model)
    a, b = model.apply(params, jax.random.PRNGKey(1), X)
    np.testing.assert_array_equal(a, b)

    def scanned(xs):
        linear = hk.Linear(3, name="linear")
        return hk.scan(lambda carry, x: (carry, linear(x)), 0, xs)[1]

    xs = np.stack([X] * 4)
    model = hk.transform(bl.bayesian(scanned))
    out = model.apply(params, jax.random.PRNGKey(1), xs)
    for step in out:
        np.testing.assert_allclose(step, a, rtol=1e-6)


def test_predicate_chooses_the_last_layer_only():
    last = bl.bayesian(mlp, predicate=lambda module, name, shape: module.endswith("linear_1")
                       and name == "w")
    model = with_kl(last)
    params = jax.jit(model.init)(KEY, X)
    assert set(params["mlp/~/linear_0"]) == {"w", "b"}
    assert set(params["mlp/~/linear_1"]) == {"w_loc", "w_raw_scale", "b"}
    params = spread_params(model)
    (out1, kls), (out2, _) = (model.apply(params, jax.random.PRNGKey(i), X) for i in (1, 2))
    assert len(kls) == 1
    np.testing.assert_allclose(kls[0], closed_form_kl(params["mlp/~/linear_1"]), rtol=1e-5)
    assert np.abs(out1 - out2).max() > 1e-2
    with pytest.raises(ValueError, match="no rng"):
        model.apply(params, None, X)


def test_posterior_mean_is_the_deterministic_net_with_the_mean_params(params):
    mean_apply = jax.jit(bl.posterior_mean()(BNN.apply))
    out, kls = mean_apply(params, None, X)    # no rng needed: nothing is sampled
    np.testing.assert_allclose(out, DET.apply(mean_params(params), None, X), rtol=1e-5,
                               atol=1e-6)
    assert len(kls) == 2


def test_bayesian_layers_inside_are_left_alone():
    def mixed(x):
        return bl.DenseReparameterization(2, name="bl_dense")(hk.Linear(4, name="plain")(x))

    model = with_kl(bl.bayesian(mixed))
    params = jax.jit(model.init)(KEY, X)
    assert set(params["bl_dense"]) == {"w_loc", "w_raw_scale", "b"}
    assert set(params["plain"]) == {"w_loc", "w_raw_scale", "b"}
    _, kls = model.apply(spread_params(model), jax.random.PRNGKey(1), X)
    assert len(kls) == 2


def test_bad_arguments_are_reported():
    with pytest.raises(TypeError, match="needs a function"):
        bl.bayesian(3)
    with pytest.raises(TypeError, match="predicate"):
        bl.bayesian(mlp, predicate="last")
    with pytest.raises(ValueError, match="Unknown"):
        bl.bayesian(mlp, initializer="trainable_cauchy")


def test_training_by_the_elbo_fits_a_regression():
    """jit(grad) of a vmapped ELBO (several draws per step) with optax lowers the loss."""
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    y = (np.sin(3 * x) + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)

    def net(x):
        return hk.nets.MLP([16, 1], activation=jnp.tanh)(x)

    def loss_fn(x, y):
        nll = 0.5 * jnp.mean(jnp.sum(((bl.bayesian(net)(x) - y) / 0.1) ** 2, -1))
        return nll + sum(bl.losses()) / len(x)

    model = hk.transform(loss_fn)
    params = model.init(KEY, x, y)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    def elbo(p, key):
        keys = jax.random.split(key, 4)
        return jax.vmap(model.apply, (None, 0, None, None))(p, keys, x, y).mean()

    def update(carry, key):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(elbo)(p, key)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    train = jax.jit(lambda carry, keys: jax.lax.scan(update, carry, keys))
    (params, _), losses = train((params, opt_state), jax.random.split(jax.random.PRNGKey(1), 300))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    fit = bl.posterior_mean()(hk.transform(bl.bayesian(net)).apply)(params, None, x)
    rmse = np.sqrt(np.mean((fit - np.sin(3 * x)) ** 2))
    assert rmse < 0.15
