"""Exploration in planning: H-UCRL (``hucrl``) and the disagreement bonus, on a known posterior.

The toy system: a 1-D state, the true dynamics ``s' = s + a`` (``a`` in ``[-1, 1]``), and the
exact posterior of a model that has seen the dynamics on ``s <= F`` (``F``, the frontier, is its
param: 1 at first, then the largest state visited): function ``i`` predicts ``s + a + c_i relu(s -
F)`` with ``c = (-1, 0, 1)``, so the draws agree on the data and disagree beyond it, and their
mean is the true dynamics. (Without the frontier moving with the data, an optimist standing near
the goal could reach it by hallucination alone and never move: H-UCRL relies on data shrinking
the uncertainty where it has been.) The reward is 1 for ``s' >= 4.5`` minus ``0.01 a^2``. From
``s = 0`` a horizon-4 plan under the mean reaches at most ``s = 4``: no reward in sight, only
the action cost, so the mean planner stands still forever. Only a planner drawn towards the
unknown moves.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import planning
from mbrl_bayes.models.base import Transition
from mbrl_bayes.planning import MPC, RandomShooting, rollout

SPREAD = (-1.0, 0.0, 1.0)
GOAL = 4.5


class FrontierModel:
    """Function ``i``: ``s + a + c_i relu(s - F)`` plus N(0, noise^2) when noise is sampled;
    params ``{"frontier": F}``."""

    obs_dim, act_dim = 1, 1
    num_functions = len(SPREAD)
    learns_reward = False
    rollout_states = None

    def __init__(self, noise: float = 0.0):
        self.noise = noise

    def init(self, key, obs, act):
        return {"frontier": jnp.asarray(1.0)}

    def sample_functions(self, params, key, k):
        idx = jnp.arange(k) % self.num_functions
        return {"c": jnp.asarray(SPREAD)[idx]}

    def transition(self, params, fns, key, obs, act, sample_noise=True):
        c = fns["c"][:, None, None]
        next_obs = obs + jnp.clip(act, -1.0, 1.0) + c * jax.nn.relu(obs - params["frontier"])
        if sample_noise and self.noise:
            next_obs = next_obs + self.noise * jax.random.normal(key, next_obs.shape)
        return Transition(next_obs, None)


def reward_fn(obs, act, next_obs):
    return (next_obs[..., 0] >= GOAL).astype(jnp.float32) - 0.01 * act[..., 0] ** 2


P = {"frontier": jnp.asarray(1.0)}
EPISTEMIC_STD = float(np.std(SPREAD))  # std over the draws per unit of relu(s - 1)


def _mpc(propagation, bonus=None, **kwargs):
    return MPC(FrontierModel(noise=0.3), RandomShooting(population_size=2048), reward_fn, None,
               horizon=4, action_low=-1.0, action_high=1.0, num_particles=3,
               propagation=propagation, bonus=bonus, num_functions=3, **kwargs)


def _closed_loop(mpc, steps=10):
    """Runs ``mpc`` on the true system ``s' = s + a`` from ``s = 0``, moving the posterior's
    frontier to the largest state seen; the states visited."""
    params = {"frontier": jnp.asarray(1.0)}
    state = mpc.reset(params, jax.random.PRNGKey(0))
    s, visited = np.zeros(1, np.float32), []
    for t in range(steps):
        a, state = mpc.act(params, state, s, jax.random.PRNGKey(t))
        assert a.shape == (1,)
        s = s + np.clip(np.asarray(a), -1, 1)
        visited.append(float(s[0]))
        params = {"frontier": jnp.maximum(params["frontier"], s[0])}
    return np.asarray(visited)


@pytest.fixture(scope="module")
def runs():
    return {
        "mean": _closed_loop(_mpc("mean")),
        "hucrl": _closed_loop(_mpc("hucrl", beta=2.0)),
        "bonus": _closed_loop(_mpc("mean", bonus="disagreement", bonus_scale=1.0)),
        "hucrl+bonus": _closed_loop(_mpc("hucrl", bonus="disagreement", beta=2.0)),
    }


def test_mean_planner_never_leaves_the_data(runs):
    assert np.all(np.abs(runs["mean"]) < 0.5), runs["mean"]


@pytest.mark.parametrize("method", ["hucrl", "bonus", "hucrl+bonus"])
def test_exploration_reaches_the_reward_beyond_the_data(runs, method):
    visited = runs[method]
    assert visited.max() >= GOAL, visited
    assert visited[-1] >= GOAL  # and stays there (hucrl) or beyond (the bonus keeps going)


def test_hucrl_step_is_mean_plus_beta_std_eta():
    """One step from s = 2 (relu = 1): s' = 2 + a + beta * std(c) * eta, noise ignored."""
    model = FrontierModel(noise=5.0)
    fns = model.sample_functions(P, None, 3)
    seqs = jnp.array([[[0.5, 1.0]], [[0.5, -1.0]], [[-0.25, 0.3]], [[0.0, 2.0]]])  # [N, 1, a+d]
    res = rollout(model, P, fns, jnp.array([2.0]), seqs, lambda o, a, n: n[..., 0], None,
                  jax.random.PRNGKey(0), "hucrl", num_particles=3, beta=2.0,
                  return_trajectory=True)
    eta = np.clip([1.0, -1.0, 0.3, 2.0], -1, 1)  # eta is clipped to [-1, 1]
    expected = 2.0 + np.array([0.5, 0.5, -0.25, 0.0]) + 2.0 * EPISTEMIC_STD * eta
    np.testing.assert_allclose(res.objective, expected, rtol=1e-5)
    np.testing.assert_allclose(res.mean_return, expected, rtol=1e-5)
    assert res.particle_returns.shape == (4, 1) and res.trajectory.shape == (4, 1, 2, 1)
    np.testing.assert_allclose(res.trajectory[:, 0, 1, 0], expected, rtol=1e-5)
    again = rollout(model, P, fns, jnp.array([2.0]), seqs, lambda o, a, n: n[..., 0], None,
                    jax.random.PRNGKey(1), "hucrl", num_particles=3, beta=2.0)
    np.testing.assert_array_equal(again.objective, res.objective)  # no aleatoric noise


def test_disagreement_bonus_is_the_spread_of_the_draws():
    """Two steps of a = 1 from s = 1.5 under mean: spreads std(c) * 0.5 and std(c) * 1.5; the
    bonus adds scale * their sum to the objective, not to the (extrinsic) mean return."""
    model = FrontierModel()
    fns = model.sample_functions(P, None, 3)
    seqs = jnp.ones((1, 2, 1))
    zero = lambda o, a, n: jnp.zeros(n.shape[:-1])
    plain = rollout(model, P, fns, jnp.array([1.5]), seqs, zero, None, jax.random.PRNGKey(0),
                    "mean")
    res = rollout(model, P, fns, jnp.array([1.5]), seqs, zero, None, jax.random.PRNGKey(0),
                  "mean", bonus="disagreement", bonus_scale=0.5)
    np.testing.assert_allclose(res.objective, [0.5 * EPISTEMIC_STD * (0.5 + 1.5)], rtol=1e-5)
    np.testing.assert_allclose(res.mean_return, plain.mean_return)
    np.testing.assert_allclose(plain.objective, [0.0])


def test_hucrl_with_zero_eta_is_the_mean_rollout(shift_model):
    model = shift_model(num_functions=3, noise=0.5, learns_reward=False)
    fns = model.sample_functions(P, jax.random.PRNGKey(0), 3)
    acts = jax.random.uniform(jax.random.PRNGKey(1), (5, 4, 1), minval=-1, maxval=1)
    reward = lambda o, a, n: -(n[..., 0] ** 2)
    mean = rollout(model, P, fns, jnp.zeros(1), acts, reward, None, jax.random.PRNGKey(2),
                   "mean")
    hucrl = rollout(model, P, fns, jnp.zeros(1), jnp.concatenate([acts, jnp.zeros_like(acts)],
                                                                 -1),
                    reward, None, jax.random.PRNGKey(2), "hucrl")
    np.testing.assert_allclose(hucrl.objective, mean.objective, rtol=1e-6)


def test_mpc_hucrl_plans_actions_only_in_one_jitted_call():
    mpc = _mpc("hucrl")
    state = mpc.reset(P, jax.random.PRNGKey(0))
    assert jax.tree_util.tree_leaves(state.plan)[0].shape == (4, 2)  # [H, a + d]
    plan, state, info = mpc.plan(P, state, np.zeros(1, np.float32), jax.random.PRNGKey(1))
    assert plan.shape == (4, 1) and info["best_sequence"].shape == (4, 2)
    assert np.all(np.abs(np.asarray(info["best_sequence"])[:, 1]) <= 1)
    _, state = mpc.act(P, state, np.zeros(1, np.float32), jax.random.PRNGKey(0))
    compiled = mpc._act_one._cache_size()
    for t in range(3):  # one compiled function serves every action
        _, state = mpc.act(P, state, np.full(1, t, np.float32), jax.random.PRNGKey(t))
    assert mpc._act_one._cache_size() == compiled == 1
    batched = mpc.reset(P, jax.random.PRNGKey(0), batch_size=2)
    actions, _ = mpc.act(P, batched, np.zeros((2, 1), np.float32), jax.random.PRNGKey(3))
    assert actions.shape == (2, 1)


def test_bad_exploration_settings_get_one_line_errors():
    cases = [
        (dict(propagation="thompson", bonus="disagreement"), "defined with propagation mean "
                                                              "or hucrl, not 'thompson'"),
        (dict(propagation="ts_inf", bonus="disagreement"), "not 'ts_inf'"),
        (dict(propagation="mean", bonus="curiosity"), "Unknown bonus 'curiosity'"),
        (dict(propagation="mean", bonus="disagreement", bonus_scale=-1.0), "bonus_scale"),
        (dict(propagation="hucrl", num_functions=1), "at least 2 function draws"),
    ]
    for kwargs, message in cases:
        kwargs = dict(dict(num_functions=3), **kwargs)
        with pytest.raises(ValueError, match=message) as info:
            MPC(FrontierModel(), RandomShooting(population_size=4), reward_fn, None, horizon=2,
                action_low=-1.0, action_high=1.0, num_particles=3, **kwargs)
        assert "\n" not in str(info.value)
    model = FrontierModel()
    with pytest.raises(ValueError, match="a \\+ d = 1 \\+ 1 = 2 entries per step, got 1"):
        rollout(model, P, model.sample_functions(P, None, 3), jnp.zeros(1), jnp.zeros((2, 3, 1)),
                reward_fn, None, jax.random.PRNGKey(0), "hucrl")
    assert "hucrl" in planning.PROPAGATIONS and "disagreement" in planning.BONUSES


# --- through the config, the factory and the CLI ------------------------------------------------

TINY_MOUNTAINCAR = {
    "env": "mountaincar", "agent": "pets", "seed": 0, "trials": 1, "seed_steps": 12,
    "episode_length": 6, "action_repeat": 5, "eval_calibration": False,
    "model": {"name": "pe", "hidden_sizes": [16], "ensemble_size": 2},
    "train": {"batch_size": 8, "max_epochs": 2, "patience": 2},
    "planner": {"optimizer": "cem", "horizon": 3, "population": 16, "elites": 4,
                "iterations": 1, "num_particles": 4},
}


def test_cli_trains_hucrl_with_bonus_on_repeated_mountaincar(tmp_path):
    """--propagation hucrl --beta --bonus --bonus-scale reach the MPC; the run steps the env
    with the action held 5 steps, the very blocks the planner's reward and dynamics describe."""
    import json

    import envs
    from agents import Run
    from experiments.cli import main

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_MOUNTAINCAR))
    out = str(tmp_path / "run")
    assert main(["train", "--config", str(path), "--out", out, "--quiet", "--propagation",
                 "hucrl", "--beta", "2.5", "--bonus", "disagreement", "--bonus-scale",
                 "0.5"]) == 0
    run = Run.resume(out)
    planner = run.config.planner
    assert (planner.propagation, planner.beta, planner.bonus, planner.bonus_scale) == (
        "hucrl", 2.5, "disagreement", 0.5)
    mpc = run.agent.mpc
    assert (mpc.propagation, mpc.beta, mpc.bonus, mpc.bonus_scale) == (
        "hucrl", 2.5, "disagreement", 0.5)
    spec = envs.task("mountaincar", action_repeat=5)
    assert run.spec is spec and mpc.reward_fn is spec.reward_fn
    data = run.buffer.as_dict()
    assert len(run.buffer) == 12 + 6
    np.testing.assert_allclose(spec.dynamics_fn(data["obs"], data["act"]), data["next_obs"],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(data["reward"], -0.5 * data["act"][:, 0] ** 2, rtol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--agent", "thompson", "--bonus", "disagreement"], "not 'thompson'"),
    (["--propagation", "ts_inf", "--bonus", "disagreement"], "not 'ts_inf'"),
    (["--propagation", "mean", "--bonus", "disagreement", "--bonus-scale", "-1"],
     "planner.bonus_scale must be >= 0, got -1.0"),
    (["--propagation", "mean", "--bonus", "disagreement", "--bonus-scale", "inf"],
     "planner.bonus_scale must be a finite number, got inf"),
    (["--bonus", "curiosity"], "invalid choice: 'curiosity'"),
    (["--env", "pendulum"], "Task 'pendulum' has no action_repeat"),
])
def test_cli_bad_exploration_flags_one_line(argv, message, tmp_path, capsys):
    import json

    from experiments.cli import main

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_MOUNTAINCAR))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# --- experiments/compare_exploration.py ---------------------------------------------------------


def test_wilson_interval_closed_forms():
    from experiments.compare_exploration import wilson_interval

    z2 = 1.96**2
    assert wilson_interval(0, 5) == pytest.approx((0.0, (z2 / 5) / (1 + z2 / 5)))  # 0.434
    low, high = wilson_interval(5, 5)
    assert high == pytest.approx(1.0) and low == pytest.approx(1 - (z2 / 5) / (1 + z2 / 5))
    low, high = wilson_interval(2, 4)
    assert low + high == pytest.approx(1.0) and 0.15 < low < 0.16  # symmetric about 1/2
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_compare_exploration_overrides_apply_to_every_variant(capsys):
    from experiments.compare_exploration import VARIANTS, main, with_overrides
    from experiments.presets import preset_config

    changed = with_overrides(VARIANTS, action_repeat=1, particles=5)
    assert list(changed) == list(VARIANTS)
    for label in ("ts_inf", "optimistic", "disagreement", "random"):
        config = changed[label](preset_config("mountaincar"))
        assert (config.action_repeat, config.planner.num_particles) == (1, 5)
        assert config.agent == VARIANTS[label](preset_config("mountaincar")).agent
    same = with_overrides(VARIANTS)["hucrl"](preset_config("mountaincar"))
    assert (same.action_repeat, same.planner.num_particles, same.planner.propagation,
            same.planner.beta) == (5, 20, "hucrl", 1.0)
    optimism = with_overrides(VARIANTS, beta=2.5)
    for label in ("hucrl", "optimistic"):
        assert optimism[label](preset_config("mountaincar")).planner.beta == 2.5
    for argv, message in ((["--action-repeat", "0"], "--action-repeat: must be positive, got 0"),
                          (["--beta", "-1"], "--beta: must be positive, got -1")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--envs", "mountaincar", *argv, "--out", "unused"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.e2e
def test_compare_exploration_tiny(tmp_path):
    from experiments import compare_exploration

    out = str(tmp_path / "explore")
    argv = ["--envs", "mountaincar", "--seeds", "0", "--trials", "1", "--budget", "tiny",
            "--variants", "disagreement", "optimistic", "random", "--out", out, "--quiet"]
    text = compare_exploration.main(argv)
    for label in ("disagreement", "optimistic", "random"):
        assert f"| {label} | 1 |" in text  # the return table
        # 10 blocks of 5 steps never reach the flag: 0 of 1 seeds, Wilson CI 0-0.79.
        assert f"| {label} | 0/1 (0.00-0.79) | - | 0/1 |" in text
    run_dir = os.path.join(out, "runs", "mountaincar", "disagreement", "s0")
    assert compare_exploration.episode_successes(run_dir) == [False]
    from agents import RunConfig

    config = RunConfig.load(os.path.join(run_dir, "config.json"))
    assert (config.planner.bonus, config.planner.bonus_scale, config.action_repeat) == (
        "disagreement", 100.0, 5)
    config = RunConfig.load(os.path.join(out, "runs", "mountaincar", "optimistic", "s0",
                                         "config.json"))
    assert (config.agent, config.planner.propagation, config.planner.beta,
            config.planner.bonus) == ("pets", "optimistic", 1.0, None)
    assert os.path.getsize(os.path.join(out, "curves_mountaincar.png")) > 1000
    again = compare_exploration.main(argv)  # resumes: nothing left to run, same tables
    assert again.split("\n", 3)[3] == text.split("\n", 3)[3]
    # --report-only tabulates the finished runs and names the ones not run, running nothing.
    report = compare_exploration.main(argv[:4] + ["2"] + argv[4:] + ["--report-only"])
    assert "| random | 0/1 (0.00-0.79) | - | 0/1 |" in report
    assert "- mountaincar random seed 2: not run (--report-only)" in report
    assert not os.path.exists(os.path.join(out, "runs", "mountaincar", "random", "s2"))


@pytest.mark.slow
def test_mountaincar_preset_planner_finds_the_flag_with_the_exact_model():
    """Why the mountaincar preset plans with iCEM: given the exact dynamics (two identical
    "draws"), the preset's iCEM drives the car from the valley to the flag; CEM of the same size
    never leaves the valley. (~15 s on a 2-core CPU.)"""
    import dataclasses

    import envs
    from agents.factory import build_optimizer
    from experiments.presets import preset_config

    config = preset_config("mountaincar")
    spec = envs.task("mountaincar", action_repeat=config.action_repeat)

    class Exact:
        obs_dim, act_dim, num_functions, learns_reward, rollout_states = 2, 1, 2, False, None

        def sample_functions(self, params, key, k):
            return {"i": jnp.zeros((k,))}

        def transition(self, params, fns, key, obs, act, sample_noise=True):
            return Transition(spec.dynamics_fn(obs, act), None)

    def blocks_to_flag(optimizer_name):
        planner = dataclasses.replace(config.planner, optimizer=optimizer_name)
        mpc = MPC(Exact(), build_optimizer(planner), spec.reward_fn, spec.termination_fn,
                  horizon=planner.horizon, action_low=-1.0, action_high=1.0, num_particles=2,
                  propagation="mean")
        env = spec.make()
        obs, _ = env.reset(seed=0)
        state = mpc.reset({}, jax.random.PRNGKey(0))
        for t in range(spec.episode_length):
            act, state = mpc.act({}, state, obs, jax.random.PRNGKey(t))
            obs, _, terminated, truncated, _ = env.step(np.asarray(act))
            if terminated:
                return t + 1
            if truncated:
                break
        return None

    assert config.planner.optimizer == "icem"
    icem = blocks_to_flag("icem")
    assert icem is not None and icem < 100, icem
    assert blocks_to_flag("cem") is None
