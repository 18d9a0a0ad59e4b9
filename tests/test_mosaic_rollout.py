"""The whole-horizon rollout kernel on Pallas' Mosaic GPU backend
(``KernelConfig(backend="mosaic")``): run by Mosaic GPU's interpreter on the CPU it must give
the Triton kernel's states for the same 16-bit operands (and the plain planner's within their
rounding), for every model variant and propagation mode it serves, and lower for CUDA. On a
GPU, ``test_fused_rollout.py::test_compiled_rollout_kernel_on_a_gpu`` compares the compiled
kernel with XLA's float32 planner (``benchmarks/gpu_session.sh`` runs it)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.kernels import KernelConfig, KernelEnsemble
from mbrl_bayes.kernels.fused_rollout import pack_rollout
from mbrl_bayes.kernels.mosaic_rollout import (
    SHARED_MEMORY_LIMIT,
    mosaic_rollout,
    pack_mosaic,
    shared_memory_bytes,
)
from mbrl_bayes.models import ProbabilisticEnsemble
from mbrl_bayes.models.ensemble import init_stacked_mlp
from mbrl_bayes.models.normalization import Normalizer
from mbrl_bayes.planning import CEM, MPC, rollout

pytestmark = pytest.mark.kernels
MOSAIC = KernelConfig(backend="mosaic", block_rows=64, interpret=True)
TRITON = KernelConfig(block_rows=16, dot_dtype="bfloat16", interpret=True)
OBS0 = jnp.array([5.0, 4.0, 6.0])
THRESHOLD = 5.0


def _data():
    rng = np.random.default_rng(0)
    # Far from zero mean and unit scale, so that a standardization mistake shows.
    data = {"obs": (3 * rng.normal(size=(64, 3)) + 5).astype(np.float32),
            "act": rng.uniform(-1, 1, size=(64, 2)).astype(np.float32),
            "reward": rng.normal(size=(64,)).astype(np.float32)}
    data["next_obs"] = data["obs"] + 0.1 * rng.normal(size=(64, 3)).astype(np.float32)
    return data


def _models(**overrides):
    """The plain model, the Triton and the Mosaic kernel models, and their parameters.
    Sigmoid (sigmoid(0) != 0): padded units must not leak into the outputs."""
    kwargs = dict(obs_dim=3, act_dim=2, hidden_sizes=(20, 20), ensemble_size=4, num_elites=3,
                  activation=jax.nn.sigmoid)
    kwargs.update(overrides)
    plain = ProbabilisticEnsemble(**kwargs)
    triton = KernelEnsemble(**kwargs, kernel=TRITON)
    mosaic = KernelEnsemble(**kwargs, kernel=MOSAIC)
    data = _data()
    params = plain.fit_stats(plain.init(jax.random.PRNGKey(0), data["obs"], data["act"]), data)
    if plain.probabilistic:  # bounds where both soft bounds matter
        params["logvar_bounds"] = {"max": params["logvar_bounds"]["max"] - 1.0,
                                   "min": params["logvar_bounds"]["min"] + 4.0}
    return (plain, triton, mosaic), params


@pytest.fixture(scope="module")
def probabilistic():
    return _models()


def _reward(obs, act, next_obs):
    return -jnp.sum(next_obs**2, -1) - jnp.sum(act, -1)


def _terminates(obs, act, next_obs):
    return next_obs[..., 0] > THRESHOLD


def _rollouts(models, params, k=3, propagation="ts_inf", reward=_reward):
    key = jax.random.PRNGKey(6)
    actions = jax.random.uniform(jax.random.PRNGKey(7), (8, 5, 2), minval=-1, maxval=1)
    return [rollout(m, params, m.sample_functions(params, key, k), OBS0, actions, reward,
                    _terminates, key, propagation=propagation, num_particles=6,
                    return_trajectory=True) for m in models]


def _assert_kernels_agree(plain, triton, mosaic):
    # Same 16-bit operands, same float32 accumulation and elementwise math: the two kernels.
    np.testing.assert_allclose(mosaic.trajectory, triton.trajectory, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mosaic.objective, triton.objective, rtol=1e-5, atol=1e-4)
    # Against float32 products: within bfloat16 operand rounding.
    scale = float(jnp.abs(plain.trajectory).max())
    error = float(jnp.abs(mosaic.trajectory - plain.trajectory).max()) / scale
    assert error < 2e-2, error


@pytest.mark.parametrize("propagation, k", [("ts_inf", 3), ("optimistic", 3), ("thompson", 1)])
def test_mosaic_kernel_equals_the_triton_kernel(probabilistic, propagation, k):
    models, params = probabilistic
    plain, triton, mosaic = _rollouts(models, params, k=k, propagation=propagation)
    _assert_kernels_agree(plain, triton, mosaic)
    # The noise is there, and terminations are exercised.
    assert float(jnp.abs(plain.trajectory[0, 0] - plain.trajectory[0, k]).max()) > 1e-3
    stopped = np.asarray(plain.trajectory[:, :, 1:, 0] > THRESHOLD).any(axis=-1)
    assert 0 < stopped.mean() < 1


@pytest.mark.parametrize("overrides", [
    dict(hidden_sizes=(20,), learn_reward=True),  # no hidden-to-hidden layer; a reward column
    dict(probabilistic=False, hidden_sizes=(40, 20)),  # no variance head; unequal widths
])
def test_mosaic_kernel_model_variants(overrides):
    models, params = _models(**overrides)
    reward = None if overrides.get("learn_reward") else _reward
    _assert_kernels_agree(*_rollouts(models, params, reward=reward))


def test_a_batch_of_start_states(probabilistic):
    """The planner vmaps the rollout over start states: the kernel gains a batch axis."""
    (plain, triton, mosaic), params = probabilistic
    key = jax.random.PRNGKey(6)
    obs0 = jnp.stack([OBS0, OBS0 - 1.0])
    actions = jax.random.uniform(jax.random.PRNGKey(7), (2, 4, 3, 2), minval=-1, maxval=1)
    results = [rollout(m, params, m.sample_functions(params, key, 3), obs0, actions, _reward,
                       _terminates, key, num_particles=3, return_trajectory=True)
               for m in (plain, triton, mosaic)]
    assert results[2].objective.shape == (2, 4)
    _assert_kernels_agree(*results)


def test_barriers_balance_and_no_races_in_the_interpreter(probabilistic, monkeypatch):
    """Mosaic GPU's interpreter with race detection: every TMA copy is awaited once (it raises
    on a barrier completed twice before a wait) and no two accesses of a buffer race."""
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call

    from mbrl_bayes.kernels import mosaic_rollout as module

    monkeypatch.setitem(module.INTERPRET_OPTIONS, "detect_races", True)
    (_, _, mosaic), params = probabilistic
    fns = mosaic.sample_functions(params, jax.random.PRNGKey(6), 3)
    obs = jnp.broadcast_to(OBS0, (3, 70, 3))  # two blocks of 64 rows per draw
    act = jax.random.uniform(jax.random.PRNGKey(7), (3, 4, 70, 2), minval=-1, maxval=1)
    noise = jax.random.normal(jax.random.PRNGKey(3), (3, 4, 70, 3))
    out = mosaic_rollout(fns["rollout"], obs, act, noise, jax.nn.sigmoid, MOSAIC)
    assert bool(jnp.isfinite(out).all())
    assert not interpret_pallas_call.get_races().races_found


def test_mpc_plans_as_with_the_triton_kernel(probabilistic):
    """Through the MPC (one jitted call per action) both kernels give the same plan."""
    (_, triton, mosaic), params = probabilistic
    plans = []
    for model in (triton, mosaic):
        mpc = MPC(model, CEM(population_size=8, num_elites=2, num_iterations=2), _reward, None,
                  horizon=3, num_particles=3, propagation="ts_inf", action_low=-1.0,
                  action_high=1.0)
        state = mpc.reset(params, jax.random.PRNGKey(0))
        plan, _, _ = mpc.plan(params, state, OBS0, jax.random.PRNGKey(1))
        plans.append(np.asarray(plan))
    np.testing.assert_allclose(plans[1], plans[0], atol=1e-5)


def _halfcheetah(obs_dim=18, act_dim=6, k=5, config=None):
    layers = init_stacked_mlp(jax.random.PRNGKey(0), k,
                              (obs_dim + act_dim, 200, 200, 200, 200, 2 * obs_dim))
    stats = {"input": Normalizer.identity(obs_dim + act_dim),
             "target": Normalizer.identity(obs_dim)}
    bounds = {"max": jnp.full((obs_dim,), 0.5), "min": jnp.full((obs_dim,), -10.0)}
    return pack_rollout(layers, stats, bounds, obs_dim, config or MOSAIC)


def test_square_packing_keeps_every_layer():
    """The first and hidden layers padded into one [D, D] block (D = 208 at halfcheetah widths),
    the output layer to D rows, zeros around."""
    packed = _halfcheetah()
    weights, last, biases = pack_mosaic(packed)
    assert weights.shape == (5, 4, 208, 208) and last.shape == (5, 208, 64)
    assert biases.shape == (5, 5, 224)
    blocks = [weights[:, layer] for layer in range(4)] + [last]
    for block, w, b, padded in zip(blocks, packed.weights, packed.biases, biases.swapaxes(0, 1)):
        np.testing.assert_array_equal(block[:, : w.shape[1], : w.shape[2]], w)
        assert float(jnp.abs(block[:, w.shape[1]:]).sum()) == 0.0
        assert float(jnp.abs(block[:, :, w.shape[2]:]).sum()) == 0.0
        np.testing.assert_array_equal(padded[:, : b.shape[1]], b)
        assert float(jnp.abs(padded[:, b.shape[1]:]).sum()) == 0.0


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="lowering compiles it on a GPU")
@pytest.mark.parametrize("obs_dim, act_dim, block_rows", [(18, 6, 128), (4, 1, 64)])
def test_mosaic_kernel_lowers_for_cuda(obs_dim, act_dim, block_rows):
    """Mosaic GPU's lowering of the halfcheetah- and cartpole-sized kernels runs without a GPU
    (export for CUDA): one kernel launch, within a Hopper block's shared memory."""
    horizon, k, m = 30, 5, 2000
    cfg = KernelConfig(backend="mosaic", block_rows=block_rows)
    packed = _halfcheetah(obs_dim, act_dim, k, cfg)
    assert shared_memory_bytes(packed, cfg) <= SHARED_MEMORY_LIMIT
    run = functools.partial(mosaic_rollout, activation=jax.nn.silu, config=cfg)
    exported = jax.export.export(
        jax.jit(run), platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")],
    )(packed, jnp.zeros((k, m, obs_dim)), jnp.zeros((k, horizon, m, act_dim)),
      jnp.zeros((k, horizon, m, obs_dim)))
    assert exported.mlir_module().count("stablehlo.custom_call @mosaic_gpu_v2") == 1
    assert exported.out_avals[0].shape == (k, horizon, m, obs_dim)
    if obs_dim == 18:  # vmapped (a batch of start states): still one launch
        batched = jax.export.export(
            jax.jit(jax.vmap(functools.partial(run, packed))), platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("mosaic_gpu_v2")],
        )(jnp.zeros((2, k, 300, obs_dim)), jnp.zeros((2, k, 4, 300, act_dim)),
          jnp.zeros((2, k, 4, 300, obs_dim)))
        assert batched.mlir_module().count("stablehlo.custom_call @mosaic_gpu_v2") == 1
        assert batched.out_avals[0].shape == (2, k, 4, 300, obs_dim)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="lowering compiles it on a GPU")
def test_shared_memory_count_is_mosaics_own(monkeypatch):
    """``shared_memory_bytes`` counts what Mosaic GPU allocates: with its limit one byte lower,
    the lowering refuses the kernel and names the same size."""
    from jax.experimental.mosaic.gpu import core

    if not hasattr(core, "_SMEM_SIZE_BOUND"):
        pytest.skip("this Mosaic GPU has no shared-memory bound to lower")
    cfg = KernelConfig(backend="mosaic")
    packed = _halfcheetah(config=cfg)
    size = shared_memory_bytes(packed, cfg)
    monkeypatch.setattr(core, "_SMEM_SIZE_BOUND", size - 1)
    run = functools.partial(mosaic_rollout, activation=jax.nn.silu, config=cfg)
    with pytest.raises(Exception, match=f"smem_bytes={size} >"):
        jax.export.export(jax.jit(run), platforms=["cuda"])(
            packed, jnp.zeros((5, 100, 18)), jnp.zeros((5, 3, 100, 6)), None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(backend="cuda"), "backend must be one of \\('triton', 'mosaic'\\)"),
    (dict(backend="mosaic", dot_dtype="float32"), "16-bit operands"),
    (dict(backend="mosaic", dot_dtype="float16", block_rows=32), "multiple of 64"),
    (dict(backend="mosaic", block_rows=96), "multiple of 64"),
])
def test_bad_mosaic_config_is_a_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KernelConfig(**kwargs)


def test_mosaic_kernel_refuses_a_triton_config():
    cfg = KernelConfig(interpret=True)
    with pytest.raises(ValueError, match="mosaic_rollout runs KernelConfig\\(backend='mosaic'\\)"):
        mosaic_rollout(_halfcheetah(config=cfg), jnp.zeros((5, 10, 18)),
                       jnp.zeros((5, 2, 10, 6)), None, jax.nn.silu, cfg)


def test_too_many_rows_for_shared_memory_is_a_one_line_error():
    cfg = KernelConfig(backend="mosaic", block_rows=256, interpret=True)
    packed = _halfcheetah(config=cfg)
    with pytest.raises(ValueError, match="bytes of shared memory per block with block_rows=256"):
        mosaic_rollout(packed, jnp.zeros((5, 10, 18)), jnp.zeros((5, 2, 10, 6)), None,
                       jax.nn.silu, cfg)


def test_a_pre_hopper_gpu_is_a_one_line_error(monkeypatch):
    class Ampere:
        compute_capability = "8.0"

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda *args: [Ampere()])
    cfg = KernelConfig(backend="mosaic")
    with pytest.raises(ValueError, match="needs a Hopper or later GPU .* got 8.0"):
        mosaic_rollout(_halfcheetah(config=cfg), jnp.zeros((5, 10, 18)),
                       jnp.zeros((5, 2, 10, 6)), None, jax.nn.silu, cfg)
