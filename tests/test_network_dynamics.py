"""``models.NetworkDynamics``: dynamics from a user's network (Haiku function or init/apply)."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from mbrl_bayes import layers as bl
from mbrl_bayes import metrics, models, planning
from mbrl_bayes.models.likelihood import LOG_2PI

SPEC = envs.task("pendulum")


def pendulum_data(n, seed):
    """Transitions of the exact Pendulum-v1 dynamics from uniform states and actions."""
    rng = np.random.default_rng(seed)
    th, thdot = rng.uniform(-np.pi, np.pi, n), rng.uniform(-8, 8, n)
    act = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
    new_thdot = np.clip(thdot + (15.0 * np.sin(th) + 3.0 * act[:, 0]) * 0.05, -8, 8)
    new_th = th + new_thdot * 0.05
    obs = np.stack([np.cos(th), np.sin(th), thdot], -1).astype(np.float32)
    next_obs = np.stack([np.cos(new_th), np.sin(new_th), new_thdot], -1).astype(np.float32)
    return {"obs": obs, "act": act, "next_obs": next_obs}


DATA = pendulum_data(256, 0)


def bl_network(x):
    """Bayesian layers; mean and raw log-variance as one [n, 2 * 3] output."""
    h = jax.nn.silu(bl.DenseReparameterization(16, name="hidden")(x))
    return bl.DenseReparameterization(6, name="out")(h)


def tuple_network(x):
    """A plain Haiku MLP (made Bayesian by bl.bayesian below) returning (mean, raw_logvar)."""
    h = hk.nets.MLP([16], activation=jax.nn.silu, activate_final=True, name="torso")(x)
    return hk.Linear(3, name="mean")(h), hk.Linear(3, name="raw_logvar")(h)


def pure_init(key, x):
    """A pure-function MLP (no Haiku): what a Flax or Equinox network reduces to."""
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (x.shape[-1], 16)) / np.sqrt(x.shape[-1]),
            "b1": jnp.zeros(16), "w2": jax.random.normal(k2, (16, 3)) / 4.0, "b2": jnp.zeros(3)}


def pure_apply(params, key, x):
    del key  # deterministic: every key is the same function
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def excess(loss):
    """A training loss (nats per transition) less the Gaussian NLL's constant ``0.5 t log 2pi``
    (t = 3 targets), so that ratios of losses measure the fit."""
    return loss - 0.5 * 3 * LOG_2PI


def fit(model, seed=0, max_epochs=8):
    params = model.init(jax.random.PRNGKey(seed), DATA["obs"][:2], DATA["act"][:2])
    return models.train(model, params, DATA, jax.random.PRNGKey(seed + 1), batch_size=32,
                        max_epochs=max_epochs, patience=max_epochs, learning_rate=1e-2)


def plan_one_action(model, params):
    mpc = planning.MPC(model, planning.CEM(population_size=16, num_elites=4, num_iterations=2),
                       SPEC.reward_fn, SPEC.termination_fn, horizon=4, num_particles=4,
                       propagation="ts_inf", action_low=SPEC.action_low,
                       action_high=SPEC.action_high)
    state = mpc.reset(params, jax.random.PRNGKey(7))
    action, _ = mpc.act(params, state, DATA["obs"][0], jax.random.PRNGKey(8))
    return np.asarray(action)


def check_predict(model, params):
    """The predictive mixture of 10 transitions: batch shape [10], event shape [3]; returns
    its RMSE (one jitted call: op by op the mixture costs seconds)."""
    obs, act, next_obs = (DATA[k][:10] for k in ("obs", "act", "next_obs"))

    def scores(params, key):
        dist = model.predict(params, key, obs, act)
        assert dist.batch_shape == (10,) and dist.event_shape == (3,)
        return dist.log_prob(next_obs), metrics.rmse(dist, next_obs)

    log_prob, rmse = jax.jit(scores)(params, jax.random.PRNGKey(9))
    assert log_prob.shape == (10,) and np.all(np.isfinite(log_prob))
    return float(rmse)


@pytest.fixture(scope="module")
def bl_fit():
    model = models.NetworkDynamics(bl_network, obs_dim=3, act_dim=1)
    params, history = fit(model)
    return model, params, history


def test_a_bl_layer_network_trains_plans_and_predicts(bl_fit):
    model, params, history = bl_fit
    assert model.probabilistic and model.num_functions is None
    assert excess(history["train_loss"][-1]) < 0.6 * excess(history["train_loss"][0])
    assert history["holdout_mse"][-1] < 0.6 * history["holdout_mse"][0]
    action = plan_one_action(model, params)
    assert action.shape == (1,) and np.all(np.isfinite(action))
    assert SPEC.action_low[0] <= action[0] <= SPEC.action_high[0]
    assert check_predict(model, params) < 1.0


def test_the_loss_is_the_elbo_with_bl_losses_over_num_data(bl_fit):
    model, params, _ = bl_fit
    batch = {k: v[:32] for k, v in DATA.items()}
    key = jax.random.PRNGKey(3)
    loss, aux = model.loss(params, key, batch)
    kl = 0.0
    for layer in ("hidden", "out"):
        loc = np.asarray(params["net"][layer]["w_loc"], np.float64)
        scale = np.log1p(np.exp(np.asarray(params["net"][layer]["w_raw_scale"], np.float64)))
        kl += np.sum(-np.log(scale) + (scale ** 2 + loc ** 2) / 2 - 0.5)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
    assert int(params["stats"]["num_data"]) == len(DATA["obs"]) - 26  # the holdout is 10%
    no_kl = models.NetworkDynamics(bl_network, obs_dim=3, act_dim=1, kl_weight=0.0)
    loss0, _ = no_kl.loss(params, key, batch)
    np.testing.assert_allclose(loss - loss0, kl / int(params["stats"]["num_data"]), rtol=1e-4)


def test_a_function_draw_is_a_key():
    model = models.NetworkDynamics(bl.bayesian(tuple_network), obs_dim=3, act_dim=1)
    params = model.init(jax.random.PRNGKey(0), DATA["obs"][:2], DATA["act"][:2])
    assert set(params["net"]["torso/~/linear_0"]) == {"w_loc", "w_raw_scale", "b"}
    assert model.probabilistic
    fns = model.sample_functions(params, jax.random.PRNGKey(1), 3)
    obs = np.broadcast_to(DATA["obs"][:5], (3, 5, 3))
    act = np.broadcast_to(DATA["act"][:5], (3, 5, 1))
    step = jax.jit(lambda f, o, a: model.transition(params, f, jax.random.PRNGKey(2), o, a,
                                                    sample_noise=False).next_obs)
    out = step(fns, obs, act)
    # The three draws differ; each equals the same key applied alone, on any row order.
    assert np.abs(out[0] - out[1]).max() > 1e-4
    one = jax.tree_util.tree_map(lambda x: x[1:2], fns)
    np.testing.assert_allclose(step(one, obs[1:2, ::-1], act[1:2, ::-1])[0], out[1, ::-1],
                               rtol=1e-5, atol=1e-6)


def test_a_plain_init_apply_pair_trains_plans_and_predicts():
    model = models.NetworkDynamics((pure_init, pure_apply), obs_dim=3, act_dim=1)
    assert not model.probabilistic  # [n, 3]: the mean only
    params, history = fit(model)
    assert excess(history["train_loss"][-1]) < 0.5 * excess(history["train_loss"][0])
    action = plan_one_action(model, params)
    assert action.shape == (1,) and SPEC.action_low[0] <= action[0] <= SPEC.action_high[0]
    check_predict(model, params)


def test_a_network_with_the_wrong_output_is_reported():
    with pytest.raises(ValueError, match=r"returned shape \(2, 4\)"):
        models.NetworkDynamics(lambda x: hk.Linear(4)(x), obs_dim=3, act_dim=1)
    with pytest.raises(ValueError, match=r"\[n, 8\]"):  # learn_reward: t = 4
        models.NetworkDynamics(lambda x: hk.Linear(6)(x), obs_dim=3, act_dim=1,
                               learn_reward=True)
    with pytest.raises(TypeError, match="Haiku function"):
        models.NetworkDynamics("mlp", obs_dim=3, act_dim=1)
    with pytest.raises(TypeError, match="init\\(key, x\\)"):
        models.NetworkDynamics((pure_init, lambda params, x: x), obs_dim=3, act_dim=1)


def test_a_learned_reward_is_the_last_target_column():
    model = models.NetworkDynamics(lambda x: hk.Linear(8)(x), obs_dim=3, act_dim=1,
                                   learn_reward=True)
    params = model.init(jax.random.PRNGKey(0), DATA["obs"][:2], DATA["act"][:2])
    fns = model.sample_functions(params, jax.random.PRNGKey(1), 2)
    out = model.transition(params, fns, jax.random.PRNGKey(2), np.zeros((2, 3, 3)),
                           np.zeros((2, 3, 1)))
    assert out.next_obs.shape == (2, 3, 3) and out.reward.shape == (2, 3)



def rank1_network(x):
    """A rank-1 Bayesian ensemble of 3 members in layers."""
    h = jax.nn.silu(bl.DenseRank1(16, 3, name="hidden")(x))
    return bl.DenseRank1(6, 3, name="out")(h)


@pytest.mark.heavy  # ~15 s on 2 cores
def test_an_ensemble_in_layers_draws_members_and_keys():
    model = models.NetworkDynamics(rank1_network, obs_dim=3, act_dim=1, ensemble_size=3)
    params, history = fit(model)
    assert excess(history["train_loss"][-1]) < 0.6 * excess(history["train_loss"][0])
    fns = model.sample_functions(params, jax.random.PRNGKey(1), 6)
    members = np.asarray(fns["member"])
    np.testing.assert_array_equal(members, (np.arange(6) + members[0]) % 3)  # cycles
    obs = np.broadcast_to(DATA["obs"][:4], (6, 4, 3))
    act = np.broadcast_to(DATA["act"][:4], (6, 4, 1))
    step = jax.jit(lambda f, o, a: model.transition(params, f, jax.random.PRNGKey(2), o, a,
                                                    sample_noise=False).next_obs)
    out = step(fns, obs, act)
    # Draw i is member i's function with key i: the same pair alone gives the same rows.
    alone = step(jax.tree_util.tree_map(lambda x: x[4:5], fns), obs[4:5], act[4:5])
    np.testing.assert_allclose(alone[0], out[4], rtol=1e-5, atol=1e-6)
    assert np.abs(out[0] - out[1]).max() > 1e-4
    action = plan_one_action(model, params)
    assert SPEC.action_low[0] <= action[0] <= SPEC.action_high[0]


# ------------------------------------------------------------------ CLI: --network
NETWORK_FILE = '''
import haiku as hk
import jax
from mbrl_bayes import layers as bl

network = bl.bayesian(lambda x: hk.nets.MLP([8, 6], activation=jax.nn.silu)(x))
'''

TINY_RUN = {
    "env": "pendulum", "agent": "pets", "seed": 0, "trials": 1, "seed_steps": 20,
    "episode_length": 8, "eval_calibration": False,
    "model": {"hidden_sizes": [8]},
    "train": {"batch_size": 16, "max_epochs": 2, "patience": 2},
    "planner": {"optimizer": "cem", "horizon": 3, "population": 8, "elites": 2,
                "iterations": 1, "num_particles": 2},
}


def _last_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_network_runs_import_code_only_from_the_command_line(tmp_path, capsys):
    """A run folder of model 'network' records the name; resuming or evaluating it needs
    --network again (checked before anything is built)."""
    from agents import ModelConfig, RunConfig, build_agent, load_network
    from experiments.cli import main

    (tmp_path / "nets.py").write_text(NETWORK_FILE)
    spec = f"{tmp_path / 'nets.py'}:network"
    out = tmp_path / "run"
    out.mkdir()
    config = RunConfig(env="pendulum", model=ModelConfig(name="network", network=spec))
    config.save(str(out / "config.json"))
    assert main(["train", "--resume", str(out), "--trials", "2", "--quiet"]) == 2
    assert f"give --network {spec} again" in _last_error_line(capsys)
    assert main(["evaluate", str(out), "--episodes", "1"]) == 2
    assert "--network" in _last_error_line(capsys)
    assert main(["train", "--resume", str(out), "--network", "other.py:network"]) == 2
    assert "not 'other.py:network'" in _last_error_line(capsys)
    assert RunConfig.load(str(out / "config.json")).trials == config.trials
    with pytest.raises(ValueError, match="never imports code"):
        build_agent(config)
    agent = build_agent(config, load_network(spec))
    assert isinstance(agent.model, models.NetworkDynamics) and agent.model.probabilistic


@pytest.mark.slow
def test_cli_trains_a_network_from_a_file_and_resumes_when_given_it(tmp_path, capsys):
    import json

    from agents import RunConfig, read_metrics
    from experiments.cli import main

    (tmp_path / "nets.py").write_text(NETWORK_FILE)
    spec = f"{tmp_path / 'nets.py'}:network"
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    out = str(tmp_path / "run")
    assert main(["train", "--config", str(config), "--network", spec, "--out", out,
                 "--quiet"]) == 0
    recorded = RunConfig.load(f"{out}/config.json").model
    assert (recorded.name, recorded.network) == ("network", spec)
    capsys.readouterr()
    assert main(["train", "--resume", out, "--trials", "2", "--quiet"]) == 2
    assert f"give --network {spec} again" in _last_error_line(capsys)
    assert main(["train", "--resume", out, "--trials", "2", "--network", spec, "--quiet"]) == 0
    rows = read_metrics(out)
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert all(np.isfinite(float(r["return"])) for r in rows)
    capsys.readouterr()
    assert main(["evaluate", out, "--episodes", "1", "--network", spec]) == 0
    assert capsys.readouterr().out.startswith("return over 1 episodes")


@pytest.mark.parametrize("argv, message", [
    (["--network", "missing.py:network"], "does not exist"),
    (["--network", "nets.py:mlp"], "has no 'mlp'"),
    (["--network", "nets.py"], "'path/to/file.py:function'"),
    (["--network", "nets.py:jax"], "neither a function"),
    (["--network", "nets.py:network", "--model", "pe"], "drop --model pe"),
    (["--network", "no_such_package.nets:network"], "ModuleNotFoundError"),
])
def test_cli_bad_networks_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    from experiments.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(NETWORK_FILE)
    assert main(["train", "--env", "pendulum", "--out", str(tmp_path / "run"), "--quiet",
                 *argv]) == 2
    assert message in _last_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_load_network_imports_a_module_by_name(tmp_path, monkeypatch):
    from agents import load_network

    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "dynamics.py").write_text(NETWORK_FILE + "pair = (len, len)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    network = load_network("usernets.dynamics:network")
    model = models.NetworkDynamics(network, obs_dim=3, act_dim=1)
    assert model.probabilistic
    assert load_network("usernets.dynamics:pair") == (len, len)


def flipout_network(x):
    """Trains with Flipout's per-row weight noise."""
    h = jax.nn.silu(bl.DenseFlipout(16)(x))
    return bl.DenseFlipout(6)(h)


def test_a_flipout_network_plans_with_one_function_per_key():
    """Per-row estimators are for training: a function draw of a Flipout network applies one
    weight sample to all of its rows (identical rows give identical next states)."""
    model = models.NetworkDynamics(flipout_network, obs_dim=3, act_dim=1)
    params = model.init(jax.random.PRNGKey(0), DATA["obs"][:8], DATA["act"][:8])
    fns = model.sample_functions(params, jax.random.PRNGKey(1), 2)
    obs = np.broadcast_to(DATA["obs"][:1], (2, 5, 3))
    act = np.broadcast_to(DATA["act"][:1], (2, 5, 1))
    out = model.transition(params, fns, jax.random.PRNGKey(2), obs, act,
                           sample_noise=False).next_obs
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape), rtol=1e-6)
    assert np.abs(out[0, 0] - out[1, 0]).max() > 1e-5  # two keys, two functions


def noise_init(key, x):
    del key, x
    return {"b": jnp.array([0.1, -0.2, 0.3])}


def noise_apply(params, key, x):
    """A deterministic head whose draws differ only by key: mean = b + 0.3 * N(0, I)."""
    return params["b"] + 0.3 * jax.random.normal(key, (x.shape[0], 3))


@pytest.mark.parametrize("objective", ["elbo", "pets"])
def test_training_draws_score_each_row_by_the_mixture_of_its_draws(objective):
    model = models.NetworkDynamics((noise_init, noise_apply), obs_dim=3, act_dim=1,
                                   training_draws=4, objective=objective)
    params = model.init(jax.random.PRNGKey(0), DATA["obs"][:2], DATA["act"][:2])
    params = model.fit_stats(params, DATA)
    batch = {k: v[:8] for k, v in DATA.items()}
    key = jax.random.PRNGKey(5)
    loss, _ = model.loss(params, key, batch)
    _, _, target = model.standardized_targets(params, batch)
    target = np.asarray(target, np.float64)  # [8, 3]
    means = np.stack([np.asarray(noise_apply(params["net"], k, target), np.float64)
                      for k in jax.random.split(key, 4)])  # [4, 8, 3]
    nll = 0.5 * ((target - means) ** 2).sum(-1) + 1.5 * LOG_2PI  # [4, 8], unit variance
    mixture = -np.log(np.exp(-nll).mean(0))  # each row under the equal mixture of 4 draws
    scale = 2.0 / 3 if objective == "pets" else 1.0  # PETS's 2 / t
    np.testing.assert_allclose(float(loss), scale * mixture.mean(), rtol=1e-5)
    assert mixture.mean() < nll.mean()  # Jensen: the mixture scores better than a draw's mean


def test_training_draws_are_checked():
    with pytest.raises(ValueError, match="training_draws must be a positive integer"):
        models.NetworkDynamics(bl_network, obs_dim=3, act_dim=1, training_draws=0)
    with pytest.raises(ValueError, match="ensemble"):
        models.NetworkDynamics(rank1_network, obs_dim=3, act_dim=1, ensemble_size=2,
                               training_draws=2)
