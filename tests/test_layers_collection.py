"""``bl.losses()`` under JAX and Haiku transforms, and ``bl.posterior_mean()``."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl
from mbrl_bayes.layers import collection

KEY = jax.random.PRNGKey(0)
X = np.random.default_rng(0).standard_normal([3, 4]).astype(np.float32)


def forward(x):
    """Bayesian layers applied twice, under hk.vmap and under hk.remat."""
    shared = bl.DenseReparameterization(4, name="shared")
    h = shared(shared(x))  # applied twice: counted once
    split_rng = not hk.running_init()
    h = hk.vmap(lambda r: bl.DenseFlipout(4, name="mapped")(r), split_rng=split_rng)(
        jnp.stack([h, h]))
    return hk.remat(lambda r: bl.DenseReparameterization(2, name="remat")(r))(h)


def elbo_terms(x):
    out = forward(x)
    return jnp.mean(out ** 2), bl.losses()


MODEL = hk.transform(elbo_terms)
NAMES = ("shared", "mapped", "remat")


def _posterior_params(model=MODEL, *args):
    """Spread-out posterior parameters from numpy: no init to compile or run op by op."""
    rng = np.random.default_rng(1)
    shapes = jax.eval_shape(model.init, KEY, *(args or (X,)))

    def leaf(path, a):
        if path[-1].key == "w_raw_scale":
            return np.log(np.expm1(rng.uniform(0.1, 0.5, a.shape))).astype(np.float32)
        return (0.5 * rng.standard_normal(a.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _closed_form_kl(p):
    loc, raw = (np.asarray(p[k], np.float64) for k in ("w_loc", "w_raw_scale"))
    scale = np.log1p(np.exp(raw))
    return np.sum(-np.log(scale) + (scale ** 2 + loc ** 2) / 2 - 0.5)


@pytest.fixture(scope="module")
def transformed_runs():
    params = _posterior_params()
    keys = jax.random.split(jax.random.PRNGKey(1), 3)

    def inside_hk_vmap(x):  # losses() called inside the hk.vmap that applies the layer
        def row(r):
            return bl.DenseReparameterization(2, name="inner")(r), bl.losses()
        return hk.vmap(row, split_rng=not hk.running_init())(x)

    def inside_hk_remat(x):  # losses() called inside hk.remat
        return hk.remat(lambda r: (forward(r), bl.losses()))(x)

    def with_state(x):
        count = hk.get_state("count", [], jnp.int32, init=jnp.zeros)
        hk.set_state("count", count + 1)
        return elbo_terms(x)

    models = {name: hk.transform(fn) for name, fn in
              (("inside_hk_vmap", inside_hk_vmap), ("inside_hk_remat", inside_hk_remat))}
    stateful = hk.transform_with_state(with_state)
    state = {"~": {"count": jnp.zeros([], jnp.int32)}}

    @jax.jit
    def run(params):
        inner_params = {"inner": params["remat"]}
        return dict(
            jit=MODEL.apply(params, KEY, X)[1],
            grad=jax.grad(lambda p: sum(MODEL.apply(p, KEY, X)[1]))(params),
            jax_vmap=jax.vmap(MODEL.apply, in_axes=(None, 0, None))(params, keys, X)[1],
            inside_hk_vmap=models["inside_hk_vmap"].apply(inner_params, KEY, X)[1],
            inside_hk_remat=models["inside_hk_remat"].apply(params, KEY, X)[1],
            with_state=stateful.apply(params, state, KEY, X),
        )

    return params, run(params)


def test_losses_count_each_layer_once_in_order(transformed_runs):
    params, runs = transformed_runs
    expected = [_closed_form_kl(params[name]) for name in NAMES]
    assert len(runs["jit"]) == 3
    np.testing.assert_allclose(runs["jit"], expected, rtol=1e-5)


def test_losses_under_grad(transformed_runs):
    params, runs = transformed_runs
    for name in NAMES:
        loc = params[name]["w_loc"]
        raw = params[name]["w_raw_scale"].astype(np.float64)
        scale = np.log1p(np.exp(raw))
        np.testing.assert_allclose(runs["grad"][name]["w_loc"], loc, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(runs["grad"][name]["w_raw_scale"],
                                   (scale - 1 / scale) / (1 + np.exp(-raw)), rtol=1e-4)


def test_losses_under_jax_vmap_and_inside_haiku_transforms(transformed_runs):
    params, runs = transformed_runs
    expected = [_closed_form_kl(params[name]) for name in NAMES]
    # jax.vmap over function draws (keys): the KL does not depend on the draw.
    assert [loss.shape for loss in runs["jax_vmap"]] == [(3,)] * 3
    np.testing.assert_allclose(np.stack(runs["jax_vmap"], 1), [expected] * 3, rtol=1e-5)
    # Called inside hk.vmap: one (equal) value per mapped row.
    (inner,) = runs["inside_hk_vmap"]
    np.testing.assert_allclose(inner, [_closed_form_kl(params["remat"])] * 3, rtol=1e-5)
    np.testing.assert_allclose(runs["inside_hk_remat"], expected, rtol=1e-5)
    (_, losses), state = runs["with_state"]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert int(state["~"]["count"]) == 1


def test_losses_are_scoped_to_one_transform_call():
    empty = hk.transform(lambda: bl.losses())
    assert empty.apply({}, None) == []
    with pytest.raises(ValueError, match="inside a function transformed by hk.transform"):
        bl.losses()

    def fails(x):
        bl.DenseReparameterization(2)(x)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        jax.eval_shape(hk.transform(fails).init, KEY, X)
    assert empty.apply({}, None) == []
    jax.eval_shape(hk.transform(_dense_pair).init, KEY, X)
    assert collection._records_by_call() == {}  # nothing kept once the calls ended


def test_monte_carlo_losses_follow_the_rng():
    def fn(x):
        bl.DenseReparameterization(2, kernel_regularizer="laplace_kl_divergence")(x)
        return bl.losses()[0]

    model = hk.transform(fn)
    params = _posterior_params(model)
    apply = jax.jit(model.apply)
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    assert apply(params, k1, X) == apply(params, k1, X) != apply(params, k2, X)
    mean_apply = jax.jit(bl.posterior_mean()(model.apply))
    assert np.isfinite(mean_apply(params, None, X))  # no rng: a fixed MC key


def _dense_pair(x):
    return bl.DenseReparameterization(3, name="dense")(x), bl.DenseFlipout(3, name="flip")(x)


def test_posterior_mean_decorated_apply_needs_no_rng():
    model = hk.transform(_dense_pair)
    params = _posterior_params(model)
    mean_apply = jax.jit(bl.posterior_mean()(model.apply))
    sample_apply = jax.jit(model.apply)  # its own trace: no stale switch from mean_apply
    dense, flip = mean_apply(params, None, X)
    for name, out in (("dense", dense), ("flip", flip)):
        np.testing.assert_allclose(out, X @ params[name]["w_loc"] + params[name]["b"],
                                   rtol=1e-5, atol=1e-6)
    sampled, _ = sample_apply(params, KEY, X)
    assert float(jnp.max(jnp.abs(sampled - dense))) > 1e-4
    assert not bl.is_posterior_mean()
    with pytest.raises(ValueError, match="posterior_mean"):
        model.apply(params, None, X)


def test_posterior_mean_as_a_static_switch_inside_the_model():
    def fn(x, evaluate):
        with bl.posterior_mean(evaluate):
            mean_out = _dense_pair(x)[0]
            with bl.posterior_mean(False):  # nested: sample again
                return mean_out, bl.DenseReparameterization(3, name="dense")(x)

    model = hk.transform(fn)
    params = _posterior_params(hk.transform(functools.partial(fn, evaluate=False)))
    apply = jax.jit(model.apply, static_argnames="evaluate")
    mean_out, sampled = apply(params, KEY, X, evaluate=True)
    np.testing.assert_allclose(mean_out, X @ params["dense"]["w_loc"] + params["dense"]["b"],
                               rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(sampled - mean_out))) > 1e-4
    first, _ = apply(params, KEY, X, evaluate=False)
    assert float(jnp.max(jnp.abs(first - mean_out))) > 1e-4
    assert not bl.is_posterior_mean()


def test_posterior_mean_switch_must_be_static():
    model = hk.transform(lambda x, evaluate: bl.posterior_mean(evaluate).__enter__())
    with pytest.raises(TypeError, match="static"):
        jax.eval_shape(model.init, KEY, X, True)
