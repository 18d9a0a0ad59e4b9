"""``ignored_obs_dims``: observation entries a model's network never sees (a task's
``absolute_position_dims``, e.g. the cheetah's x), while it still predicts the whole next
observation. Shifting an ignored entry by ``c`` must shift the prediction of that entry by
exactly ``c`` and leave every other prediction, and every variance, unchanged."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import RunConfig, build_agent
from agents.config import ModelConfig
from mbrl_bayes import models

OBS_DIM, ACT_DIM = 3, 1
SHIFT = 37.5  # exactly representable; far outside the data (standardized: ~40 std)
KEY = jax.random.PRNGKey(0)


def _haiku_net(x):
    return hk.nets.MLP([8, 2 * OBS_DIM], activation=jnp.tanh)(x)


MODELS = {
    "pe": lambda **kw: models.ProbabilisticEnsemble(hidden_sizes=(8, 8), ensemble_size=2,
                                                    **kw),
    "vmlp": lambda **kw: models.VariationalMLP(hidden_sizes=(8,), **kw),
    "vlstm": lambda **kw: models.VariationalLSTM(hidden_sizes=(8,), lstm_size=4,
                                                 sequence_length=2, **kw),
    "network": lambda **kw: models.NetworkDynamics(_haiku_net, **kw),
    "gp": lambda **kw: models.GaussianProcessDynamics(num_inducing=4, num_features=16,
                                                      hyperparameter_steps=0, **kw),
}


def _data(n=64, seed=0):
    """Dim 0 is a position that drifts (x' = x + 0.1 tanh(v)), as the cheetah's x."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32)
    nxt = obs + 0.1 * np.tanh(np.concatenate([obs[:, 1:2], obs[:, 1:] + act], -1))
    return {"obs": obs, "act": act, "next_obs": nxt.astype(np.float32),
            "reward": np.zeros(n, np.float32)}


def _fitted(name, ignored):
    model = MODELS[name](obs_dim=OBS_DIM, act_dim=ACT_DIM, ignored_obs_dims=ignored)
    data = _data()
    params = model.init(KEY, data["obs"][:2], data["act"][:2])
    return model, model.fit_stats(params, data), data


def _steps(model, params, obs, act):
    """The deltas and next-obs of 2 draws (aleatoric noise included, the same key twice),
    for ``obs`` and for ``obs`` with entry 0 shifted by ``SHIFT``."""
    fns = model.sample_functions(params, jax.random.PRNGKey(1), 2)
    obs = jnp.broadcast_to(obs, (2,) + obs.shape)
    act = jnp.broadcast_to(act, (2,) + act.shape)
    shifted = obs.at[..., 0].add(SHIFT)
    step = jax.jit(lambda o: model.transition(params, fns, jax.random.PRNGKey(2), o,
                                              act).next_obs)  # one compile for both
    return step(obs) - obs, step(shifted) - shifted


HEAVY = ("gp", "vlstm")  # 10+ s each on 2 cores: `pytest -m heavy`


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.heavy) if n in HEAVY else n
                                  for n in sorted(MODELS)])
def test_predictions_do_not_depend_on_ignored_dims(name):
    model, params, data = _fitted(name, ignored=(0,))
    assert model.in_dim == OBS_DIM - 1 + ACT_DIM
    obs, act = jnp.asarray(data["obs"][:5]), jnp.asarray(data["act"][:5])
    delta, delta_shifted = _steps(model, params, obs, act)
    np.testing.assert_allclose(delta_shifted, delta, rtol=0, atol=1e-5)
    assert float(jnp.abs(delta).max()) > 1e-3  # the model does predict a change


@pytest.mark.parametrize("name", ["pe", "network"])
def test_calibration_and_contract_with_ignored_dims(name):
    """``predict`` (calibration): means move with the ignored entry, variances do not; and
    ``check_model`` (init, fit_stats, loss, evaluate, transition, predict) finds nothing."""
    model, params, data = _fitted(name, ignored=(0,))
    obs, act = jnp.asarray(data["obs"][:5]), jnp.asarray(data["act"][:5])
    mean, var = model.predict_moments(params, KEY, obs, act, num_draws=2)
    mean_s, var_s = model.predict_moments(params, KEY, obs.at[:, 0].add(SHIFT), act,
                                          num_draws=2)
    np.testing.assert_allclose(mean_s - mean, np.broadcast_to([SHIFT, 0, 0], mean.shape),
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(var_s, var, rtol=1e-6)
    assert models.check_model(model, KEY) == []


@pytest.mark.parametrize("name", ["pe", "network"])
def test_without_ignored_dims_the_same_shift_changes_predictions(name):
    """The check above can fail: a model that sees entry 0 predicts other deltas there."""
    model, params, data = _fitted(name, ignored=())
    assert model.in_dim == OBS_DIM + ACT_DIM
    delta, delta_shifted = _steps(model, params, jnp.asarray(data["obs"][:5]),
                                  jnp.asarray(data["act"][:5]))
    assert float(jnp.abs(delta_shifted - delta).max()) > 1e-2


def test_training_reaches_the_drifting_dims_change():
    """Trained with entry 0 ignored, the ensemble still learns its change x' - x =
    0.1 tanh(v) from the other entries: on fresh points, an RMSE far below the change's own
    spread (the RMSE of predicting its mean). (Measured: 0.015 of it; 0.30 for the same model
    seeing x, which is 100 outside its training range.)"""
    model, params, _ = _fitted("pe", ignored=(0,))
    params, _ = models.train(model, params, _data(1024), KEY, max_epochs=30, batch_size=32,
                             patience=30, learning_rate=3e-3)
    test = _data(256, seed=1)
    true = test["next_obs"][:, 0] - test["obs"][:, 0]
    obs = test["obs"] + np.float32([100.0, 0, 0])  # x far from every training x
    mean, _ = model.predict_moments(params, KEY, jnp.asarray(obs), jnp.asarray(test["act"]))
    predicted = np.asarray(mean).mean(0)[:, 0] - obs[:, 0]
    assert float(np.sqrt(np.mean((predicted - true) ** 2))) < 0.2 * float(true.std())


@pytest.mark.parametrize("dims", [(3,), (-1,), (0, 0), (0, 1, 2), (True,), (0.5,), 0])
def test_bad_ignored_dims_are_one_line_errors(dims):
    with pytest.raises(ValueError, match="ignored_obs_dims must be") as info:
        models.ProbabilisticEnsemble(obs_dim=OBS_DIM, act_dim=ACT_DIM, ignored_obs_dims=dims)
    assert "\n" not in str(info.value)


def test_absolute_positions_of_the_tasks():
    """Only the cheetah's and the hopper's root x are absolute positions. Reacher's target
    and fingertip-target vector and Pusher's fingertip, object and goal positions are what the
    reward and the contacts depend on; InvertedPendulum's cart x meets the rail's ends."""
    positions = {name: envs.task(name).absolute_position_dims for name in envs.names()}
    assert {name: dims for name, dims in positions.items() if dims} == {
        "halfcheetah": (0,), "hopper": (0,)}


@pytest.mark.parametrize("env, ignored", [("halfcheetah", (0,)), ("reacher", ())])
def test_agents_models_drop_the_tasks_absolute_positions(env, ignored):
    config = RunConfig(env=env, model=ModelConfig(hidden_sizes=(8,), ensemble_size=2))
    model = build_agent(config).model
    assert model.ignored_obs_dims == ignored
    assert model.in_dim == envs.task(env).obs_dim - len(ignored) + envs.task(env).act_dim
