"""MPC end to end: planning with exact pendulum dynamics, batching, Thompson draws, compile-once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.planning import CEM, MPC

# ----------------------------------------------------------------------------- exact Pendulum-v1
DT, MAX_SPEED, MAX_TORQUE = 0.05, 8.0, 2.0


def pendulum_reward(obs, act, next_obs):
    """Pendulum-v1's reward of the transition from ``obs`` = (cos th, sin th, thdot)."""
    th = jnp.arctan2(obs[..., 1], obs[..., 0])  # angle_normalize(th)
    u = jnp.clip(act[..., 0], -MAX_TORQUE, MAX_TORQUE)
    return -(th**2 + 0.1 * obs[..., 2] ** 2 + 0.001 * u**2)


def run_episode(mpc, params, th0, steps, seed=0):
    """Runs the real pendulum (numpy) under ``mpc`` from angle ``th0`` at rest."""
    th, thdot, total = th0, 0.0, 0.0
    state = mpc.reset(params, jax.random.PRNGKey(seed))
    for t in range(steps):
        obs = np.array([np.cos(th), np.sin(th), thdot], np.float32)
        action, state = mpc.act(params, state, obs, jax.random.PRNGKey(1000 * seed + t))
        u = float(np.clip(action[0], -MAX_TORQUE, MAX_TORQUE))
        total -= ((th + np.pi) % (2 * np.pi) - np.pi) ** 2 + 0.1 * thdot**2 + 0.001 * u**2
        thdot = float(np.clip(thdot + (15.0 * np.sin(th) + 3.0 * u) * DT, -MAX_SPEED, MAX_SPEED))
        th = th + thdot * DT
    return total, th, thdot


@pytest.fixture(scope="module")
def pendulum_mpc(pendulum_model):
    model = pendulum_model()
    mpc = MPC(model, CEM(population_size=100, num_elites=10, num_iterations=5),
              pendulum_reward, None, horizon=20, num_particles=1, propagation="ts_inf",
              action_low=-MAX_TORQUE, action_high=MAX_TORQUE)
    return mpc, model.init(None, None, None)


def test_cem_mpc_swings_up_and_balances_the_true_pendulum(pendulum_mpc):
    mpc, params = pendulum_mpc
    total, th, thdot = run_episode(mpc, params, np.pi, 200)
    # Hanging down costs ~-10 per step until swung up; upright and still costs ~0.
    assert total > -400.0, total
    assert abs((th + np.pi) % (2 * np.pi) - np.pi) < 0.1 and abs(thdot) < 0.5, (th, thdot)


def test_act_takes_params_as_an_argument_and_compiles_once(pendulum_mpc):
    mpc, params = pendulum_mpc
    state = mpc.reset(params, jax.random.PRNGKey(0))
    obs = jnp.array([1.0, 0.0, 0.0])
    mpc.act(params, state, obs, jax.random.PRNGKey(1))
    before = mpc._act_one._cache_size()
    new_params = {"g": jnp.asarray(1.0, jnp.float32)}  # "retrained": new values, same shapes
    a_low_g, _ = mpc.act(new_params, state, obs, jax.random.PRNGKey(1))
    assert mpc._act_one._cache_size() == before
    assert a_low_g.shape == (1,)


def test_batched_act_matches_single_env_acts(pendulum_mpc):
    mpc, params = pendulum_mpc
    obs = jnp.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, -2.0]])
    state = mpc.reset(params, jax.random.PRNGKey(0), batch_size=3)
    key = jax.random.PRNGKey(5)
    actions, new_state = mpc.act(params, state, obs, key)
    assert actions.shape == (3, 1) and new_state.plan.mean.shape == (3, 20, 1)
    single = mpc.reset(params, jax.random.PRNGKey(0))
    for b, k in enumerate(jax.random.split(key, 3)):
        a, s = mpc.act(params, single, obs[b], k)
        np.testing.assert_allclose(actions[b], a, atol=1e-4)
        np.testing.assert_allclose(new_state.plan.mean[b], s.plan.mean, atol=1e-4)
    with pytest.raises(ValueError, match="batch_size"):
        mpc.act(params, single, obs, key)
    with pytest.raises(ValueError, match="obs must have shape"):
        mpc.act(params, single, jnp.zeros(4), key)
    with pytest.raises(ValueError, match="NaN"):
        mpc.act(params, single, np.full(3, np.nan, np.float32), key)


# ----------------------------------------------------------------------------- Thompson draws
def test_thompson_uses_one_function_draw_per_episode(shift_model):
    model = shift_model(num_functions=4, noise=0.01, learns_reward=False)
    mpc = MPC(model, CEM(population_size=8, num_elites=2, num_iterations=2),
              lambda s, a, s2: -jnp.abs(s2[..., 0]), None, horizon=3, num_particles=4,
              propagation="thompson", action_low=-1.0, action_high=1.0)
    draws = []
    for episode in range(6):
        state = mpc.reset({}, jax.random.PRNGKey(episode))
        shift = float(state.functions["shift"][0])
        draws.append(shift)
        for t in range(3):  # the draw stays fixed while acting ...
            _, state = mpc.act({}, state, jnp.zeros(1), jax.random.PRNGKey(100 + t))
            assert float(state.functions["shift"][0]) == shift
        # ... and every particle of every candidate rolls out under it.
        out = mpc.evaluate({}, state, jnp.zeros(1), jnp.zeros((2, 3, 1)),
                           jax.random.PRNGKey(7), return_trajectory=True)
        inc = np.diff(np.asarray(out.trajectory[..., 0]), axis=-1)
        np.testing.assert_allclose(inc, np.full((2, 4, 3), shift), atol=0.05)
    assert len(set(draws)) > 1, draws  # redrawn at each reset
    batched = mpc.reset({}, jax.random.PRNGKey(0), batch_size=5)
    assert batched.functions["shift"].shape == (5, 1)


def test_particle_count_must_split_evenly_over_functions(shift_model):
    model = shift_model(num_functions=5, noise=0.01, learns_reward=False)
    with pytest.raises(ValueError, match="not divisible"):
        MPC(model, CEM(), lambda s, a, s2: s[..., 0], None,
            horizon=5, num_particles=12, propagation="ts_inf", action_low=-1, action_high=1)
    with pytest.raises(ValueError, match="not divisible"):
        MPC(model, CEM(), lambda s, a, s2: s[..., 0], None,
            horizon=5, num_particles=12, propagation="ts1", action_low=-1, action_high=1)
    with pytest.raises(ValueError, match="does not learn the reward"):
        MPC(model, CEM(), None, None, horizon=5, num_particles=10,
            action_low=-1, action_high=1)
    # Thompson and mean propagation accept any particle count.
    for propagation in ("thompson", "mean"):
        MPC(model, CEM(), lambda s, a, s2: s[..., 0], None, horizon=5,
            num_particles=12, propagation=propagation, action_low=-1, action_high=1)


def test_unroll_is_checked(shift_model):
    model = shift_model(num_functions=2, noise=0.01, learns_reward=False)
    make = lambda **kw: MPC(model, CEM(), lambda s, a, s2: s[..., 0], None,
                            horizon=5, num_particles=4, action_low=-1, action_high=1, **kw)
    assert make().unroll == 1
    assert make(unroll=True).unroll is True and make(unroll=np.int64(3)).unroll == 3
    for bad in (0, -2, False, 1.5, "all"):
        with pytest.raises(ValueError, match="unroll must be True or an int >= 1"):
            make(unroll=bad)
