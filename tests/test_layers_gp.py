"""SparseGaussianProcess: KL in closed form, pathwise draws against the analytic predictive,
same-key functions, deep-GP composition, and a calibrated 1-D regression."""

import functools

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbrl_bayes import layers as bl


def _perturbed(params, key, scale=0.3):
    """Params with a non-trivial q(v) (random loc and Cholesky factor), so tests see more than
    the prior."""
    def perturb(path, x):
        name = jax.tree_util.keystr(path)
        k = jax.random.fold_in(key, hash(name) % (2**31))
        if "inducing_outputs" in name:
            return x + scale * jax.random.normal(k, x.shape)
        return x
    return jax.tree_util.tree_map_with_path(perturb, params)


# ----------------------------------------------------------------------------- KL
@pytest.mark.parametrize("diagonal", [False, True])
def test_kl_matches_the_closed_form_and_is_counted_once(diagonal):
    init = bl.TrainableNormal(loc_init=jnp.zeros) if diagonal else None

    def f(x):
        layer = bl.SparseGaussianProcess(3, 5, inducing_outputs_initializer=init)
        layer(x)
        out = layer(x + 1.0)  # applied twice: one KL
        return out.mean(), bl.losses()

    net = hk.transform(f)
    x = jnp.linspace(-1, 1, 8)[:, None]
    params = _perturbed(net.init(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1))
    _, losses = net.apply(params, jax.random.PRNGKey(2), x)
    assert len(losses) == 1
    p = params["sparse_gaussian_process"]
    loc = np.asarray(p["inducing_outputs_loc"], np.float64)
    if diagonal:
        covs = [np.diag(np.log1p(np.exp(r)) ** 2)
                for r in np.asarray(p["inducing_outputs_raw_scale"], np.float64)]
    else:
        raw = np.asarray(p["inducing_outputs_scale_tril"], np.float64)
        covs = []
        for r in raw:
            s = np.tril(r, -1) + np.diag(np.log1p(np.exp(np.diag(r))))
            covs.append(s @ s.T)
    expected = sum(0.5 * (np.trace(c) + m @ m - len(m) - np.linalg.slogdet(c)[1])
                   for m, c in zip(loc, covs))
    assert expected > 1.0
    np.testing.assert_allclose(float(losses[0]), expected, rtol=1e-4)


# ----------------------------------------------------------------------------- pathwise draws
@pytest.fixture(scope="module")
def layer_net():
    def f(x):
        return bl.SparseGaussianProcess(2, 6, lengthscale_init=0.7, variance_init=1.5,
                                        mean_function="linear")(x)

    net = hk.transform(f)
    x = jnp.linspace(-2, 2, 6)[:, None]
    params = _perturbed(net.init(jax.random.PRNGKey(3), x), jax.random.PRNGKey(4))
    return net, params


@pytest.mark.heavy  # 10-20 s: run by .ci/run's second pytest
@pytest.mark.parametrize("kernel", ["squared_exponential", "matern52"])
def test_function_draws_match_the_analytic_predictive_near_and_far(kernel):
    """Mean and variance over 4000 draws (256 random features each, redrawn per draw) agree with
    the layer's analytic predictive at inputs among the inducing points and far from them."""
    def f(x, keys):
        out = bl.SparseGaussianProcess(2, 6, kernel=kernel, lengthscale_init=0.7,
                                       variance_init=1.5, mean_function="linear")(x)
        return out.mean(), out.variance(), jax.vmap(out.function_sample)(keys)

    net = hk.transform(f)
    x = jnp.array([[-1.0], [0.1], [0.5], [1.5], [6.0]])  # last: far from Z (std-normal init)
    n = 4000
    keys = jax.random.split(jax.random.PRNGKey(5), n)
    params = _perturbed(net.init(jax.random.PRNGKey(3), x, keys), jax.random.PRNGKey(4))
    mean, var, draws = jax.jit(net.apply)(params, None, x, keys)
    assert draws.shape == (n, 5, 2)
    se = np.sqrt(np.asarray(var) / n)
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 4.5 * se)
    # The sample variance of n normals has relative stddev sqrt(2 / n) ~ 0.022.
    np.testing.assert_allclose(draws.var(0), var, rtol=0.1)
    # Far from the data the predictive returns to the prior: variance 1.5, mean the linear mean.
    np.testing.assert_allclose(var[-1], 1.5, rtol=1e-3)


@pytest.mark.heavy  # 10-20 s: run by .ci/run's second pytest
def test_same_key_is_one_function_whatever_the_batch():
    def f(x):
        model = hk.Sequential([bl.SparseGaussianProcess(3, 8, mean_function="identity"),
                               bl.SparseGaussianProcess(2, 8)])
        out = model(x)
        return out.function_sample(hk.next_rng_key()), out.mean()

    net = hk.transform(f)
    x1 = jax.random.normal(jax.random.PRNGKey(6), (4, 3))
    x2 = jax.random.normal(jax.random.PRNGKey(7), (9, 3))
    params = _perturbed(net.init(jax.random.PRNGKey(8), x1), jax.random.PRNGKey(9))
    key = jax.random.PRNGKey(10)
    s1, m1 = net.apply(params, key, x1)
    s12, m12 = net.apply(params, key, jnp.concatenate([x2, x1]))
    np.testing.assert_allclose(s12[9:], s1, atol=2e-5)
    np.testing.assert_allclose(m12[9:], m1, atol=2e-5)  # the inner draw is one function too
    s_other, _ = net.apply(params, jax.random.PRNGKey(11), x1)
    assert np.abs(np.asarray(s_other - s1)).max() > 1e-2


def test_deep_gp_composes_inner_samples_pathwise_and_posterior_mean_needs_no_rng():
    def f(x):
        first = bl.SparseGaussianProcess(3, 8, mean_function="identity")
        second = bl.SparseGaussianProcess(2, 8)
        h = first(x)
        key = hk.next_rng_key()
        direct = second(h.function_sample(key)).mean()  # what a layer given h should do
        return direct, h

    def g(x):  # the same modules applied as a Sequential, re-using the same rng stream
        first = bl.SparseGaussianProcess(3, 8, mean_function="identity")
        second = bl.SparseGaussianProcess(2, 8)
        return second(first(x)).mean()

    x = jax.random.normal(jax.random.PRNGKey(12), (6, 3))
    net_f, net_g = hk.transform(f), hk.transform(g)
    params = _perturbed(net_f.init(jax.random.PRNGKey(13), x), jax.random.PRNGKey(14))
    direct, _ = net_f.apply(params, jax.random.PRNGKey(15), x)
    np.testing.assert_allclose(net_g.apply(params, jax.random.PRNGKey(15), x), direct,
                               atol=1e-5)
    with bl.posterior_mean():
        mean_out = net_g.apply(params, None, x)
    _, h = net_f.apply(params, jax.random.PRNGKey(15), x)
    with bl.posterior_mean():
        expected = hk.transform(lambda x: bl.SparseGaussianProcess(2, 8, name="sparse_gaussian_"
                                                                   "process_1")(x).mean())
        np.testing.assert_allclose(mean_out, expected.apply(params, None, h.mean()), atol=1e-5)


@pytest.mark.slow  # the README example test runs the same stack by default
def test_poster_deep_gp_shapes():
    def f(x):
        model = hk.Sequential([hk.Flatten(), bl.SparseGaussianProcess(6, 4),
                               bl.SparseGaussianProcess(6, 4), bl.SparseGaussianProcess(3, 4)])
        out = model(x)
        return out.mean(), out.variance(), out.sample(seed=hk.next_rng_key()), bl.losses()

    net = hk.transform(f)
    x = jnp.ones((5, 2, 2))
    params = net.init(jax.random.PRNGKey(0), x)
    mean, var, sample, losses = net.apply(params, jax.random.PRNGKey(1), x)
    assert mean.shape == var.shape == sample.shape == (5, 3)
    assert len(losses) == 3 and np.all(np.asarray(var) > 0)


def test_bad_arguments_raise_one_line_errors():
    def build(*args, **kwargs):
        hk.transform(lambda x: bl.SparseGaussianProcess(*args, **kwargs)(x)).init(
            jax.random.PRNGKey(0), jnp.ones((3, 1)))

    with pytest.raises(ValueError, match="kernel"):
        build(2, 4, kernel="cosine")
    with pytest.raises(ValueError, match="mean_function"):
        build(2, 4, mean_function="quadratic")
    with pytest.raises(ValueError, match="num_inducing"):
        build(2, 0)
    net = hk.transform(lambda x: bl.SparseGaussianProcess(2, 4, mean_function="identity")(x))
    with pytest.raises(ValueError, match="identity mean"):
        net.init(jax.random.PRNGKey(0), jnp.ones((3, 5)))
    net = hk.transform(lambda d: bl.SparseGaussianProcess(2, 4)(d).mean())
    inputs = distrax.Normal(jnp.ones((3, 1)), 1.0)
    params = net.init(jax.random.PRNGKey(0), inputs)
    with pytest.raises(ValueError, match="no rng"):
        net.apply(params, None, inputs)


# ----------------------------------------------------------------------------- 1-D regression
def _data(key, n, noise=0.1):
    kx, ky = jax.random.split(key)
    x = jax.random.uniform(kx, (n, 1), minval=-3.0, maxval=3.0)
    return x, jnp.sin(2.0 * x) + noise * jax.random.normal(ky, (n, 1))


@functools.lru_cache(maxsize=None)
def _regression():
    def f(x):
        out = bl.SparseGaussianProcess(1, 12, lengthscale_init=1.0)(x)
        raw_noise = hk.get_parameter("raw_noise", [], init=hk.initializers.Constant(-2.0))
        return out.mean(), out.variance(), jax.nn.softplus(raw_noise) + 1e-6, sum(bl.losses())

    net = hk.transform(f)
    x, y = _data(jax.random.PRNGKey(0), 300)
    params = net.init(jax.random.PRNGKey(1), x)
    opt = optax.adam(0.03)

    def loss(p):
        mean, var, noise, kl = net.apply(p, None, x)
        exp_ll = -0.5 * (jnp.square(y - mean) + var) / noise - 0.5 * jnp.log(2 * jnp.pi * noise)
        return -exp_ll.mean() + kl / len(x)

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(step, (p, opt.init(p)), None, length=600)[0][0]

    return net, train(params)


@pytest.mark.heavy  # 10-20 s: run by .ci/run's second pytest
def test_1d_regression_90_percent_intervals_cover_85_to_95_percent():
    net, params = _regression()
    x, y = _data(jax.random.PRNGKey(2), 1000)
    mean, var, noise, _ = net.apply(params, None, x)
    z = np.abs(np.asarray(y - mean)) / np.sqrt(np.asarray(var + noise))
    coverage = float(np.mean(z < 1.6449))
    assert 0.85 <= coverage <= 0.95, coverage
    assert abs(float(noise) - 0.01) < 0.005  # the true noise variance


def test_predictive_std_grows_to_the_prior_far_from_data():
    net, params = _regression()
    x = jnp.array([[0.0], [3.5], [5.0], [12.0]])
    _, var, _, _ = net.apply(params, None, x)
    std = np.sqrt(np.asarray(var))[:, 0]
    prior_std = float(np.sqrt(jax.nn.softplus(params["sparse_gaussian_process"]["raw_variance"])))
    assert std[0] < 0.2 * prior_std
    assert std[0] < std[1] < std[2] <= std[3] + 1e-6
    np.testing.assert_allclose(std[3], prior_std, rtol=1e-3)


def test_fast_cos_matches_cos():
    from mbrl_bayes.layers.gp import fast_cos

    z = jnp.concatenate([jnp.linspace(-4.0, 4.0, 10001),
                         jax.random.normal(jax.random.PRNGKey(0), (10000,)) * 50.0])
    err = jnp.abs(fast_cos(z) - jnp.cos(z))
    assert float(jnp.max(err[:10001])) < 1e-6
    assert float(jnp.max(err)) < 1e-5  # |z| up to ~200: the float32 input's own rounding
