"""Bad input raises one clear error while tracing (nothing is compiled or run)."""

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

KEY = jax.random.PRNGKey(0)


def _trace(fn, *args):
    """Traces init then apply of ``fn`` (as jax.jit would) without compiling anything."""
    model = hk.transform(fn)
    params = jax.eval_shape(model.init, KEY, *args)
    return jax.eval_shape(model.apply, params, KEY, *args)


@pytest.mark.parametrize("fn,shape,message", [
    (lambda x: bl.DenseReparameterization(2)(x), (), "must not be a scalar"),
    (lambda x: bl.DenseFlipout(2)(x), (), "must not be a scalar"),
    (lambda x: bl.Conv2DReparameterization(2, 3)(x), (4, 4), r"rank 3 \(unbatched\) or 4"),
    (lambda x: bl.Conv2DFlipout(2, 3)(x), (1, 2, 4, 4, 1), r"rank 3 \(unbatched\) or 4"),
    (lambda x: bl.LSTMCellReparameterization(2)(x, bl.LSTMCellReparameterization(2)
                                                .initial_state(1)), (1, 1, 3), "rank 1"),
])
def test_wrong_rank(fn, shape, message):
    with pytest.raises(ValueError, match=message):
        _trace(fn, jnp.ones(shape))


def test_feature_size_changes_between_calls():
    def dense(x):
        layer = bl.DenseReparameterization(2)
        return layer(x), layer(jnp.concatenate([x, x], -1))

    def conv(x):
        layer = bl.Conv2DFlipout(2, 3)
        return layer(x), layer(jnp.concatenate([x, x], -1))

    def lstm(x):
        cell = bl.LSTMCellFlipout(2)
        state = cell.initial_state(1)
        return cell(jnp.concatenate([x, x], -1), cell(x, state)[1])

    for fn, shape, what in ((dense, (1, 3), "3 input features, now with 6"),
                            (conv, (1, 4, 4, 3), "3 input channels, now with 6"),
                            (lstm, (1, 3), "3 input features, now with 6")):
        with pytest.raises(ValueError, match=what):
            _trace(fn, jnp.ones(shape))


def test_params_of_another_input_size():
    model = hk.transform(lambda x: bl.DenseReparameterization(2)(x))
    params = jax.eval_shape(model.init, KEY, jnp.ones([1, 3]))
    with pytest.raises(ValueError, match="does not match"):
        jax.eval_shape(model.apply, params, KEY, jnp.ones([1, 4]))


def test_non_positive_stddev():
    with pytest.raises(ValueError, match="stddev must be > 0"):
        bl.TrainableNormalFixedStddev(-1.0)
    with pytest.raises(ValueError, match="stddev must be > 0"):
        bl.NormalKLDivergence(stddev=-1.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        bl.LaplaceKLDivergence(scale=0.0)
    with pytest.raises(ValueError, match="stddev must be > 0"):  # at trace time, in a model
        _trace(lambda x: bl.DenseReparameterization(
            2, kernel_regularizer=bl.NormalKLDivergence(stddev=np.array(-0.5)))(x),
            jnp.ones([1, 2]))


def test_unknown_or_wrong_initializers_and_regularizers():
    x = jnp.ones([1, 4, 4, 2])
    with pytest.raises(ValueError, match="Unknown trainable initializer 'trainable_nromal'.*"
                                         "trainable_normal"):
        _trace(lambda x: bl.DenseReparameterization(2, kernel_initializer="trainable_nromal")(x),
               x)
    with pytest.raises(ValueError, match="Unknown regularizer 'normal_kl'"):
        _trace(lambda x: bl.Conv2DFlipout(2, 3, kernel_regularizer="normal_kl")(x), x)
    with pytest.raises(TypeError, match="w_init="):
        _trace(lambda x: bl.Conv2DReparameterization(
            2, 3, kernel_initializer=hk.initializers.Constant(0.0))(x), x)
    with pytest.raises(ValueError, match="Unknown trainable initializer 'normal'"):
        bl.get_initializer("normal")
    with pytest.raises(TypeError, match="Expected a regularizer"):
        bl.get_regularizer(0.1)
    with pytest.raises(ValueError, match="scalar event shape"):
        bl.KLDivergence(distrax.MultivariateNormalDiag(jnp.zeros(2)))
    with pytest.raises(ValueError, match="num_samples"):
        bl.LaplaceKLDivergence(num_samples=0)


def test_integer_inputs():
    with pytest.raises(TypeError, match="floating-point inputs"):
        _trace(lambda x: bl.DenseReparameterization(2)(x), jnp.ones([1, 2], jnp.int32))


def test_lstm_needs_its_own_state_to_sample():
    def plain_state(x):
        cell = bl.LSTMCellReparameterization(2)
        return cell(x, hk.LSTMState(jnp.zeros([1, 2]), jnp.zeros([1, 2])))

    with pytest.raises(TypeError, match=r"initial_state\(\)"):
        _trace(plain_state, jnp.ones([1, 3]))
    with bl.posterior_mean():  # the mean needs no key: a plain hk.LSTMState is fine
        out, state = _trace(plain_state, jnp.ones([1, 3]))
    assert out.shape == (1, 2) and state.weight_key is None

    def mean_state_then_sample(x):
        cell = bl.LSTMCellReparameterization(2)
        with bl.posterior_mean():
            state = cell.initial_state(1)
        return cell(x, state)

    with pytest.raises(ValueError, match="carries no weight key"):
        _trace(mean_state_then_sample, jnp.ones([1, 3]))
