"""GaussianProcessDynamics: the DynamicsModel contract, the closed-form q(v) against SGPR,
training, planning with every propagation mode, and the agent / CLI names ``gp`` and ``dgp``."""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import ModelConfig, PETSAgent, RunConfig, build_agent, build_model
from mbrl_bayes import models, planning
from mbrl_bayes.layers.gp import kernel_matrix

M = 48


def pendulum_data(n, seed):
    """Transitions of the exact pendulum dynamics from random states and actions."""
    step = envs.jax_dynamics("pendulum")
    rng = np.random.default_rng(seed)
    th, thd = rng.uniform(-np.pi, np.pi, n), rng.uniform(-6, 6, n)
    obs = np.stack([np.cos(th), np.sin(th), thd], -1).astype(np.float32)
    act = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
    nxt = np.asarray(step(jnp.asarray(obs), jnp.asarray(act)))
    return {"obs": obs, "act": act, "next_obs": nxt, "reward": np.zeros(n, np.float32)}


@functools.lru_cache(maxsize=None)
def trained(depth=1):
    model = models.GaussianProcessDynamics(obs_dim=3, act_dim=1, num_inducing=M // depth,
                                           depth=depth, num_features=64)
    data = pendulum_data(160, 0)
    params = model.init(jax.random.PRNGKey(0), data["obs"][:1], data["act"][:1])
    params, history = models.train(model, params, data, jax.random.PRNGKey(1), batch_size=32,
                                   max_epochs=4 // depth, patience=4, learning_rate=1e-2)
    return model, params, history


def test_fit_stats_sets_the_sgpr_optimum():
    """After fit_stats, the output GPs' predictive mean is Titsias' SGPR mean
    ``K_xz (noise K_zz + K_zx K_xz)^{-1} K_zx y`` (float64 numpy reference)."""
    model = models.GaussianProcessDynamics(obs_dim=3, act_dim=1, num_inducing=M,
                                           hyperparameter_steps=0)
    data = pendulum_data(100, 1)
    params = model.fit_stats(model.init(jax.random.PRNGKey(0), data["obs"][:1],
                                        data["act"][:1]), data)
    stats = params["stats"]
    x = np.asarray(stats["input"].normalize(np.concatenate([data["obs"], data["act"]], -1)))
    y = np.asarray(stats["target"].normalize(data["next_obs"] - data["obs"]), np.float64)
    mean, _, _ = model._net.apply[0](params["net"]["gp"], jax.random.PRNGKey(0), x)
    head = params["net"]["gp"]["output_0"]
    z = np.asarray(head["inducing_inputs"], np.float64)
    # The first fit_stats placed the inducing inputs on training inputs.
    assert np.abs(z[:, None, :] - x[None]).max(-1).min(1).max() < 1e-5
    noise = model.noise_init
    k = lambda a, b: np.asarray(kernel_matrix("squared_exponential", a, b, np.ones(4), 1.0),  # noqa: E731
                                np.float64)
    kzz = k(z, z) + 1e-4 * np.eye(M)
    kzx, kxz = k(z, x), k(x, z)
    expected = kxz @ np.linalg.solve(noise * kzz + kzx @ kxz, kzx @ y[:, 0])
    np.testing.assert_allclose(mean[:, 0], expected, atol=2e-3)
    assert np.mean((expected - y[:, 0]) ** 2) < 0.5  # half the zero predictor's error or less


def test_the_optimal_q_survives_the_noise_floor_on_noise_free_data():
    """A converged fit on noise-free dynamics ends at the noise floor, where ``I + A A^T /
    noise`` is past a float32 Cholesky. The case (tests/data/gp_noise_floor.npz) is a pendulum
    run's third output GP at its second retraining, whose q(v) came out NaN in float32: the
    optimum must be finite and SGPR's mean (float64 numpy reference)."""
    from mbrl_bayes.models.gp import _optimal_whitened_q

    case = np.load(os.path.join(os.path.dirname(__file__), "data", "gp_noise_floor.npz"))
    model = models.GaussianProcessDynamics(obs_dim=3, act_dim=1, hyperparameter_steps=0)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 3), np.float32),
                        np.zeros((1, 1), np.float32))
    gp = dict(params["net"]["gp"])
    gp["output_0"] = {**gp["output_0"], **{name: jnp.asarray(case[name]) for name in (
        "inducing_inputs", "raw_lengthscale", "raw_variance")}}
    x, y, noise = case["x"], case["y"], float(case["noise"])
    assert noise < 3e-6 and x.shape == (400, 4)
    loc, raw = _optimal_whitened_q(model._net.apply[2](gp, None)[0], jnp.asarray(x),
                                   jnp.asarray(y), jnp.asarray(noise))
    assert np.all(np.isfinite(np.asarray(loc))) and np.all(np.isfinite(np.asarray(raw)))
    gp["output_0"] = {**gp["output_0"], "inducing_outputs_loc": loc[None],
                      "inducing_outputs_scale_tril": raw[None]}
    mean, var, _ = model._net.apply[0](gp, jax.random.PRNGKey(0), jnp.asarray(x))
    assert np.all(np.isfinite(np.asarray(var[:, 0]))) and np.all(np.asarray(var[:, 0]) >= 0)
    ls, variance = (np.asarray(jax.nn.softplus(case[k]), np.float64)
                    for k in ("raw_lengthscale", "raw_variance"))
    z = np.asarray(case["inducing_inputs"], np.float64)
    k = lambda a, b: np.asarray(kernel_matrix("squared_exponential", a, b, ls, variance),  # noqa: E731
                                np.float64)
    kzx, kxz = k(z, x), k(x, z)
    kzz = k(z, z) + 1e-4 * variance * np.eye(len(z))
    expected = kxz @ np.linalg.solve(noise * kzz + kzx @ kxz, kzx @ y.astype(np.float64))
    np.testing.assert_allclose(mean[:, 0], expected, atol=0.02 * np.std(y))


def test_fit_hyperparameters_climbs_the_collapsed_bound():
    from mbrl_bayes.models.gp import _collapsed_bound

    model = models.GaussianProcessDynamics(obs_dim=3, act_dim=1, num_inducing=16,
                                           hyperparameter_steps=0)
    data = pendulum_data(80, 6)
    params = model.fit_stats(model.init(jax.random.PRNGKey(0), data["obs"][:1],
                                        data["act"][:1]), data)
    fitted = model.fit_hyperparameters(params, data, steps=60)
    x, y = model.inputs_targets(data)
    x = params["stats"]["input"].normalize(jnp.asarray(x))
    y = params["stats"]["target"].normalize(jnp.asarray(y))

    def bound(p, j):
        head = p["net"]["gp"][f"output_{j}"]
        theta = {"z": head["inducing_inputs"], "ls": head["raw_lengthscale"],
                 "var": head["raw_variance"], "noise": p["net"]["raw_noise"][j]}
        return float(_collapsed_bound(theta, x, y[:, j], "squared_exponential", 1e-6))

    for j in range(3):
        assert bound(fitted, j) > bound(params, j) + 0.1


@pytest.mark.heavy  # trains the shared GP and deep GP, 10-35 s
def test_training_lowers_the_loss_and_reports_the_gaussian_nll():
    model, params, history = trained()
    assert history["train_loss"][-1] < history["train_loss"][0]
    data = pendulum_data(64, 2)
    loss, metrics = model.loss(params, jax.random.PRNGKey(0), data)
    assert set(metrics) >= {"nll", "mse", "kl", "expected_nll"}
    assert float(metrics["mse"]) < 0.1 and float(metrics["kl"]) > 0
    assert float(metrics["nll"]) <= float(metrics["expected_nll"]) + 1e-4  # Jensen
    # Held-out one-step error of the posterior mean, in the raw units, well below the spread.
    mean, var = model.predictive_moments(params, data["obs"], data["act"])
    err = np.asarray(mean - data["next_obs"])
    assert np.sqrt(np.mean(err[:, 2] ** 2)) < 0.3 * np.std(data["next_obs"][:, 2])
    z = np.abs(err) / np.sqrt(np.asarray(var))
    assert 0.8 <= np.mean(z < 1.6449) <= 1.0


@pytest.mark.heavy  # ~20 s on 2 cores
def test_contract_shapes_and_fixed_functions():
    model, params, _ = trained()
    k, m = 5, 7
    fns = model.sample_functions(params, jax.random.PRNGKey(3), k)
    assert all(leaf.shape[0] == k for leaf in jax.tree_util.tree_leaves(fns))
    data = pendulum_data(2 * m, 3)
    obs = jnp.broadcast_to(data["obs"][:m], (k, m, 3))
    act = jnp.broadcast_to(data["act"][:m], (k, m, 1))
    tr = model.transition(params, fns, jax.random.PRNGKey(4), obs, act, sample_noise=False)
    assert tr.next_obs.shape == (k, m, 3) and tr.reward is None
    assert model.step(params, fns, jax.random.PRNGKey(4), obs, act).shape == (k, m, 3)
    # A draw is one function of its input: the same rows inside a bigger batch agree.
    big_obs = jnp.broadcast_to(data["obs"], (k, 2 * m, 3))
    big_act = jnp.broadcast_to(data["act"], (k, 2 * m, 1))
    big = model.transition(params, fns, jax.random.PRNGKey(5), big_obs, big_act,
                           sample_noise=False).next_obs
    np.testing.assert_allclose(big[:, :m], tr.next_obs, atol=1e-4)
    assert float(jnp.std(tr.next_obs, axis=0).max()) > 0  # draws differ
    again = model.sample_functions(params, jax.random.PRNGKey(3), k)
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(again)[0],
                                  jax.tree_util.tree_leaves(fns)[0])
    dist = model.predict(params, jax.random.PRNGKey(6), data["obs"], data["act"])
    assert dist.batch_shape == (2 * m,) and dist.event_shape == (3,)
    assert np.all(np.isfinite(dist.log_prob(data["next_obs"])))
    # Over many pathwise draws the predictive mixture has the analytic moments.
    many = model.predict(params, jax.random.PRNGKey(7), data["obs"], data["act"], num_draws=400)
    mean, var = model.predictive_moments(params, data["obs"], data["act"])
    np.testing.assert_array_less(np.abs(many.mean() - mean), 4.0 * np.sqrt(var / 400) + 1e-4)
    np.testing.assert_allclose(many.variance(), var, rtol=0.25)


@pytest.mark.heavy  # the trained GP (see above), ~8 s each
@pytest.mark.parametrize("propagation", ["ts_inf", "ts1", "mean", "optimistic"])
def test_mpc_plans_with_every_propagation(propagation):
    model, params, _ = trained()
    spec = envs.task("pendulum")
    mpc = planning.MPC(model, planning.CEM(population_size=8, num_elites=2, num_iterations=1),
                       spec.reward_fn, None, horizon=3, action_low=spec.action_low,
                       action_high=spec.action_high, num_particles=4, propagation=propagation)
    state = mpc.reset(params, jax.random.PRNGKey(0))
    action, _ = mpc.act(params, state, np.array([1.0, 0.0, 0.0], np.float32),
                        jax.random.PRNGKey(1))
    assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0


@pytest.mark.heavy  # ~20 s on 2 cores
def test_deep_gp_draws_compose():
    """Without training: after fit_stats the deep GP's mean draw (inner layers near the
    identity) already predicts, and its draws are fixed functions of the rows."""
    model = models.GaussianProcessDynamics(obs_dim=3, act_dim=1, num_inducing=M, depth=2,
                                           num_features=64)
    data = pendulum_data(120, 0)
    params = model.fit_stats(model.init(jax.random.PRNGKey(0), data["obs"][:1],
                                        data["act"][:1]), data)
    test = pendulum_data(8, 5)
    fns = model.sample_functions(params, jax.random.PRNGKey(1), 2)
    obs, act = (jnp.broadcast_to(test[n], (2,) + test[n].shape) for n in ("obs", "act"))
    out = model.transition(params, fns, jax.random.PRNGKey(2), obs, act, sample_noise=False)
    head = model.transition(params, fns, jax.random.PRNGKey(3), obs[:, :3], act[:, :3],
                            sample_noise=False)
    np.testing.assert_allclose(head.next_obs, out.next_obs[:, :3], atol=1e-4)
    mean = model.transition(params, model.mean_function(params), jax.random.PRNGKey(4),
                            obs[:1], act[:1], sample_noise=False).next_obs[0]
    err = np.asarray(mean - test["next_obs"])
    assert np.sqrt(np.mean(err[:, 2] ** 2)) < 0.5 * np.std(test["next_obs"][:, 2])


@pytest.mark.slow
def test_deep_gp_trains_and_draws_compose():
    model, params, history = trained(depth=2)
    assert set(params["net"]["gp"]) == {"inner_0", "output_0", "output_1", "output_2"}
    assert np.isfinite(history["train_loss"][-1])
    fns = model.sample_functions(params, jax.random.PRNGKey(0), 3)
    data = pendulum_data(6, 4)
    obs = jnp.broadcast_to(data["obs"], (3, 6, 3))
    act = jnp.broadcast_to(data["act"], (3, 6, 1))
    out = model.transition(params, fns, jax.random.PRNGKey(1), obs, act, sample_noise=False)
    err = np.asarray(out.next_obs.mean(0) - data["next_obs"])
    assert np.sqrt(np.mean(err[:, 2] ** 2)) < 0.2 * np.std(data["next_obs"][:, 2]) + 0.2


def test_deep_gp_inner_layer_starts_near_the_identity():
    """Before any data, an inner layer's draws are the identity plus a residual of prior
    variance ``inner_variance_init``: at the default 1e-3 the deep GP starts as a single GP on
    the (nearly) unchanged inputs; at the layers' own default of 1 it scatters them."""
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
    spread = {}
    for variance in (1e-3, 1.0):
        kwargs = {} if variance == 1e-3 else {"inner_variance_init": variance}
        model = models.GaussianProcessDynamics(obs_dim=3, act_dim=1, num_inducing=16, depth=2,
                                               num_features=128, **kwargs)
        params = model.init(jax.random.PRNGKey(1), np.zeros((1, 3)), np.zeros((1, 1)))
        fns = model.sample_functions(params, jax.random.PRNGKey(2), 16)
        inner = jax.vmap(lambda fn: fn(x))(fns["layers"][0])  # [16, 64, 4]
        spread[variance] = float(jnp.sqrt(jnp.mean((inner - x) ** 2)))
    # A residual of prior variance v has rms sqrt(v) away from the inducing points, less near.
    assert 0.3 * np.sqrt(1e-3) < spread[1e-3] < 1.5 * np.sqrt(1e-3)
    assert 0.3 < spread[1.0] < 1.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="inner_variance_init"):
        models.GaussianProcessDynamics(obs_dim=3, act_dim=1, depth=2, inner_variance_init=0.0)
    with pytest.raises(ValueError, match="num_inducing"):
        models.GaussianProcessDynamics(obs_dim=3, act_dim=1, num_inducing=0)
    with pytest.raises(ValueError, match="depth"):
        models.GaussianProcessDynamics(obs_dim=3, act_dim=1, depth=0)
    with pytest.raises(ValueError, match="kernel"):
        models.GaussianProcessDynamics(obs_dim=3, act_dim=1, kernel="cosine")
    with pytest.raises(ValueError, match="dgp_depth"):
        RunConfig(env="pendulum", model=ModelConfig(name="dgp", dgp_depth=1)).validate()


@pytest.mark.parametrize("name, depth", [("gp", 1), ("dgp", 3)])
def test_agent_builds_gp_models(name, depth):
    model = build_model(ModelConfig(name=name, num_inducing=8, dgp_depth=3), 3, 1)
    assert isinstance(model, models.GaussianProcessDynamics) and model.depth == depth
    config = RunConfig(env="pendulum", seed_steps=20, episode_length=5)
    config.model = ModelConfig(name=name, num_inducing=8)
    config.planner = dataclasses.replace(config.planner, horizon=2, population=8, elites=2,
                                         iterations=1, num_particles=4)
    config.train = dataclasses.replace(config.train, batch_size=8, max_epochs=1)
    assert isinstance(build_agent(config.validate()), PETSAgent)


@pytest.mark.slow
def test_cli_trains_a_gp_run(tmp_path):
    from agents import read_metrics
    from experiments.cli import main
    from experiments.common import tiny

    config = tiny(RunConfig(env="pendulum", trials=1))
    config.model.num_inducing = 8
    path = str(tmp_path / "config.json")
    config.save(path)
    out = str(tmp_path / "run")
    assert main(["train", "--config", path, "--model", "gp", "--out", out, "--quiet"]) == 0
    rows = read_metrics(out)
    assert rows[-1]["trial"] == 1 and np.isfinite(rows[-1]["return"])
    assert RunConfig.load(f"{out}/config.json").model.name == "gp"


@pytest.mark.slow
def test_calibration_has_gp_rows(tmp_path):
    from experiments import calibration

    text = calibration.main(["--envs", "pendulum", "--seeds", "0", "--models", "GP",
                             "--train-episodes", "2", "--test-episodes", "1",
                             "--episode-length", "20", "--max-epochs", "2", "--horizon", "4",
                             "--out", str(tmp_path)])
    row = [line for line in text.splitlines() if line.startswith("| GP |")][0]
    coverage90 = float(row.split("|")[5])
    assert 0.5 <= coverage90 <= 1.0, row


def test_hyperparameter_fit_stops_when_a_chunk_no_longer_raises_the_bound():
    """With a tolerance no chunk can meet, the fit stops after one chunk (100 steps) whatever
    its step limit; a met tolerance keeps climbing."""
    from mbrl_bayes.models.gp import (
        HYPERPARAMETER_CHUNK,
        _climb_collapsed_bound,
        _collapsed_bound,
        _fit_collapsed_bound,
        _hyperparameter_optimizer,
    )

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 2)), jnp.float32)
    y = jnp.sin(2 * x[:, 0]) + 0.1 * jnp.asarray(rng.normal(size=64), jnp.float32)
    theta = {"z": x[:8], "ls": jnp.ones(2), "var": jnp.asarray(1.0),
             "noise": jnp.asarray(-1.0)}
    steps, kernel = 3 * HYPERPARAMETER_CHUNK, "squared_exponential"
    state = _hyperparameter_optimizer(0.03, steps).init(theta)
    one_chunk, _, one_chunk_bound = _fit_collapsed_bound(
        theta, state, x, y, kernel, 1e-6, HYPERPARAMETER_CHUNK, 0.03, steps)
    stopped = _climb_collapsed_bound(theta, x, y, kernel, 1e-6, steps, 0.03, tolerance=1e9)
    for name in theta:
        np.testing.assert_array_equal(stopped[name], one_chunk[name])
    climbed = _climb_collapsed_bound(theta, x, y, kernel, 1e-6, steps, 0.03, tolerance=1e-6)
    assert float(_collapsed_bound(climbed, x, y, kernel, 1e-6)) > float(one_chunk_bound) > \
        float(_collapsed_bound(theta, x, y, kernel, 1e-6))


@pytest.mark.heavy  # two compiles, ~5 s
def test_hyperparameter_fit_skips_steps_a_float32_cholesky_cannot_take():
    # Many repeated rows and a tiny noise make I + A A^T / noise singular in float32: the
    # collapsed bound's gradient is NaN there, and such steps must be skipped, not applied.
    from mbrl_bayes.models.gp import _climb_collapsed_bound, _collapsed_bound

    rng = np.random.default_rng(0)
    x = jnp.asarray(np.repeat(rng.normal(size=(4, 2)), 100, axis=0), jnp.float32)
    y = jnp.sin(x[:, 0])
    theta = {"z": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32), "ls": jnp.ones(2),
             "var": jnp.asarray(1.0), "noise": jnp.asarray(-30.0)}
    grad = jax.grad(lambda t: -_collapsed_bound(t, x, y, "squared_exponential", 1e-12))(theta)
    assert not all(bool(jnp.all(jnp.isfinite(g))) for g in grad.values())
    fitted = _climb_collapsed_bound(theta, x, y, "squared_exponential", 1e-12, 3, 0.03, 0.0)
    for name, value in fitted.items():
        assert bool(jnp.all(jnp.isfinite(value))), name
