"""The whole-horizon rollout kernel on Triton (``KernelEnsemble``'s ``rollout_states``): run by
the Pallas interpreter on the CPU, it must give the plain planner's states and returns (same
keys, same noise), for every model variant and propagation mode it serves, and lower for
Triton."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.kernels import KernelConfig, KernelEnsemble
from mbrl_bayes.kernels.fused_rollout import fused_rollout, pack_rollout
from mbrl_bayes.models import ProbabilisticEnsemble
from mbrl_bayes.models.ensemble import init_stacked_mlp
from mbrl_bayes.models.normalization import Normalizer
from mbrl_bayes.planning import CEM, MPC, rollout

pytestmark = pytest.mark.kernels
# float32 operands: the kernel's states equal the plain planner's to rounding.
HORIZON = KernelConfig(block_rows=16, dot_dtype="float32", interpret=True)
OBS0 = jnp.array([5.0, 4.0, 6.0])
THRESHOLD = 5.0  # terminates some particles of every model below, not all


def _models(config=HORIZON, **overrides):
    # Hidden width 20 (padded to 32); with sigmoid (sigmoid(0) != 0) padding must not leak.
    kwargs = dict(obs_dim=3, act_dim=2, hidden_sizes=(20, 20), ensemble_size=4, num_elites=3,
                  activation="tanh")
    kwargs.update(overrides)
    plain = ProbabilisticEnsemble(**kwargs)
    fused = KernelEnsemble(**kwargs, kernel=config)
    rng = np.random.default_rng(0)
    # Far from zero mean and unit scale, so that a standardization mistake shows.
    data = {"obs": (3 * rng.normal(size=(64, 3)) + 5).astype(np.float32),
            "act": rng.uniform(-1, 1, size=(64, 2)).astype(np.float32),
            "reward": rng.normal(size=(64,)).astype(np.float32)}
    data["next_obs"] = data["obs"] + 0.1 * rng.normal(size=(64, 3)).astype(np.float32)
    params = plain.fit_stats(plain.init(jax.random.PRNGKey(0), data["obs"], data["act"]), data)
    if plain.probabilistic:  # bounds where both soft bounds matter
        params["logvar_bounds"] = {"max": params["logvar_bounds"]["max"] - 1.0,
                                   "min": params["logvar_bounds"]["min"] + 4.0}
    return plain, fused, params


@pytest.fixture(scope="module")
def probabilistic():
    return _models(activation=jax.nn.sigmoid)


def _reward(obs, act, next_obs):
    return -jnp.sum(next_obs**2, -1) - jnp.sum(act, -1)


def _terminates(obs, act, next_obs):
    return next_obs[..., 0] > THRESHOLD


def _both(plain, fused, params, k=3, propagation="ts_inf", reward=_reward, obs0=OBS0,
          actions=None, particles=6):
    key = jax.random.PRNGKey(6)
    if actions is None:
        actions = jax.random.uniform(jax.random.PRNGKey(7), (8, 5, 2), minval=-1, maxval=1)
    return [rollout(m, params, m.sample_functions(params, key, k), obs0, actions, reward,
                    _terminates, key, propagation=propagation, num_particles=particles,
                    return_trajectory=True) for m in (plain, fused)]


def _assert_same(a, b):
    np.testing.assert_allclose(b.trajectory, a.trajectory, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.particle_returns, a.particle_returns, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("propagation, k", [("ts_inf", 3), ("optimistic", 3), ("thompson", 1)])
def test_whole_horizon_equals_the_step_by_step_rollout(probabilistic, propagation, k):
    plain, fused, params = probabilistic
    a, b = _both(plain, fused, params, k=k, propagation=propagation)
    _assert_same(a, b)
    # Termination is exercised: some particles stop collecting reward, some do not.
    stopped = np.asarray(a.trajectory[:, :, 1:, 0] > THRESHOLD).any(axis=-1)
    assert 0 < stopped.mean() < 1
    # And the noise is there: particles of one candidate on one function differ.
    assert float(jnp.abs(a.trajectory[0, 0] - a.trajectory[0, k]).max()) > 1e-3


def test_layer_loops_over_input_slices_equal_the_step_by_step_rollout():
    """Activations in memory, layers as loops over 64-wide input slices: width 80 is one full
    slice and a 16-wide remainder; one hidden layer has no hidden-to-hidden loop."""
    plain, fused, params = _models(hidden_sizes=(80, 80), activation=jax.nn.sigmoid)
    _assert_same(*_both(plain, fused, params))
    plain, fused, params = _models(hidden_sizes=(20,), learn_reward=True)
    _assert_same(*_both(plain, fused, params, reward=None))


def test_ignored_obs_dims_the_kernel_reads_as_zero_weights():
    """A model blind to some state entries (``ignored_obs_dims``): the kernel, which reads the
    whole state, still computes the plain model's function."""
    plain, fused, params = _models(ignored_obs_dims=(1,), activation=jax.nn.sigmoid)
    _assert_same(*_both(plain, fused, params))


@pytest.mark.parametrize("propagation", ["ts_inf", "thompson"])
def test_mpc_plans_as_with_the_plain_model(probabilistic, propagation):
    """Through the MPC (one jitted call per action; for ``thompson`` the packed draw lives in
    the episode state), the kernel gives the plain model's plan and first action."""
    plain, fused, params = probabilistic
    plans = []
    for model in (plain, fused):
        mpc = MPC(model, CEM(population_size=8, num_elites=2, num_iterations=2), _reward, None,
                  horizon=3, num_particles=3, propagation=propagation, action_low=-1.0,
                  action_high=1.0)
        state = mpc.reset(params, jax.random.PRNGKey(0))
        plan, _, _ = mpc.plan(params, state, OBS0, jax.random.PRNGKey(1))
        action, _ = mpc.act(params, state, OBS0, jax.random.PRNGKey(1))
        np.testing.assert_allclose(action, plan[0], atol=1e-6)
        plans.append(np.asarray(plan))
    np.testing.assert_allclose(plans[1], plans[0], atol=1e-5)


def test_first_step_draws_the_noise_of_transition(probabilistic):
    plain, fused, params = probabilistic
    key = jax.random.PRNGKey(1)
    fns = fused.sample_functions(params, key, 3)
    obs = jnp.broadcast_to(OBS0, (3, 5, 3))
    act = jax.random.uniform(jax.random.PRNGKey(2), (3, 4, 5, 2), minval=-1, maxval=1)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    states, reward = fused.rollout_states(params, fns, keys, obs, act)
    assert states.shape == (3, 4, 5, 3) and reward is None
    first = plain.transition(params, plain.sample_functions(params, key, 3), keys[0], obs,
                             act[:, 0])
    np.testing.assert_allclose(states[:, 0], first.next_obs, rtol=1e-6, atol=1e-6)


def test_learned_reward_and_deterministic_models():
    for overrides in (dict(learn_reward=True), dict(probabilistic=False)):
        plain, fused, params = _models(**overrides)
        reward = None if overrides.get("learn_reward") else _reward
        a, b = _both(plain, fused, params, reward=reward)
        _assert_same(a, b)


def test_other_propagations_step_the_model(probabilistic):
    plain, fused, params = probabilistic
    for propagation in ("mean", "ts1"):
        _assert_same(*_both(plain, fused, params, propagation=propagation))


def test_a_batch_of_start_states(probabilistic):
    plain, fused, params = probabilistic
    obs0 = jnp.stack([OBS0, OBS0 - 1.0])
    actions = jax.random.uniform(jax.random.PRNGKey(7), (2, 4, 3, 2), minval=-1, maxval=1)
    a, b = _both(plain, fused, params, obs0=obs0, actions=actions, particles=3)
    assert b.objective.shape == (2, 4)
    _assert_same(a, b)


def test_bad_use_is_a_one_line_error(probabilistic):
    plain, fused, params = probabilistic
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    obs, act = jnp.zeros((3, 4, 3)), jnp.zeros((3, 2, 4, 2))
    assert plain.rollout_states is None  # the plain model steps ``transition``
    with pytest.raises(ValueError, match="needs draws from this model's sample_functions"):
        fused.rollout_states(params, plain.sample_functions(params, keys[0], 3), keys, obs, act)
    packed = fused.sample_functions(params, keys[0], 3)["rollout"]
    with pytest.raises(ValueError, match="expects obs \\[k, m, 3\\] and act \\[k, H, m, 2\\]"):
        fused_rollout(packed, obs, jnp.zeros((3, 2, 4, 5)), None, jnp.tanh, HORIZON)
    with pytest.raises(ValueError, match="rows for 2 draws; the packed weights hold 3"):
        fused_rollout(packed, obs[:2], act[:2], None, jnp.tanh, HORIZON)
    linear = init_stacked_mlp(jax.random.PRNGKey(0), 3, (5, 6))
    stats = {"input": Normalizer.identity(5), "target": Normalizer.identity(3)}
    bounds = {"max": jnp.zeros(3), "min": jnp.zeros(3)}
    with pytest.raises(ValueError, match="needs at least one hidden layer"):
        pack_rollout(linear, stats, bounds, 3, HORIZON)


@pytest.mark.skipif(jax.default_backend() == "gpu",
                    reason="checks the lowering on machines without a GPU (newer jaxlibs compile "
                           "the kernel while lowering where a GPU is present)")
def test_rollout_kernel_lowers_for_triton():
    """Pallas' Triton lowering of the halfcheetah-sized kernel runs without a GPU (export for
    CUDA), with two pipeline stages and one warp per 16 rows."""
    d, a, horizon, k, m = 18, 6, 30, 5, 2000
    layers = init_stacked_mlp(jax.random.PRNGKey(0), k, (d + a, 200, 200, 200, 200, 2 * d))
    stats = {"input": Normalizer.identity(d + a), "target": Normalizer.identity(d)}
    bounds = {"max": jnp.full((d,), 0.5), "min": jnp.full((d,), -10.0)}
    for cfg in (KernelConfig(), KernelConfig(block_rows=128),
                KernelConfig(dot_dtype="float32")):
        run = functools.partial(fused_rollout, activation=jax.nn.silu, config=cfg)
        exported = jax.export.export(
            jax.jit(run), platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
        )(pack_rollout(layers, stats, bounds, d, cfg), jnp.zeros((k, m, d)),
          jnp.zeros((k, horizon, m, a)), jnp.zeros((k, horizon, m, d)))
        text = exported.mlir_module()
        assert text.count("xla.gpu.triton") == 1
        assert "num_stages = 2" in text and f"num_warps = {cfg.num_warps}" in text
        assert exported.out_avals[0].shape == (k, horizon, m, d)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiles the kernel for a GPU")
@pytest.mark.parametrize("config, tolerance", [
    (KernelConfig(backend="mosaic"), 5e-2),
    (KernelConfig(dot_dtype="float32"), 5e-3),
    (KernelConfig(), 5e-2)])
def test_compiled_rollout_kernel_on_a_gpu(config, tolerance):
    """The kernel Mosaic GPU or Triton compiles gives the step-by-step planner's states
    (halfcheetah widths, 10 steps), within the rounding of its products' operands."""
    kwargs = dict(obs_dim=18, act_dim=6, hidden_sizes=(200, 200, 200, 200), ensemble_size=5)
    plain = ProbabilisticEnsemble(**kwargs)
    fused = KernelEnsemble(**kwargs, kernel=config)
    rng = np.random.default_rng(0)
    data = {"obs": rng.normal(size=(256, 18)).astype(np.float32),
            "act": rng.uniform(-1, 1, size=(256, 6)).astype(np.float32)}
    data["next_obs"] = data["obs"] + 0.1 * rng.normal(size=(256, 18)).astype(np.float32)
    params = plain.fit_stats(plain.init(jax.random.PRNGKey(0), data["obs"], data["act"]), data)
    key = jax.random.PRNGKey(1)
    actions = jax.random.uniform(jax.random.PRNGKey(2), (100, 10, 6), minval=-1, maxval=1)
    def states(model):
        run = jax.jit(lambda p, f: rollout(model, p, f, jnp.zeros(18), actions, _reward, None,
                                           key, num_particles=20, return_trajectory=True))
        return np.asarray(run(params, model.sample_functions(params, key, 5)).trajectory)

    with jax.default_matmul_precision("highest"):  # XLA's products in true float32
        expected = states(plain)
    got = states(fused)  # the kernel at the planner's precision
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error < tolerance, error
