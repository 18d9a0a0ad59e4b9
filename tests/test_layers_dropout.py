"""``bl.MCDropout``: the mask is ``Bernoulli(1 - rate)`` from ``hk.next_rng_key()``, one per
call (a key is one function) or one per row (training), the identity at the posterior mean and
in ``init``, and unbiased."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

RATE = 0.4
KEY = jax.random.PRNGKey(2)
X = np.random.default_rng(0).uniform(0.5, 1.5, [4, 6]).astype(np.float32)


def _first_key(key):
    return hk.transform(hk.next_rng_key).apply({}, key)


@pytest.fixture(scope="module")
def masked():
    def dropout(per_row):
        return hk.transform(lambda x: bl.MCDropout(RATE, per_row=per_row)(x))

    function, per_row = dropout(False), dropout(True)

    @jax.jit
    def run():
        k = _first_key(KEY)
        return {
            "function": function.apply({}, KEY, X),
            "per_row": per_row.apply({}, KEY, X),
            "function_as_flipout": bl.estimator("flipout")(function.apply)({}, KEY, X),
            "function_as_local": bl.estimator("local_reparameterization")(function.apply)(
                {}, KEY, X),
            "per_row_as_reparameterization": bl.estimator("reparameterization")(
                per_row.apply)({}, KEY, X),
            "mean": bl.posterior_mean()(per_row.apply)({}, None, X),
            "expected_function": X * jax.random.bernoulli(k, 1 - RATE, X.shape[-1:]) / (1 - RATE),
            "expected_per_row": X * jax.random.bernoulli(k, 1 - RATE, X.shape) / (1 - RATE),
            "many": jax.vmap(per_row.apply, (None, 0, None))(
                {}, jax.random.split(KEY, 4000), X),
            # Function axis first: 3 draws, each one mask for its 4 rows.
            "functions": jax.vmap(function.apply, (None, 0, 0))(
                {}, jax.random.split(KEY, 3), jnp.broadcast_to(X, (3,) + X.shape)),
        }

    return run()


def test_a_mask_is_bernoulli_from_the_next_rng_key(masked):
    np.testing.assert_allclose(masked["function"], masked["expected_function"], rtol=1e-6)
    np.testing.assert_allclose(masked["per_row"], masked["expected_per_row"], rtol=1e-6)
    # One mask per call: every row drops the same units; per row: the rows differ.
    dropped = np.asarray(masked["function"]) == 0
    assert dropped.any() and (dropped == dropped[:1]).all()
    dropped = np.asarray(masked["per_row"]) == 0
    assert dropped.any() and not (dropped == dropped[:1]).all()
    for draw in masked["functions"]:
        assert ((draw == 0) == (draw[:1] == 0)).all()
    assert not np.array_equal(masked["functions"][0] == 0, masked["functions"][1] == 0)


def test_the_estimator_context_chooses_the_mask(masked):
    for per_row in ("function_as_flipout", "function_as_local"):
        np.testing.assert_allclose(masked[per_row], masked["expected_per_row"], rtol=1e-6)
    np.testing.assert_allclose(masked["per_row_as_reparameterization"],
                               masked["expected_function"], rtol=1e-6)


def test_unbiased_keep_rate_and_identity_at_the_mean(masked):
    many = np.asarray(masked["many"])
    np.testing.assert_allclose((many != 0).mean(), 1 - RATE, atol=0.01)
    # mean of x * mask / keep is x; its stddev per draw is x * sqrt(rate / keep).
    stderr = X * np.sqrt(RATE / (1 - RATE) / many.shape[0])
    assert np.all(np.abs(many.mean(0) - X) < 5 * stderr)
    np.testing.assert_array_equal(masked["mean"], X)


def test_init_takes_no_key_and_rate_is_checked():
    """A network with MC dropout initialises exactly as the one without (same keys)."""
    def net(with_dropout):
        def forward(x):
            h = jax.nn.relu(hk.Linear(5)(x))
            if with_dropout:
                h = bl.MCDropout(0.5)(h)
            return hk.Linear(2)(h)
        return hk.transform(forward)

    with_dropout = net(True).init(KEY, X)
    jax.tree.map(np.testing.assert_array_equal, with_dropout, net(False).init(KEY, X))
    for rate in (1.0, -0.1):
        with pytest.raises(ValueError, match="rate must be in"):
            hk.transform(lambda r=rate: bl.MCDropout(r)).init(None)
    identity = hk.transform(lambda x: bl.MCDropout(0.0)(x)).apply({}, None, X)
    np.testing.assert_array_equal(identity, X)
