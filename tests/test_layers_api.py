"""Bayesian layers are drop-in replacements: same constructor, shapes and state structure.

Shapes are checked by tracing only (``jax.eval_shape``); numbers by a few compiled functions
shared through module-scoped fixtures (XLA compilation dominates the runtime of these tests).
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

KEY = jax.random.PRNGKey(0)
APPLY_KEY = jax.random.PRNGKey(1)


def _shapes(fn, *args):
    """Shapes of init's params and of apply's outputs, traced only (nothing compiled)."""
    model = hk.transform(fn)
    params = jax.eval_shape(model.init, KEY, *args)
    outputs = jax.eval_shape(model.apply, params, APPLY_KEY, *args)
    return (jax.tree.map(lambda a: a.shape, params), jax.tree.map(lambda a: a.shape, outputs))


@pytest.mark.parametrize("layer", [bl.DenseReparameterization, bl.DenseFlipout])
@pytest.mark.parametrize("input_shape,output_size",
                         [((3,), 2), ((4, 3), 1), ((2, 5, 3), 4), ((1, 1, 2, 7), 3)])
def test_dense_matches_linear_shapes(layer, input_shape, output_size):
    x = jnp.ones(input_shape)
    linear_params, linear_out = _shapes(lambda x: hk.Linear(output_size)(x), x)
    params, out = _shapes(lambda x: layer(output_size)(x), x)
    assert out == linear_out == input_shape[:-1] + (output_size,)
    (module_params,) = params.values()
    w, b = linear_params["linear"]["w"], linear_params["linear"]["b"]
    assert module_params == {"w_loc": w, "w_raw_scale": w, "b": b}


def test_dense_constructor_mirrors_linear_positionally():
    x = jnp.ones([2, 3])
    params, out = _shapes(lambda x: bl.DenseReparameterization(4, False, None, None, "d")(x), x)
    assert params == {"d": {"w_loc": (3, 4), "w_raw_scale": (3, 4)}} and out == (2, 4)
    params, _ = _shapes(lambda x: bl.DenseFlipout(4, True, None, None, "f")(x), x)
    assert params == {"f": {"w_loc": (3, 4), "w_raw_scale": (3, 4), "b": (4,)}}


def test_dense_init_honours_w_init_b_init_and_starts_near_its_mean():
    x = np.ones([2, 4], np.float32)
    dense = hk.transform(lambda x: bl.DenseReparameterization(3)(x))
    flipout = hk.transform(lambda x: bl.DenseFlipout(
        3, True, hk.initializers.Constant(0.5), hk.initializers.Constant(-1.0))(x))

    @jax.jit
    def run(key):
        params = dense.init(key, x)
        sampled = dense.apply(params, APPLY_KEY, x)
        return params, flipout.init(key, x), sampled, bl.posterior_mean()(dense.apply)(
            params, None, x)

    dense_params, flipout_params, sampled, mean = run(KEY)
    dense_params = dense_params["dense_reparameterization"]
    scales = jax.nn.softplus(dense_params["w_raw_scale"])
    assert 0.03 < float(scales.min()) and float(scales.max()) < 0.07  # Edward2's ~0.049
    np.testing.assert_array_equal(dense_params["b"], np.zeros([3]))
    np.testing.assert_array_equal(flipout_params["dense_flipout"]["w_loc"], np.full([4, 3], 0.5))
    np.testing.assert_array_equal(flipout_params["dense_flipout"]["b"], np.full([3], -1.0))
    # A first weight draw computes nearly the mean function.
    assert 0 < float(jnp.max(jnp.abs(sampled - mean))) < 0.5


def mlp(sizes, Linear=hk.Linear):  # noqa: N803 (a layer class, as in the README)
    """A small MLP builder taking the linear layer class (``hk.nets.MLP`` does not)."""
    layers = []
    for size in sizes[:-1]:
        layers += [Linear(size), jax.nn.relu]
    return hk.Sequential(layers + [Linear(sizes[-1])])


@pytest.mark.parametrize("bayesian", [False, True])
def test_mlp_one_line_swap(bayesian):
    Linear = bl.DenseReparameterization if bayesian else hk.Linear  # the one-line swap
    x = jnp.ones([7, 3])
    params, out = _shapes(lambda x: mlp([8, 8, 2], Linear=Linear)(x), x)
    _, reference_out = _shapes(lambda x: hk.nets.MLP([8, 8, 2])(x), x)
    assert out == reference_out == (7, 2)
    assert len(params) == 3


CONV_CASES = [
    dict(kwargs=dict(output_channels=4, kernel_shape=3), shape=(2, 6, 6, 3)),
    dict(kwargs=dict(output_channels=2, kernel_shape=(2, 3), stride=2, padding="VALID"),
         shape=(1, 7, 5, 2)),
    dict(kwargs=dict(output_channels=3, kernel_shape=3, rate=2), shape=(6, 6, 2)),  # unbatched
    dict(kwargs=dict(output_channels=4, kernel_shape=1, data_format="NCHW"), shape=(2, 3, 5, 5)),
    dict(kwargs=dict(output_channels=4, kernel_shape=3, feature_group_count=2,
                     padding=[(1, 0), (0, 1)]), shape=(2, 4, 4, 4)),
    dict(kwargs=dict(output_channels=2, kernel_shape=3, padding=hk.pad.causal,
                     with_bias=False), shape=(1, 5, 5, 1)),
]


@pytest.mark.parametrize("layer", [bl.Conv2DReparameterization, bl.Conv2DFlipout])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_hk_conv2d_shapes(layer, case):
    x = jnp.ones(case["shape"])
    conv_params, conv_out = _shapes(lambda x: hk.Conv2D(**case["kwargs"])(x), x)
    params, out = _shapes(lambda x: layer(**case["kwargs"])(x), x)
    assert out == conv_out
    (module_params,) = params.values()
    assert module_params["w_loc"] == module_params["w_raw_scale"] == conv_params["conv2_d"]["w"]
    assert module_params.get("b") == conv_params["conv2_d"].get("b")


def test_conv2d_constructor_mirrors_hk_conv2d_positionally():
    args = (3, 2, 1, 1, "VALID", False, None, None, "NHWC", None, 1, "c")
    x = jnp.ones([1, 4, 4, 2])
    conv_params, conv_out = _shapes(lambda x: hk.Conv2D(*args)(x), x)
    params, out = _shapes(lambda x: bl.Conv2DReparameterization(*args)(x), x)
    assert out == conv_out == (1, 3, 3, 3)
    assert params == {"c": {"w_loc": (2, 2, 2, 3), "w_raw_scale": (2, 2, 2, 3)}}


@pytest.mark.parametrize("cell", [bl.LSTMCellReparameterization, bl.LSTMCellFlipout])
@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_lstm_matches_hk_lstm_shapes(cell, batch_size):
    steps, n_in, hidden = 4, 2, 5
    xs = jnp.ones((steps, n_in) if batch_size is None else (steps, batch_size, n_in))

    def unroll(core_cls):
        def fn(xs):
            core = core_cls(hidden)
            return hk.dynamic_unroll(core, xs, core.initial_state(batch_size))
        return fn

    lstm_params, (lstm_out, lstm_state) = _shapes(unroll(hk.LSTM), xs)
    params, (out, state) = _shapes(unroll(cell), xs)
    assert out == lstm_out
    assert isinstance(state, bl.BayesianLSTMState)
    assert (state.hidden, state.cell) == (lstm_state.hidden, lstm_state.cell)
    assert state.weight_key == APPLY_KEY.shape  # no batch axis: one draw for the batch
    (module_params,) = params.values()
    assert module_params["w_loc"] == lstm_params["lstm/linear"]["w"]
    assert module_params["b"] == lstm_params["lstm/linear"]["b"]


def test_lstm_composes_with_deep_rnn_and_static_unroll():
    def fn(xs):
        core = hk.DeepRNN([bl.LSTMCellReparameterization(4), jax.nn.relu,
                           bl.LSTMCellFlipout(3)])
        return hk.static_unroll(core, xs, core.initial_state(2))

    params, (out, state) = _shapes(fn, jnp.ones([3, 2, 5]))
    assert out == (3, 2, 3)
    assert [s.hidden for s in state] == [(2, 4), (2, 3)]
    assert len(params) == 2


def _random_params(shapes, seed=0):
    """Posterior parameters with spread-out means and scales, from numpy (nothing compiled)."""
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        name = path[-1].key
        if name == "w_raw_scale":
            return np.log(np.expm1(rng.uniform(0.05, 0.3, shape))).astype(np.float32)
        return (0.5 * rng.standard_normal(shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes, is_leaf=lambda s: isinstance(s, tuple))


CONV_KWARGS = CONV_CASES[4]["kwargs"]  # grouped, asymmetric padding
CONV_NCHW_KWARGS = dict(output_channels=2, kernel_shape=(2, 3), stride=(2, 1),
                        data_format="NCHW")


def _layers_and_references(x, x_nchw, xs):
    """Every Bayesian layer next to the Haiku layer it replaces."""
    def lstm_unroll(core):
        return hk.dynamic_unroll(core, xs, core.initial_state(xs.shape[1]))

    return {
        "dense": (bl.DenseReparameterization(3)(x), bl.DenseFlipout(3)(x)),
        "conv": (bl.Conv2DReparameterization(**CONV_KWARGS)(x_nchw.transpose(0, 2, 3, 1)),
                 bl.Conv2DFlipout(**CONV_KWARGS)(x_nchw.transpose(0, 2, 3, 1))),
        "conv_nchw": (bl.Conv2DReparameterization(**CONV_NCHW_KWARGS)(x_nchw),
                      bl.Conv2DFlipout(**CONV_NCHW_KWARGS)(x_nchw)),
        "lstm": (lstm_unroll(bl.LSTMCellReparameterization(4))[0],
                 lstm_unroll(bl.LSTMCellFlipout(4))[0]),
    }


def _references(params, x, x_nchw, xs):
    """The Haiku layers, with each Bayesian layer's posterior mean as their weights."""
    def hk_params(name, module="~"):
        p = params[name]
        return {module: {"w": p["w_loc"], "b": p["b"]}}

    def run(fn, p, *args):
        return hk.transform(fn).apply(p, None, *args)

    linear = lambda x: hk.Linear(3)(x)
    conv = lambda x: hk.Conv2D(**CONV_KWARGS)(x.transpose(0, 2, 3, 1))
    conv_nchw = lambda x: hk.Conv2D(**CONV_NCHW_KWARGS)(x)

    def lstm(xs):
        core = hk.LSTM(4)
        return hk.dynamic_unroll(core, xs, core.initial_state(xs.shape[1]))[0]

    out = {}
    for key, fn, module, arg, names in [
            ("dense", linear, "linear", x, ("dense_reparameterization", "dense_flipout")),
            ("conv", conv, "conv2_d", x_nchw, ("conv2_d_reparameterization", "conv2_d_flipout")),
            ("conv_nchw", conv_nchw, "conv2_d",
             x_nchw, ("conv2_d_reparameterization_1", "conv2_d_flipout_1")),
            ("lstm", lstm, "lstm/linear", xs,
             ("lstm_cell_reparameterization", "lstm_cell_flipout"))]:
        out[key] = tuple(run(fn, hk_params(name, module), arg) for name in names)
    return out


@pytest.fixture(scope="module")
def layer_outputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal([5, 4]).astype(np.float32)
    x_nchw = rng.standard_normal([2, 4, 5, 5]).astype(np.float32)
    xs = rng.standard_normal([3, 2, 2]).astype(np.float32)
    model = hk.transform(_layers_and_references)
    params = _random_params(jax.tree.map(lambda a: a.shape,
                                         jax.eval_shape(model.init, KEY, x, x_nchw, xs)))

    @jax.jit
    def run(params, key):
        sampled = model.apply(params, key, x, x_nchw, xs)
        mean = bl.posterior_mean()(model.apply)(params, None, x, x_nchw, xs)
        return sampled, mean, _references(params, x, x_nchw, xs)

    return run(params, APPLY_KEY)


@pytest.mark.parametrize("layer", ["dense", "conv", "conv_nchw", "lstm"])
def test_posterior_mean_computes_the_haiku_layer(layer_outputs, layer):
    sampled, mean, reference = (outputs[layer] for outputs in layer_outputs)
    for estimator in range(2):  # reparameterization, flipout
        np.testing.assert_allclose(mean[estimator], reference[estimator], rtol=1e-5, atol=1e-5)
        assert sampled[estimator].shape == reference[estimator].shape
        # A sample differs from the mean, by about the posterior's spread (scales 0.05-0.3).
        gap = float(jnp.max(jnp.abs(sampled[estimator] - mean[estimator])))
        assert 0.01 < gap < 5.0


def test_initializers_and_regularizers_by_name():
    assert isinstance(bl.get_initializer("trainable_normal"), bl.TrainableNormal)
    assert isinstance(bl.get_initializer("trainable_he_normal"), bl.TrainableHeNormal)
    assert isinstance(bl.get_initializer("trainable_glorot_normal"), bl.TrainableGlorotNormal)
    assert isinstance(bl.get_initializer("trainable_deterministic"), bl.TrainableDeterministic)
    assert isinstance(bl.get_initializer("trainable_normal_fixed_stddev"),
                      bl.TrainableNormalFixedStddev)
    init = bl.TrainableNormalFixedStddev(0.2)
    assert bl.get_initializer(init) is init
    assert bl.get_regularizer("normal_kl_divergence") == bl.NormalKLDivergence()
    assert bl.get_regularizer("laplace_kl_divergence") == bl.LaplaceKLDivergence()
    assert bl.get_regularizer(None) is None


def test_initializers_create_their_parameters_and_mean_scales():
    initializers = {
        "normal": bl.TrainableNormal(),
        "he": bl.TrainableHeNormal(),
        "glorot": bl.TrainableGlorotNormal(),
        "fixed": bl.TrainableNormalFixedStddev(0.1),
        "point": bl.TrainableDeterministic(),
    }

    def fn(x):
        for name, init in initializers.items():
            bl.DenseReparameterization(100, kernel_initializer=init, name=name)(x)

    params = jax.jit(hk.transform(fn).init)(KEY, np.ones([1, 400], np.float32))
    assert {name: sorted(p) for name, p in params.items()} == {
        "normal": ["b", "w_loc", "w_raw_scale"], "he": ["b", "w_loc", "w_raw_scale"],
        "glorot": ["b", "w_loc", "w_raw_scale"], "fixed": ["b", "w_loc"], "point": ["b", "w"]}
    # He / Glorot: variance scaling (corrected for truncation); the default is hk.Linear's
    # TruncatedNormal(1 / sqrt(fan_in)), whose truncation at 2 stddev leaves 0.88 of it.
    expected_std = {"normal": 0.88 / 20, "he": np.sqrt(2 / 400), "glorot": np.sqrt(2 / 500),
                    "fixed": 0.88 / 20, "point": 0.88 / 20}
    for name, std in expected_std.items():
        loc = params[name]["w" if name == "point" else "w_loc"]
        np.testing.assert_allclose(np.std(loc), std, rtol=0.05, err_msg=name)
