"""Rollouts and propagation modes, on toy models whose functions can be told apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.models.base import Transition
from mbrl_bayes.planning import CEM, ICEM, MPPI, rollout


class LinearModel:
    """Deterministic ``s' = A s + B u`` (one function)."""

    learns_reward = False
    rollout_states = None  # steps `transition` (no whole-horizon rollout)
    num_functions = 1

    def __init__(self, a, b):
        self.a, self.b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
        self.obs_dim, self.act_dim = self.b.shape

    def sample_functions(self, params, key, k):
        return {"id": jnp.zeros((k,))}

    def transition(self, params, fns, key, obs, act, sample_noise=True):
        # Exact float32 products: GPUs would otherwise use TF32 (10-bit mantissas).
        dot = lambda x, m: jnp.matmul(x, m.T, precision=jax.lax.Precision.HIGHEST)
        return Transition(dot(obs, self.a) + dot(act, self.b), None)


class CountingModel:
    """A recurrent toy: the carry counts the steps taken, and step ``t`` moves by ``t``."""

    obs_dim, act_dim = 1, 1
    num_functions = 2
    learns_reward = False
    rollout_states = None  # steps `transition` (no whole-horizon rollout)

    def sample_functions(self, params, key, k):
        return {"id": jnp.arange(k, dtype=jnp.float32)}

    def initial_carry(self, params, fns, m):
        return {"count": jnp.zeros((fns["id"].shape[0], m, 1))}

    def transition(self, params, fns, key, obs, act, sample_noise=True, carry=None):
        count = carry["count"] + 1.0
        return Transition(obs + count, None, {"count": count})


def _increments(traj):
    return np.diff(np.asarray(traj[..., 0]), axis=-1)  # [N, P, H]


def test_ts_inf_keeps_each_particle_on_one_function(shift_model):
    model = shift_model(num_functions=3)
    fns = model.sample_functions({}, None, 3)
    acts = jnp.zeros((2, 4, 1))
    out = rollout(model, {}, fns, jnp.zeros(1), acts, None, None, jax.random.PRNGKey(0),
                  "ts_inf", num_particles=6, return_trajectory=True)
    assert out.trajectory.shape == (2, 6, 5, 1)
    inc = _increments(out.trajectory)
    expected = np.broadcast_to((np.arange(6) % 3)[None, :, None], inc.shape)
    np.testing.assert_allclose(inc, expected)
    np.testing.assert_allclose(out.particle_returns, 4.0 * (np.arange(6) % 3)[None].repeat(2, 0))
    np.testing.assert_allclose(out.mean_return, [4.0, 4.0])
    np.testing.assert_allclose(out.std_return, np.full(2, 4.0 * np.std([0, 1, 2])), rtol=1e-6)


def test_batch_of_start_states_matches_separate_rollouts(shift_model):
    model = shift_model(num_functions=3, noise=0.1)
    fns = model.sample_functions({}, None, 3)
    obs0 = jnp.array([[0.0], [5.0]])
    acts = jax.random.uniform(jax.random.PRNGKey(3), (2, 4, 3, 1))
    key = jax.random.PRNGKey(0)
    reward = lambda s, a, s2: -s2[..., 0] ** 2
    out = rollout(model, {}, fns, obs0, acts, reward, None, key, "ts_inf", num_particles=6)
    assert out.objective.shape == (2, 4) and out.particle_returns.shape == (2, 4, 6)
    for b, k in enumerate(jax.random.split(key, 2)):
        single = rollout(model, {}, fns, obs0[b], acts[b], reward, None, k, "ts_inf",
                         num_particles=6)
        np.testing.assert_allclose(out.objective[b], single.objective, rtol=1e-5)


@pytest.mark.parametrize("propagation", ["ts_inf", "ts1", "mean"])
def test_unrolled_horizon_gives_the_same_rollout(shift_model, propagation):
    model = shift_model(num_functions=3, noise=0.3)
    fns = model.sample_functions({}, None, 3)
    acts = jax.random.uniform(jax.random.PRNGKey(4), (5, 7, 1), minval=-1, maxval=1)
    reward = lambda s, a, s2: -s2[..., 0] ** 2 - a[..., 0] ** 2
    outs = [rollout(model, {}, fns, jnp.ones(1), acts, reward, None, jax.random.PRNGKey(2),
                    propagation, num_particles=6, return_trajectory=True, unroll=unroll)
            for unroll in (1, 3, True)]
    for out in outs[1:]:
        np.testing.assert_allclose(out.particle_returns, outs[0].particle_returns, rtol=1e-6)
        np.testing.assert_allclose(out.trajectory, outs[0].trajectory, rtol=1e-6)


def test_ts1_reshuffles_particles_evenly_each_step(shift_model):
    model = shift_model(num_functions=3)
    fns = model.sample_functions({}, None, 3)
    acts = jnp.zeros((4, 8, 1))
    out = rollout(model, {}, fns, jnp.zeros(1), acts, None, None, jax.random.PRNGKey(1),
                  "ts1", num_particles=6, return_trajectory=True)
    inc = _increments(out.trajectory)  # [N, P, H]
    # Every step, each candidate's particles are spread evenly: two per function.
    np.testing.assert_allclose(np.sort(inc, axis=1), np.broadcast_to(
        np.array([0, 0, 1, 1, 2, 2.0])[None, :, None], inc.shape))
    # ... but particles switch functions over time (a fixed assignment would be constant).
    switches = (inc[..., 1:] != inc[..., :-1]).mean()
    assert 0.4 < switches < 0.9  # ~2/3 expected for independent uniform reassignment
    # The learned reward follows the particle: return = sum of its increments.
    np.testing.assert_allclose(out.particle_returns, inc.sum(-1))


def test_mean_propagation_averages_functions_without_noise(shift_model):
    model = shift_model(num_functions=3, noise=1.0)
    fns = model.sample_functions({}, None, 3)
    acts = jnp.full((2, 5, 1), 0.5)
    out = rollout(model, {}, fns, jnp.zeros(1), acts, lambda s, a, s2: s2[..., 0], None,
                  jax.random.PRNGKey(0), "mean", return_trajectory=True)
    # Mean shift over functions 0, 1, 2 is 1; plus the action 0.5: s_t = 1.5 t, no noise.
    np.testing.assert_allclose(out.trajectory[0, 0, :, 0], 1.5 * np.arange(6), rtol=1e-6)
    np.testing.assert_allclose(out.mean_return, [1.5 * 15] * 2, rtol=1e-6)
    np.testing.assert_allclose(out.std_return, [0.0, 0.0])


def test_optimistic_objective_is_mean_plus_beta_std_over_functions(shift_model):
    model = shift_model(num_functions=3)
    fns = model.sample_functions({}, None, 3)
    acts = jnp.zeros((1, 2, 1))
    out = rollout(model, {}, fns, jnp.zeros(1), acts, None, None, jax.random.PRNGKey(0),
                  "optimistic", num_particles=3, beta=2.0)
    per_fn = 2.0 * np.arange(3.0)  # learned reward i over 2 steps
    np.testing.assert_allclose(out.objective, [per_fn.mean() + 2.0 * per_fn.std()], rtol=1e-6)
    np.testing.assert_allclose(out.mean_return, [per_fn.mean()])


@pytest.mark.parametrize("propagation", ["ts_inf", "ts1", "mean"])
def test_recurrent_models_carry_their_history_through_the_horizon(propagation):
    model = CountingModel()
    fns = model.sample_functions({}, None, 2)
    out = rollout(model, {}, fns, jnp.zeros(1), jnp.zeros((3, 4, 1)), lambda s, a, s2: s2[..., 0],
                  None, jax.random.PRNGKey(0), propagation, num_particles=4,
                  return_trajectory=True)
    inc = _increments(out.trajectory)
    np.testing.assert_allclose(inc, np.broadcast_to([1.0, 2.0, 3.0, 4.0], inc.shape))


@pytest.mark.parametrize("propagation", ["ts_inf", "ts1", "mean"])
def test_recurrent_rollouts_start_from_the_given_history_state(shift_model, propagation):
    model = CountingModel()
    fns = model.sample_functions({}, None, 2)
    carry0 = {"count": jnp.array([[10.0], [10.0]])}  # both draws have seen 10 steps
    out = rollout(model, {}, fns, jnp.zeros(1), jnp.zeros((3, 4, 1)), lambda s, a, s2: s2[..., 0],
                  None, jax.random.PRNGKey(0), propagation, num_particles=4,
                  return_trajectory=True, initial_carry=carry0)
    inc = _increments(out.trajectory)
    np.testing.assert_allclose(inc, np.broadcast_to([11.0, 12.0, 13.0, 14.0], inc.shape))
    with pytest.raises(ValueError, match="initial_carry is for recurrent models"):
        rollout(shift_model(), {}, shift_model().sample_functions({}, None, 3), jnp.zeros(1),
                jnp.zeros((3, 4, 1)), None, None, jax.random.PRNGKey(0), num_particles=3,
                initial_carry=carry0)
    for bad in ({"count": jnp.zeros((3, 1))}, {"count": jnp.zeros((2, 5, 1))},
                {"other": jnp.zeros((2, 1))}):
        with pytest.raises(ValueError, match="initial_carry must hold one state per function"):
            rollout(model, {}, fns, jnp.zeros(1), jnp.zeros((3, 4, 1)),
                    lambda s, a, s2: s2[..., 0], None, jax.random.PRNGKey(0), propagation,
                    num_particles=4, initial_carry=bad)


def test_terminated_particles_stop_collecting_reward(shift_model):
    model = shift_model(num_functions=1)
    fns = model.sample_functions({}, None, 1)
    acts = jnp.ones((1, 6, 1))
    out = rollout(model, {}, fns, jnp.zeros(1), acts, lambda s, a, s2: jnp.ones(s.shape[:-1]),
                  lambda s, a, s2: s2[..., 0] >= 3.0, jax.random.PRNGKey(0), "ts_inf",
                  num_particles=1)
    # States 1, 2, 3 (terminates; its reward counts), then nothing: return 3.
    np.testing.assert_allclose(out.mean_return, [3.0])


def test_nonfinite_returns_become_very_low(shift_model):
    model = shift_model(num_functions=1)
    fns = model.sample_functions({}, None, 1)
    acts = jnp.stack([jnp.zeros((2, 1)), jnp.full((2, 1), jnp.nan)])
    out = rollout(model, {}, fns, jnp.zeros(1), acts, lambda s, a, s2: s2[..., 0], None,
                  jax.random.PRNGKey(0), num_particles=1)
    assert np.isfinite(out.objective).all() and out.objective[1] < -1e30


def test_particles_not_divisible_by_functions_is_a_clear_error(shift_model):
    model = shift_model(num_functions=3)
    fns = model.sample_functions({}, None, 3)
    with pytest.raises(ValueError, match="not divisible"):
        rollout(model, {}, fns, jnp.zeros(1), jnp.zeros((2, 3, 1)), None, None,
                jax.random.PRNGKey(0), "ts_inf", num_particles=5)
    with pytest.raises(ValueError, match="Unknown propagation"):
        rollout(model, {}, fns, jnp.zeros(1), jnp.zeros((2, 3, 1)), None, None,
                jax.random.PRNGKey(0), "ts2", num_particles=6)
    with pytest.raises(ValueError, match="does not learn the reward"):
        rollout(LinearModel(np.eye(1), np.eye(1)), {}, {"id": jnp.zeros(1)}, jnp.zeros(1),
                jnp.zeros((2, 3, 1)), None, None, jax.random.PRNGKey(0), num_particles=1)


# --------------------------------------------------------------------------- linear system
# x' = A x + B u, reward -(x'^T Q x' + r u^2): the best open-loop sequence is a least-squares
# solution, U* = -(G^T Q G + r I)^-1 G^T Q F x0 with X = F x0 + G U.
A_SYS = np.array([[1.0, 0.2], [0.0, 1.0]])
B_SYS = np.array([[0.0], [0.2]])
Q_SYS, R_SYS, H_SYS = np.diag([1.0, 0.1]), 0.1, 8
X0 = np.array([1.0, 0.0])
KEY = jax.random.PRNGKey(0)


def _optimal_sequence():
    d = 2
    F = np.zeros((H_SYS * d, d))
    G = np.zeros((H_SYS * d, H_SYS))
    for t in range(H_SYS):
        F[t * d:(t + 1) * d] = np.linalg.matrix_power(A_SYS, t + 1)
        for j in range(t + 1):
            G[t * d:(t + 1) * d, j] = (np.linalg.matrix_power(A_SYS, t - j) @ B_SYS)[:, 0]
    Qb = np.kron(np.eye(H_SYS), Q_SYS)
    return -np.linalg.solve(G.T @ Qb @ G + R_SYS * np.eye(H_SYS), G.T @ Qb @ F @ X0)


def _linear_reward(s, a, s2):
    q = jnp.asarray(np.diag(Q_SYS), jnp.float32)
    return -(jnp.sum(q * s2**2, -1) + R_SYS * jnp.sum(a**2, -1))


@pytest.mark.parametrize("opt, atol", [
    (CEM(population_size=300, num_elites=30, num_iterations=15), 0.01),
    (ICEM(population_size=300, num_elites=30, num_iterations=12, noise_beta=1.0,
          population_decay=1.0), 0.05),
    (MPPI(population_size=300, num_iterations=30, temperature=0.01, noise_std=0.2), 0.06),
], ids=["cem", "icem", "mppi"])
def test_optimizers_find_the_linear_quadratic_optimum(opt, atol):
    u_star = _optimal_sequence()
    assert np.abs(u_star).max() < 3.0  # inside the bounds below
    model = LinearModel(A_SYS, B_SYS)
    fns = model.sample_functions({}, None, 1)

    def objective(seqs, key):
        return rollout(model, {}, fns, jnp.asarray(X0, jnp.float32), seqs, _linear_reward,
                       None, key, "ts_inf", num_particles=1).objective

    state = opt.init(H_SYS, 1, -3.0, 3.0)
    plan, _, info = jax.jit(lambda s, k: opt.optimize(objective, s, k))(state, KEY)
    best = float(objective(jnp.asarray(u_star[None, :, None], jnp.float32), KEY)[0])
    got = float(objective(plan[None], KEY)[0])
    # The plan is within ``atol`` of the optimal sequence, its return within 0.1% of the optimum.
    np.testing.assert_allclose(plan[:, 0], u_star, atol=atol)
    assert got >= best * 1.001, (got, best)
    assert float(info["best_value"]) >= best * 1.001
