"""Ensembles as layers: ``bl.DenseBatchEnsemble`` and ``bl.DenseRank1``."""

import haiku as hk
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

K = 3
X = np.random.default_rng(0).standard_normal([K, 5, 4]).astype(np.float32)  # [members, m, n_in]


def batch_ensemble(x):
    return bl.DenseBatchEnsemble(2, K, name="be")(x)


def rank1(x):
    return bl.DenseRank1(2, K, name="r1")(x), bl.losses()


def per_member(model):
    """``model.apply`` with member i on ``x[i]``, all members in one vmapped call."""
    def member_apply(params, key, member, x):
        with bl.ensemble_member(member):
            return model.apply(params, key, x)

    return jax.jit(jax.vmap(member_apply, (None, 0, 0, 0)))


def count_dots(jaxpr):
    """Matrix products in ``jaxpr``, inner jaxprs (jit, custom_jvp, ...) included."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "dot_general"
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += count_dots(sub)
    return count


def test_batch_ensemble_members_are_rank1_factors_of_one_matrix():
    model = hk.transform(batch_ensemble)
    params = model.init(jax.random.PRNGKey(0), X[0])  # init needs no member
    p = params["be"]
    assert {k: v.shape for k, v in p.items()} == {"w": (4, 2), "alpha": (K, 4),
                                                  "gamma": (K, 2), "b": (K, 2)}
    assert np.std(p["alpha"]) > 0.2  # members differ from the start
    p = {**p, "b": np.arange(K * 2, dtype=np.float32).reshape(K, 2)}
    params = {"be": p}
    keys = jax.random.split(jax.random.PRNGKey(1), K)
    out = per_member(model)(params, keys, jnp.arange(K), X)
    for i in range(K):
        expected = ((X[i] * p["alpha"][i]) @ p["w"]) * p["gamma"][i] + p["b"][i]
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)
    # The k members are one matrix product with the shared weight, not k of them.
    jaxpr = jax.make_jaxpr(per_member(model))(params, keys, jnp.arange(K), X)
    assert count_dots(jaxpr.jaxpr) == 1
    with pytest.raises(ValueError, match="needs an ensemble member"):
        model.apply(params, None, X[0])


def test_rank1_a_function_draw_is_a_member_and_a_key():
    model = hk.transform(rank1)
    params = model.init(jax.random.PRNGKey(0), X[0])
    p = params["r1"]
    assert set(p) == {"w", "b", "alpha_loc", "alpha_raw_scale", "gamma_loc", "gamma_raw_scale"}
    apply = per_member(model)
    members = jnp.arange(K)
    keys = jax.random.split(jax.random.PRNGKey(1), K)
    out, kls = apply(params, keys, members, X)
    again, _ = apply(params, keys, members, X)
    other, _ = apply(params, jax.random.split(jax.random.PRNGKey(2), K), members, X)
    np.testing.assert_array_equal(out, again)
    assert np.abs(out - other).max() > 1e-4
    # KL(q || N(1, 1)) of both factors of all members, once per call, for every member.
    kl = 0.0
    for name in ("alpha", "gamma"):
        loc = np.asarray(p[f"{name}_loc"], np.float64)
        scale = np.log1p(np.exp(np.asarray(p[f"{name}_raw_scale"], np.float64)))
        kl += np.sum(-np.log(scale) + (scale ** 2 + (loc - 1.0) ** 2) / 2 - 0.5)
    assert len(kls) == 2
    np.testing.assert_allclose(sum(kls), np.full(K, kl), rtol=1e-5)
    # At the posterior mean the layer is the batch ensemble of the means (no rng needed).
    mean_out, _ = per_member(hk.transform(bl.posterior_mean()(rank1)))(
        params, keys, members, X)
    for i in range(K):
        expected = ((X[i] * p["alpha_loc"][i]) @ p["w"]) * p["gamma_loc"][i] + p["b"][i]
        np.testing.assert_allclose(mean_out[i], expected, rtol=1e-5, atol=1e-5)
