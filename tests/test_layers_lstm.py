"""Bayesian LSTM cells: one weight draw per sequence, its KL counted once."""

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl
from mbrl_bayes.layers.module import sample_or_mean

HIDDEN, N_IN, BATCH, STEPS = 3, 2, 2, 5
KEY = jax.random.PRNGKey(0)


def _unroll(cell_cls, unroll=hk.dynamic_unroll):
    def fn(xs, state=None):
        cell = cell_cls(HIDDEN, name="cell")
        if state is None:
            state = cell.initial_state(xs.shape[1])
        outputs, state = unroll(cell, xs, state)
        return outputs, state, bl.losses()
    return hk.transform(fn)


def _manual_loop(cell_cls):
    """The poster's loop: a Python for over time steps."""
    def fn(xs):
        cell = cell_cls(HIDDEN, name="cell")
        state = cell.initial_state(xs.shape[1])
        outputs = []
        for t in range(xs.shape[0]):
            out, state = cell(xs[t], state)
            outputs.append(out)
        return jnp.stack(outputs), state
    return hk.transform(fn)


def _numpy_lstm(xs, hidden, cell, w, b):
    """hk.LSTM's equations with fixed weights ``w`` [n_in + H, 4H], ``b`` [4H]."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    outputs = []
    for x in xs:
        i, g, f, o = np.split(np.concatenate([x, hidden], -1) @ w + b, 4, axis=-1)
        cell = sigmoid(f + 1) * cell + sigmoid(i) * np.tanh(g)
        hidden = sigmoid(o) * np.tanh(cell)
        outputs.append(hidden)
    return np.stack(outputs)


@pytest.fixture(scope="module")
def lstm_runs():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal([STEPS, BATCH, N_IN]).astype(np.float32)
    xs[:, 1] = xs[:, 0]  # two identical sequences in the batch
    params = {"cell": {
        "w_loc": (0.5 * rng.standard_normal([N_IN + HIDDEN, 4 * HIDDEN])).astype(np.float32),
        "w_raw_scale": np.full([N_IN + HIDDEN, 4 * HIDDEN], np.log(np.expm1(0.3)), np.float32),
        "b": (0.1 * rng.standard_normal([4 * HIDDEN])).astype(np.float32),
    }}
    reparam, flipout = (_unroll(c) for c in (bl.LSTMCellReparameterization, bl.LSTMCellFlipout))
    static = _unroll(bl.LSTMCellReparameterization, hk.static_unroll)
    loop = _manual_loop(bl.LSTMCellReparameterization)
    key, other_key = jax.random.PRNGKey(1), jax.random.PRNGKey(2)

    @jax.jit
    def run(params):
        head_out, head_state, _ = reparam.apply(params, key, xs[:2])
        flipout_head, flipout_state, _ = flipout.apply(params, key, xs[:2])
        # Continue the sequence in another apply call with another rng: the state's key rules.
        tail_out, _, _ = reparam.apply(params, other_key, xs[2:], head_state)
        one_step = reparam.apply(params, key, xs[:1])
        return dict(
            dynamic=reparam.apply(params, key, xs),
            static=static.apply(params, key, xs),
            loop=loop.apply(params, key, xs),
            resumed=jnp.concatenate([head_out, tail_out]),
            one_step_losses=one_step[2],
            other_key=reparam.apply(params, other_key, xs)[0],
            flipout=flipout.apply(params, key, xs),
            flipout_resumed=jnp.concatenate(
                [flipout_head, flipout.apply(params, other_key, xs[2:], flipout_state)[0]]),
            grads=jax.grad(lambda p: jnp.sum(jnp.sin(reparam.apply(p, key, xs)[0])))(params),
        )

    return xs, params, run(params)


def test_unroll_uses_one_weight_sample(lstm_runs):
    xs, params, runs = lstm_runs
    outputs, state, _ = runs["dynamic"]
    # The one draw, as DenseReparameterization draws it, from the state's weight key.
    kernel_key, _ = jax.random.split(state.weight_key)
    p = params["cell"]
    w = sample_or_mean(distrax.Normal(p["w_loc"], jax.nn.softplus(p["w_raw_scale"])),
                       kernel_key)
    zeros = np.zeros([BATCH, HIDDEN], np.float32)
    expected = _numpy_lstm(xs, zeros, zeros, np.asarray(w), p["b"])
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(w) - p["w_loc"]).max() > 0.1  # a real sample, not the mean


def test_every_unroll_gives_the_same_sequence(lstm_runs):
    _, _, runs = lstm_runs
    outputs = runs["dynamic"][0]
    np.testing.assert_allclose(runs["static"][0], outputs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(runs["loop"][0], outputs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(runs["resumed"], outputs, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(runs["loop"][1].weight_key, runs["dynamic"][1].weight_key)
    assert float(jnp.max(jnp.abs(runs["other_key"] - outputs))) > 1e-3


def test_kl_counted_once_per_sequence(lstm_runs):
    _, params, runs = lstm_runs
    losses_t5, losses_t1 = runs["dynamic"][2], runs["one_step_losses"]
    assert len(losses_t5) == len(losses_t1) == 1
    np.testing.assert_allclose(losses_t5[0], losses_t1[0], rtol=1e-6)
    p = params["cell"]
    scale = np.log1p(np.exp(p["w_raw_scale"].astype(np.float64)))
    kl = np.sum(-np.log(scale) + (scale ** 2 + p["w_loc"].astype(np.float64) ** 2) / 2 - 0.5)
    np.testing.assert_allclose(losses_t5[0], kl, rtol=1e-5)


def test_flipout_cell_keeps_each_sequences_weights(lstm_runs):
    _, _, runs = lstm_runs
    reparam_out, flipout_out = runs["dynamic"][0], runs["flipout"][0]
    # Identical sequences 0 and 1: one shared draw gives identical outputs; Flipout gives each
    # sequence its own weights...
    np.testing.assert_array_equal(reparam_out[:, 0], reparam_out[:, 1])
    assert float(jnp.max(jnp.abs(flipout_out[:, 0] - flipout_out[:, 1]))) > 1e-3
    # ... which it keeps at every step, also across apply calls.
    np.testing.assert_allclose(runs["flipout_resumed"], flipout_out, rtol=1e-6, atol=1e-6)


def test_lstm_gradients_reach_mean_and_scale(lstm_runs):
    _, _, runs = lstm_runs
    for name in ("w_loc", "w_raw_scale", "b"):
        g = np.asarray(runs["grads"]["cell"][name])
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4, name
