"""Agents: random agent bounds, Thompson draws once per episode, config round trip, factory."""

import dataclasses

import jax
import numpy as np
import pytest

import envs
from agents import (
    ModelConfig,
    PETSAgent,
    RandomAgent,
    RunConfig,
    ThompsonAgent,
    build_agent,
    build_model,
    run_episode,
)
from mbrl_bayes import models, planning
from mbrl_bayes.data import ReplayBuffer

TINY_PLANNER = dict(horizon=3, population=8, elites=2, iterations=1, num_particles=4)


def tiny_config(**changes):
    config = RunConfig(env="pendulum", seed_steps=30, episode_length=8)
    config.model = ModelConfig(name="vmlp", hidden_sizes=(8,), ensemble_size=2)
    config.planner = dataclasses.replace(config.planner, **TINY_PLANNER)
    config.train = dataclasses.replace(config.train, batch_size=8, max_epochs=1)
    for k, v in changes.items():
        setattr(config, k, v)
    return config


def random_buffer(n=30):
    env = envs.make("pendulum")
    buf = ReplayBuffer(100, 3, 1)
    run_episode(env, RandomAgent(np.array([-2.0]), np.array([2.0])), jax.random.PRNGKey(0), 0,
                n, buf)
    return buf


def test_random_agent_stays_in_bounds():
    agent = RandomAgent(np.array([-1.0, 0.0]), np.array([1.0, 3.0]))
    agent.begin_episode(jax.random.PRNGKey(0))
    acts = np.stack([agent.act(None) for _ in range(200)])
    assert acts.shape == (200, 2)
    assert (acts >= [-1, 0]).all() and (acts <= [1, 3]).all()
    assert acts[:, 1].std() > 0.5


def test_thompson_agent_keeps_one_function_per_episode():
    agent = build_agent(tiny_config(agent="thompson"))
    assert isinstance(agent, ThompsonAgent) and agent.propagation == "thompson"
    agent.update(random_buffer(), jax.random.PRNGKey(1))
    agent.begin_episode(jax.random.PRNGKey(2))
    first = agent._state.functions
    agent.act(np.zeros(3, np.float32), jax.random.PRNGKey(3))
    agent.act(np.ones(3, np.float32), jax.random.PRNGKey(4))
    np.testing.assert_array_equal(jax.random.key_data(agent._state.functions["key"]),
                                  jax.random.key_data(first["key"]))
    agent.begin_episode(jax.random.PRNGKey(5))
    assert not np.array_equal(jax.random.key_data(agent._state.functions["key"]),
                              jax.random.key_data(first["key"]))


def test_thompson_agent_needs_thompson_propagation():
    model = build_model(ModelConfig(name="pe", hidden_sizes=(8,)), 3, 1)
    spec = envs.task("pendulum")
    mpc = planning.MPC(model, planning.CEM(8, 2, 1), spec.reward_fn, horizon=3,
                       action_low=spec.action_low, action_high=spec.action_high,
                       num_particles=5, propagation="ts_inf")
    with pytest.raises(ValueError, match="propagation='thompson'"):
        ThompsonAgent(model, mpc)


def test_pets_agent_plans_within_bounds_after_training():
    config = tiny_config(agent="pets")
    config.model = ModelConfig(name="pe", hidden_sizes=(8,), ensemble_size=2)
    agent = build_agent(config)
    assert isinstance(agent, PETSAgent) and agent.propagation == "ts_inf"
    with pytest.raises(RuntimeError, match="no model yet"):
        agent.begin_episode(jax.random.PRNGKey(0))
    info = agent.update(random_buffer(), jax.random.PRNGKey(1))
    assert info["epochs"] == 1 and np.isfinite(info["train_loss"])
    agent.begin_episode(jax.random.PRNGKey(2))
    action = agent.act(np.array([1.0, 0.0, 0.0], np.float32), jax.random.PRNGKey(3))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


@pytest.mark.parametrize("name, cls", [("pe", models.ProbabilisticEnsemble),
                                       ("d", models.ProbabilisticEnsemble),
                                       ("vmlp", models.VariationalMLP),
                                       ("dropout", models.MCDropoutMLP),
                                       ("vlstm", models.VariationalLSTM)])
def test_factory_builds_every_model(name, cls):
    model = build_model(ModelConfig(name=name, hidden_sizes=(8,)), 3, 1)
    assert isinstance(model, cls)
    if name == "d":
        assert model.variant == "D"


def test_config_json_round_trip(tmp_path):
    config = tiny_config(agent="thompson", trials=7)
    path = str(tmp_path / "c.json")
    config.save(path)
    loaded = RunConfig.load(path)
    assert loaded == config
    assert loaded.model.hidden_sizes == (8,)
    with pytest.raises(ValueError, match="Unknown RunConfig keys: bogus"):
        RunConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="Unknown optimizer"):
        bad = tiny_config()
        bad.planner.optimizer = "adam"
        bad.validate()


@pytest.mark.parametrize("kind", ["triton", "mosaic"])
def test_fused_kernel_names_its_kernel(kind):
    from agents.factory import kernel_config

    assert kernel_config(ModelConfig(fused_kernel=None)) is None
    assert kernel_config(ModelConfig(fused_kernel=False)) is None  # older run configs
    cfg = kernel_config(ModelConfig(fused_kernel=kind))
    assert type(cfg).__name__ == "KernelConfig" and cfg.backend == kind
    config = tiny_config()
    for bad in ("sideways", "horizon", True):
        config.model.fused_kernel = bad
        with pytest.raises(ValueError, match="fused_kernel must be one of "
                                             "\\('triton', 'mosaic'\\) or null"):
            config.validate()


@pytest.mark.heavy  # ~15 s on 2 cores
def test_pets_agent_with_the_recurrent_model():
    config = tiny_config(agent="pets")
    config.model = ModelConfig(name="vlstm", hidden_sizes=(8,), lstm_size=4, sequence_length=4)
    agent = build_agent(config)
    info = agent.update(random_buffer(), jax.random.PRNGKey(1))
    assert np.isfinite(info["train_loss"])
    agent.begin_episode(jax.random.PRNGKey(2))
    action = agent.act(np.array([1.0, 0.0, 0.0], np.float32), jax.random.PRNGKey(3))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_metrics_csv_round_trip_and_the_trial_line(tmp_path):
    from agents import RunError, read_metrics
    from agents.metrics_csv import COLUMNS, read_rows, write_rows
    from agents.progress import trial_summary

    rows = [{"trial": 0, "env_steps": 20, "return": -12.5, "episode_steps": 20},
            {"trial": 1, "env_steps": 32, "return": 3.0, "train_loss": 1e-7, "holdout_mse": None,
             "not_a_column": "dropped"}]
    path = str(tmp_path / "metrics.csv")
    write_rows(path, rows)
    back = read_rows(path)
    assert back[0] == {**dict.fromkeys(COLUMNS), **rows[0]}
    assert back[1] == {**dict.fromkeys(COLUMNS), "trial": 1, "env_steps": 32, "return": 3.0,
                       "train_loss": 1e-7}
    assert type(back[1]["trial"]) is int and type(back[1]["return"]) is float
    assert trial_summary(back[1], 4) == ("trial   1/4  return      3.00  steps     32  model mse -"
                                         "  cov90 -  train -s  plan -s/act")
    with pytest.raises(RunError, match="is not a run folder"):
        read_metrics(str(tmp_path / "nothing"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RunError, match="is not a metrics file"):
        read_metrics(str(tmp_path / "run"))
