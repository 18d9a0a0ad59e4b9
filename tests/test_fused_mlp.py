"""The per-step network kernel (Pallas/Triton, ``mbrl_bayes.kernels.fused_mlp``): chunking,
exactness against the plain products (run by the Pallas interpreter on the CPU), the kernel
ensemble's per-step transition and the rollouts that step it (``ts1``, ``mean``), and that the
kernel lowers for Triton (the CUDA platform) from this machine."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.kernels import KernelConfig, KernelEnsemble
from mbrl_bayes.kernels.fused_mlp import chunks, fused_stacked_mlp, pack_stacked_mlp, padded_width
from mbrl_bayes.models import ProbabilisticEnsemble
from mbrl_bayes.models.ensemble import apply_stacked_mlp, init_stacked_mlp
from mbrl_bayes.planning import rollout

pytestmark = pytest.mark.kernels
INTERPRET = KernelConfig(block_rows=16, dot_dtype="float32", interpret=True)


def _layers(sizes, k=3, seed=0):
    layers = init_stacked_mlp(jax.random.PRNGKey(seed), k, sizes)
    # Non-zero biases, so that a padding mistake in them shows.
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(layers))
    return [{"w": layer["w"], "b": 0.3 * jax.random.normal(kk, layer["b"].shape)}
            for layer, kk in zip(layers, keys)]


@pytest.mark.parametrize("n, expected", [
    (200, ((0, 64), (64, 64), (128, 64), (192, 16))),
    (36, ((0, 32), (32, 16))),
    (24, ((0, 32),)),
    (5, ((0, 16),)),
    (64, ((0, 64),)),
    (112, ((0, 64), (64, 32), (96, 16))),
])
def test_chunks_cover_the_padded_width_with_powers_of_two(n, expected):
    assert chunks(n) == expected
    assert padded_width(n) == sum(size for _, size in expected) == 16 * -(-n // 16)


@pytest.mark.parametrize("sizes, rows, activation", [
    ((24, 200, 200, 36), 40, jax.nn.silu),  # halfcheetah widths; rows not a block multiple
    ((5, 40, 8), 16, jnp.tanh),  # cartpole-like widths, one block
    # activation(0) != 0: the padded units are non-zero and must still not leak.
    ((7, 20, 20, 3), 33, jax.nn.sigmoid),
])
def test_fused_forward_equals_the_plain_products(sizes, rows, activation):
    layers = _layers(sizes)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, rows, sizes[0]))
    expected = apply_stacked_mlp(layers, x, activation)
    out = fused_stacked_mlp(pack_stacked_mlp(layers, INTERPRET), x, activation, sizes[-1],
                            INTERPRET)
    assert out.shape == (3, rows, sizes[-1])
    np.testing.assert_allclose(out, expected, atol=2e-6, rtol=1e-5)


def test_power_of_two_widths():
    """The rollout kernel pads the state and action to powers of two."""
    assert padded_width(36, power_of_two=True) == 64 and padded_width(5, True) == 16


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiles the kernel for a GPU")
@pytest.mark.parametrize("dot_dtype, tolerance", [("float32", 5e-3), ("bfloat16", 3e-2)])
def test_compiled_kernel_on_a_gpu(dot_dtype, tolerance):
    sizes = (24, 200, 200, 200, 200, 36)
    layers = _layers(sizes, k=5)
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 1000, 24))
    cfg = KernelConfig(dot_dtype=dot_dtype)
    out = jax.jit(functools.partial(fused_stacked_mlp, activation=jax.nn.silu, out_size=36,
                                    config=cfg))(pack_stacked_mlp(layers, cfg), x)
    with jax.default_matmul_precision("highest"):
        expected = apply_stacked_mlp(layers, x, jax.nn.silu)
    error = float(jnp.abs(out - expected).max() / jnp.abs(expected).max())
    assert error < tolerance


# bfloat16 keeps 8 significant bits (relative rounding 2^-9 ~ 2e-3 per operand), float16 11
# (2^-12 ~ 2.4e-4); three layers of 200-term sums stay within a few roundings, and are clearly
# not exact.
def test_one_shared_weight_set_and_mismatched_draws():
    layers = _layers((5, 40, 8), k=1)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 20, 5))
    packed = pack_stacked_mlp(layers, INTERPRET)
    out = fused_stacked_mlp(packed, x, jnp.tanh, 8, INTERPRET)
    np.testing.assert_allclose(out, apply_stacked_mlp(layers, x, jnp.tanh), atol=2e-6, rtol=1e-5)
    two = pack_stacked_mlp(_layers((5, 40, 8), k=2), INTERPRET)
    with pytest.raises(ValueError, match="rows for 3 draws; the packed weights hold 2"):
        fused_stacked_mlp(two, x, jnp.tanh, 8, INTERPRET)
    with pytest.raises(ValueError, match="x has 6 features; the packed network takes 5"):
        fused_stacked_mlp(packed, jnp.zeros((3, 20, 6)), jnp.tanh, 8, INTERPRET)


@pytest.mark.parametrize("dtype, low, high", [("bfloat16", 1e-4, 2e-2), ("float16", 1e-5, 3e-3)])
def test_half_precision_products_stay_within_their_rounding(dtype, low, high):
    sizes = (24, 200, 200, 36)
    layers = _layers(sizes)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 24, 24))
    expected = apply_stacked_mlp(layers, x, jax.nn.silu)
    cfg = KernelConfig(block_rows=16, dot_dtype=dtype, interpret=True)
    out = fused_stacked_mlp(pack_stacked_mlp(layers, cfg), x, jax.nn.silu, 36, cfg)
    assert pack_stacked_mlp(layers, cfg).weights[0].dtype == jnp.dtype(dtype)
    error = float(jnp.abs(out - expected).max() / jnp.abs(expected).max())
    assert low < error < high, error


@pytest.fixture(scope="module")
def ensembles():
    kwargs = dict(obs_dim=3, act_dim=2, hidden_sizes=(32, 32), ensemble_size=4, num_elites=3)
    plain = ProbabilisticEnsemble(**kwargs)
    fused = KernelEnsemble(**kwargs, kernel=INTERPRET)
    rng = np.random.default_rng(0)
    data = {"obs": rng.normal(size=(64, 3)).astype(np.float32),
            "act": rng.uniform(-1, 1, size=(64, 2)).astype(np.float32)}
    data["next_obs"] = data["obs"] + 0.1 * rng.normal(size=(64, 3)).astype(np.float32)
    params = plain.init(jax.random.PRNGKey(0), data["obs"], data["act"])
    params = plain.fit_stats(params, data)
    return plain, fused, params


def test_fused_ensemble_transition_matches_the_plain_one(ensembles):
    plain, fused, params = ensembles
    key = jax.random.PRNGKey(3)
    fns_plain = plain.sample_functions(params, key, 6)
    fns_fused = fused.sample_functions(params, key, 6)
    assert set(fns_fused) == {"layers", "packed", "rollout", "member"}
    np.testing.assert_array_equal(fns_fused["member"], fns_plain["member"])
    obs = jax.random.normal(jax.random.PRNGKey(4), (6, 10, 3))
    act = jax.random.uniform(jax.random.PRNGKey(5), (6, 10, 2), minval=-1, maxval=1)
    a = plain.transition(params, fns_plain, key, obs, act)
    b = fused.transition(params, fns_fused, key, obs, act)
    np.testing.assert_allclose(b.next_obs, a.next_obs, atol=1e-5)
    # Training and evaluation keep the plain (differentiable) products.
    assert "layers" in fused.all_members(params)


@pytest.mark.parametrize("propagation", ["ts1", "mean"])
def test_stepped_rollouts_match_the_plain_ones(ensembles, propagation):
    """The modes the whole-horizon kernel cannot serve step the per-step kernel."""
    plain, fused, params = ensembles
    key = jax.random.PRNGKey(6)
    actions = jax.random.uniform(jax.random.PRNGKey(7), (8, 5, 2), minval=-1, maxval=1)
    reward = lambda o, a, n: -jnp.sum(n**2, -1)

    def returns(model):
        fns = model.sample_functions(params, key, 3)
        run = jax.jit(lambda p, f: rollout(model, p, f, jnp.ones(3), actions, reward, None, key,
                                           propagation=propagation, num_particles=6))
        return run(params, fns)

    results = [returns(plain), returns(fused)]
    np.testing.assert_allclose(results[1].particle_returns, results[0].particle_returns,
                               rtol=1e-5, atol=1e-5)


def test_stepped_rollout_over_a_batch_of_start_states(ensembles):
    """A batch of environments vmaps the rollout, and with it the kernel (an extra grid axis)."""
    plain, fused, params = ensembles
    key = jax.random.PRNGKey(6)
    obs0 = jax.random.normal(jax.random.PRNGKey(8), (2, 3))
    actions = jax.random.uniform(jax.random.PRNGKey(7), (2, 4, 3, 2), minval=-1, maxval=1)
    reward = lambda o, a, n: -jnp.sum(n**2, -1)
    out = [rollout(m, params, m.sample_functions(params, key, 3), obs0, actions, reward, None,
                   key, propagation="ts1", num_particles=3).objective for m in (plain, fused)]
    assert out[1].shape == (2, 4)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() == "gpu",
                    reason="checks the lowering on machines without a GPU (newer jaxlibs compile "
                           "the kernel while lowering where a GPU is present)")
def test_kernel_lowers_for_triton():
    """The Pallas -> Triton lowering (block shapes, every primitive in the kernel) runs without a
    GPU: export the fused forward for the CUDA platform."""
    sizes = (24, 200, 200, 200, 200, 36)
    layers = _layers(sizes, k=5)
    x = jnp.zeros((5, 2000, 24))
    for cfg in (KernelConfig(), KernelConfig(block_rows=128), KernelConfig(dot_dtype="float32"),
                KernelConfig(block_rows=32, dot_dtype="float16")):
        packed = pack_stacked_mlp(layers, cfg)
        forward = functools.partial(fused_stacked_mlp, activation=jax.nn.silu, out_size=36,
                                    config=cfg)
        exported = jax.export.export(
            jax.jit(forward),
            platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
        )(packed, x)
        assert exported.mlir_module().count("xla.gpu.triton") == 1
        assert exported.out_avals[0].shape == (5, 2000, 36)


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_rows=48), "block_rows must be a power of two"),
    (dict(dot_dtype="int8"), "dot_dtype must be"),
    (dict(backend="cuda"), "backend must be one of \\('triton', 'mosaic'\\)"),
])
def test_bad_config_is_a_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KernelConfig(**kwargs)


def test_config_defaults_and_warps():
    assert KernelConfig().block_rows == 64 and KernelConfig().num_warps == 4
    assert KernelConfig(block_rows=128).num_warps == 8
    assert KernelConfig(backend="mosaic").block_rows == 128


def test_bad_kernel_argument_is_a_type_error():
    with pytest.raises(TypeError, match="KernelConfig"):
        KernelEnsemble(obs_dim=2, act_dim=1, kernel="pallas")
