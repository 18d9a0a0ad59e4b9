"""Conv1D, Conv3D, Conv2DTranspose and GRU are drop-in for Haiku's, like the first layers (see
test_layers_dropin.py): the same init key gives posterior means equal to the Haiku layer's
weights, a point posterior computes the Haiku layer, and a reparameterization draw is
``loc + softplus(raw) * jax.random.normal`` from ``hk.next_rng_key()``; a GRU uses one weight
draw per sequence (per row with Flipout), and counts each kernel's KL once."""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl

INIT_KEY = jax.random.PRNGKey(3)
APPLY_KEY = jax.random.PRNGKey(4)
_rng = np.random.default_rng(0)
SIGNAL = _rng.standard_normal([2, 6, 3]).astype(np.float32)  # [N, W, C]
SIGNAL_NCW = _rng.standard_normal([2, 3, 6]).astype(np.float32)
VOLUME = _rng.standard_normal([2, 3, 3, 3, 2]).astype(np.float32)  # [N, D, H, W, C]
IMAGES = _rng.standard_normal([2, 3, 3, 2]).astype(np.float32)  # [N, H, W, C]
SEQ = _rng.standard_normal([4, 2, 3]).astype(np.float32)  # [T, B, n_in]
POINT_LIKE = bl.TrainableNormal(raw_scale_init=hk.initializers.Constant(-40.0))
W_INIT = hk.initializers.VarianceScaling(2.0, "fan_avg", "uniform")
B_INIT = hk.initializers.RandomNormal(0.5)


def layer_net(layer, *args, **kwargs):
    return hk.transform(lambda x: layer(*args, **kwargs)(x))


def gru_net(core, *args, **kwargs):
    def forward(xs):
        cell = core(4, *args, **kwargs)
        return hk.dynamic_unroll(cell, xs, cell.initial_state(xs.shape[1]))[0]
    return hk.transform(forward)


# name -> (Haiku class, Bayesian classes, network builder, constructor args, input)
CASES = {
    "conv1d_ncw_w_init": (hk.Conv1D, (bl.Conv1DReparameterization, bl.Conv1DFlipout), layer_net,
                          dict(output_channels=4, kernel_shape=2, padding="VALID", w_init=W_INIT,
                               b_init=B_INIT, data_format="NCW"), SIGNAL_NCW),
    "conv3d": (hk.Conv3D, (bl.Conv3DReparameterization, bl.Conv3DFlipout), layer_net,
               dict(output_channels=3, kernel_shape=2), VOLUME),
    "conv2d_transpose": (hk.Conv2DTranspose, (bl.Conv2DTransposeReparameterization,
                                              bl.Conv2DTransposeFlipout), layer_net,
                         dict(output_channels=4, kernel_shape=3, stride=2), IMAGES),
    "conv2d_transpose_output_shape": (
        hk.Conv2DTranspose, (bl.Conv2DTransposeReparameterization, bl.Conv2DTransposeFlipout),
        layer_net, dict(output_channels=2, kernel_shape=(2, 3), stride=2, output_shape=(5, 6),
                        w_init=W_INIT, b_init=B_INIT), IMAGES),
    "gru": (hk.GRU, (bl.GRUReparameterization, bl.GRUFlipout), gru_net, {}, SEQ),
    "gru_w_init": (hk.GRU, (bl.GRUReparameterization, bl.GRUFlipout), gru_net,
                   dict(w_i_init=W_INIT, w_h_init=hk.initializers.Orthogonal(), b_init=B_INIT),
                   SEQ),
}


def _model(case, cls, **extra):
    _, _, builder, kwargs, _ = CASES[case]
    return builder(cls, **kwargs, **extra)


def haiku_params(bayesian_params):
    """``w_loc`` -> ``w`` (``w_i_loc`` -> ``w_i``, ...), scales dropped, module names without the
    estimator suffix: the parameters as the Haiku layer names them."""
    return {re.sub(r"_(reparameterization|flipout)", "", module):
            {name.removesuffix("_loc"): value for name, value in params.items()
             if not name.endswith("_raw_scale")}
            for module, params in bayesian_params.items()}


@pytest.mark.parametrize("case", [case for case in CASES if case != "gru"])
def test_same_key_same_means_and_a_point_posterior_computes_the_haiku_layer(case):
    haiku_cls, classes, _, _, x = CASES[case]
    reference = _model(case, haiku_cls)
    swaps = [_model(case, cls) for cls in classes]
    points = [_model(case, cls, kernel_initializer=POINT_LIKE) for cls in classes]

    @jax.jit
    def run():
        ref_params = reference.init(INIT_KEY, x)
        params = [swap.init(INIT_KEY, x) for swap in swaps]
        outs = [point.apply(point.init(INIT_KEY, x), APPLY_KEY, x) for point in points]
        return ref_params, reference.apply(ref_params, None, x), params, outs

    ref_params, ref_out, params, outs = run()
    for estimator_params, out in zip(params, outs):
        mapped = haiku_params(estimator_params)
        assert jax.tree.structure(mapped) == jax.tree.structure(ref_params)
        jax.tree.map(np.testing.assert_array_equal, mapped, ref_params)
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    # Both estimators have the same parameters, by name, shape and value.
    jax.tree.map(np.testing.assert_array_equal,
                 {k.replace("_flipout", ""): v for k, v in params[1].items()},
                 {k.replace("_reparameterization", ""): v for k, v in params[0].items()})


def _spread_params(model, seed, *inputs):
    """Params far from a point mass (stddevs 0.13-0.31), so a draw is far from the mean."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, INIT_KEY, *inputs)
    return {module: {name: rng.uniform(*((-2.0, -1.0) if name.endswith("raw_scale") else
                                         (-1.0, 1.0)), s.shape).astype(np.float32)
                     for name, s in p.items()} for module, p in shapes.items()}


def _draw(p, name, key):
    loc, raw = p[f"{name}_loc"], p[f"{name}_raw_scale"]
    return loc + jax.nn.softplus(raw) * jax.random.normal(key, loc.shape, loc.dtype)


@pytest.mark.parametrize(
    "case", ["conv1d_ncw_w_init", "conv3d", "conv2d_transpose_output_shape", "gru"])
def test_a_weight_draw_is_jax_random_normal_from_the_next_rng_key(case):
    """One draw per call (per sequence for the GRU, from the key its initial_state takes),
    then exactly the Haiku layer with the drawn weights at every step."""
    haiku_cls, classes, _, _, x = CASES[case]
    reference, swap = _model(case, haiku_cls), _model(case, classes[0])
    params = _spread_params(swap, 0, x)
    (module, p), = params.items()

    @jax.jit
    def run(params):
        key = hk.transform(hk.next_rng_key).apply({}, APPLY_KEY)
        if case == "gru":  # w_i, w_h, b from split(key, 3); each kernel from its split()[0]
            input_key, hidden_key, _ = jax.random.split(key, 3)
            drawn = {"w_i": _draw(p, "w_i", jax.random.split(input_key)[0]),
                     "w_h": _draw(p, "w_h", jax.random.split(hidden_key)[0]), "b": p["b"]}
        else:
            drawn = {"w": _draw(p, "w", jax.random.split(key)[0]), "b": p["b"]}
        twice = swap.apply(params, APPLY_KEY, x), swap.apply(params, APPLY_KEY, x)
        return (twice, reference.apply(haiku_params({module: drawn}), None, x),
                swap.apply(params, jax.random.PRNGKey(5), x),
                bl.posterior_mean()(swap.apply)(params, None, x))

    (out, again), expected, other_key, mean = run(params)
    np.testing.assert_array_equal(out, again)  # same key, same function
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)
    assert float(jnp.max(jnp.abs(out - mean))) > 0.05
    assert float(jnp.max(jnp.abs(out - other_key))) > 0.05


def _numpy_gru(xs, w_i, w_h, b):
    """hk.GRU's equations for one sequence ``xs`` [T, n_in] with fixed weights."""
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    hidden_size = w_h.shape[0]
    h, outs = np.zeros(hidden_size), []
    for x in xs:
        gx = x @ w_i
        zr = sigmoid(gx[:2 * hidden_size] + h @ w_h[:, :2 * hidden_size] + b[:2 * hidden_size])
        z, r = zr[:hidden_size], zr[hidden_size:]
        a = np.tanh(gx[2 * hidden_size:] + (r * h) @ w_h[:, 2 * hidden_size:]
                    + b[2 * hidden_size:])
        h = (1 - z) * h + z * a
        outs.append(h)
    return np.stack(outs)


def test_gru_flipout_is_one_weight_draw_per_sequence_in_closed_form():
    """Sequence ``i`` sees ``mean + dW * outer(s_in[i], s_out[i])`` for each kernel at every
    step, with ``dW``, ``s_in``, ``s_out`` from ``split(k, 4)[:3]`` (``k`` the kernel's part of
    the state's key): the two identical sequences of the batch get different weights."""
    xs = SEQ.copy()
    xs[:, 1] = xs[:, 0]
    model = gru_net(bl.GRUFlipout)
    params = _spread_params(model, 1, xs)
    p = params["gru_flipout"]

    @jax.jit
    def run(params):
        key = hk.transform(hk.next_rng_key).apply({}, APPLY_KEY)
        per_kernel = {}
        for name, kernel_key in zip(("w_i", "w_h"), jax.random.split(key, 3)[:2]):
            k1, k2, k3, _ = jax.random.split(kernel_key, 4)
            delta = jax.nn.softplus(p[f"{name}_raw_scale"]) * jax.random.normal(
                k1, p[f"{name}_loc"].shape)
            n_in, n_out = delta.shape
            s_in = jax.random.rademacher(k2, (2, n_in), jnp.float32)
            s_out = jax.random.rademacher(k3, (2, n_out), jnp.float32)
            per_kernel[name] = p[f"{name}_loc"] + delta * s_in[:, :, None] * s_out[:, None, :]
        return model.apply(params, APPLY_KEY, xs), per_kernel

    out, weights = run(params)
    out, weights = np.asarray(out), jax.tree.map(np.asarray, weights)
    for row in range(2):
        expected = _numpy_gru(xs[:, row], weights["w_i"][row], weights["w_h"][row], p["b"])
        np.testing.assert_allclose(out[:, row], expected, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(out[:, 0] - out[:, 1])) > 0.05


def _normal_kl(p, name):
    scale = np.log1p(np.exp(p[f"{name}_raw_scale"]))
    return np.sum(-np.log(scale) + (scale ** 2 + p[f"{name}_loc"] ** 2) / 2 - 0.5)


def test_kl_counted_once_per_kernel_and_a_sequence_keeps_its_key_at_the_mean():
    """A GRU unrolled over 4 steps: two penalties (w_i, w_h), each the closed-form KL; a conv
    layer applied twice: one. A state made outside ``bl.posterior_mean()`` and continued
    inside it computes the mean and carries its key on unchanged."""
    def forward(xs, images):
        cell = bl.GRUReparameterization(4)
        state = cell.initial_state(xs.shape[1])
        _, state = hk.dynamic_unroll(cell, xs, state)
        conv = bl.Conv2DTransposeFlipout(2, 2)
        conv(conv(images)[..., :2])
        with bl.posterior_mean():
            mean_out, mean_state = cell(xs[0], state)
        return bl.losses(), state, mean_out, mean_state

    model = hk.transform(forward)
    params = _spread_params(model, 2, SEQ, IMAGES)
    mean_step = hk.transform(lambda x, h: bl.GRUReparameterization(4)(x, h))

    @jax.jit
    def run(params):
        out = model.apply(params, APPLY_KEY, SEQ, IMAGES)
        mean = bl.posterior_mean()(mean_step.apply)(
            {"gru_reparameterization": params["gru_reparameterization"]}, None, SEQ[0],
            out[1].hidden)
        return out, mean

    (penalties, state, mean_out, mean_state), (expected_mean, _) = run(params)
    gru, conv = params["gru_reparameterization"], params["conv2_d_transpose_flipout"]
    np.testing.assert_allclose(penalties, [_normal_kl(gru, "w_i"), _normal_kl(gru, "w_h"),
                                           _normal_kl(conv, "w")], rtol=1e-5)
    np.testing.assert_allclose(mean_out, expected_mean, rtol=1e-6)
    np.testing.assert_array_equal(mean_state.weight_key, state.weight_key)
