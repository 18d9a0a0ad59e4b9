"""Dynamics models: fit known systems, recover known noise, epistemic spread, function draws."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import models
from mbrl_bayes.data import ReplayBuffer
from mbrl_bayes.models import MCDropoutMLP, ProbabilisticEnsemble, VariationalMLP, train

NOISE_STD = 0.1


def noisy_1d_data(n, seed, low=-1.0, high=1.0):
    """s' = s + 0.5 sin(3 s) + 0.3 a + N(0, 0.1^2): known aleatoric noise."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(low, high, (n, 1)).astype(np.float32)
    a = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    nxt = s + 0.5 * np.sin(3 * s) + 0.3 * a + NOISE_STD * rng.standard_normal((n, 1))
    return {"obs": s, "act": a, "next_obs": nxt.astype(np.float32),
            "reward": np.zeros(n, np.float32)}


def fit(model, data, seed=0, **kwargs):
    params = model.init(jax.random.PRNGKey(seed), data["obs"][:2], data["act"][:2])
    return train(model, params, data, jax.random.PRNGKey(seed + 1), **kwargs)


PENDULUM_MODELS = {
    "D": lambda: ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(64, 64),
                                       ensemble_size=1, probabilistic=False),
    "PE": lambda: ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(64, 64),
                                        ensemble_size=3),
    "dropout": lambda: MCDropoutMLP(obs_dim=3, act_dim=1, hidden_sizes=(64, 64),
                                    dropout_rate=0.05),
    "vmlp": lambda: VariationalMLP(obs_dim=3, act_dim=1, hidden_sizes=(64, 64)),
}


@pytest.fixture(scope="module")
def pendulum_fits(pendulum_data):
    data = pendulum_data(3000, seed=0)
    out = {}
    for name, make in PENDULUM_MODELS.items():
        model = make()
        params, history = fit(model, data, max_epochs=30, batch_size=128, patience=30)
        out[name] = (model, params, history)
    return out


@pytest.mark.heavy  # the fixture trains five families, ~25 s: run by .ci/run's second pytest
@pytest.mark.parametrize("name", sorted(PENDULUM_MODELS))
def test_fits_pendulum_dynamics(pendulum_data, pendulum_fits, name):
    model, params, history = pendulum_fits[name]
    test = pendulum_data(500, seed=1)
    k = model.num_functions or 4
    fns = model.sample_functions(params, jax.random.PRNGKey(5), k)
    obs = jnp.broadcast_to(test["obs"], (k,) + test["obs"].shape)
    act = jnp.broadcast_to(test["act"], (k,) + test["act"].shape)
    pred = model.transition(params, fns, jax.random.PRNGKey(6), obs, act, sample_noise=False)
    rmse = float(jnp.sqrt(jnp.mean(jnp.square(pred.next_obs.mean(0) - test["next_obs"]))))
    # Predicting "no change" has RMSE ~0.35 (thdot moves by up to ~1); a fitted model is >5x better.
    baseline = float(np.sqrt(np.mean(np.square(test["obs"] - test["next_obs"]))))
    assert baseline > 0.3
    assert rmse < 0.06, (name, rmse)
    assert history["holdout_mse"][-1] < history["holdout_mse"][0]


@pytest.fixture(scope="module")
def noisy_pe():
    data = noisy_1d_data(4000, seed=0)
    model = ProbabilisticEnsemble(obs_dim=1, act_dim=1, hidden_sizes=(32, 32), ensemble_size=5)
    params, _ = fit(model, data, max_epochs=40, batch_size=128, patience=40)
    return model, params


def test_pe_recovers_known_aleatoric_noise(noisy_pe):
    model, params = noisy_pe
    test = noisy_1d_data(1000, seed=1)
    means, variances = model.predict_moments(params, jax.random.PRNGKey(0), test["obs"],
                                             test["act"])
    predicted_std = float(jnp.sqrt(variances.mean()))
    assert abs(predicted_std - NOISE_STD) / NOISE_STD < 0.2, predicted_std


def test_epistemic_spread_grows_off_data(noisy_pe):
    model, params = noisy_pe
    on = noisy_1d_data(500, seed=2, low=-1.0, high=1.0)
    off = noisy_1d_data(500, seed=2, low=3.0, high=5.0)

    def epistemic(data):
        means, _ = model.predict_moments(params, jax.random.PRNGKey(0), data["obs"], data["act"])
        return float(means.var(axis=0).mean())

    assert epistemic(off) > 10 * epistemic(on)


@pytest.mark.heavy  # shares the five-family fixture (~25-40 s)
def test_same_draw_same_mean_prediction(pendulum_fits):
    for name, (model, params, _) in pendulum_fits.items():
        fns = model.sample_functions(params, jax.random.PRNGKey(3), 2)
        obs = jnp.ones((2, 4, 3)) * 0.3
        act = jnp.ones((2, 4, 1)) * 0.5
        a = model.transition(params, fns, jax.random.PRNGKey(0), obs, act, sample_noise=False)
        b = model.transition(params, fns, jax.random.PRNGKey(9), obs, act, sample_noise=False)
        np.testing.assert_array_equal(a.next_obs, b.next_obs, err_msg=name)
        # Rows given identical inputs under one draw agree: a draw is one function.
        np.testing.assert_allclose(a.next_obs[0], a.next_obs[0, :1].repeat(4, 0), atol=1e-6)


@pytest.mark.heavy  # shares the five-family fixture (~25-40 s)
def test_draws_differ_and_noise_depends_on_key(pendulum_fits):
    model, params, _ = pendulum_fits["dropout"]
    fns = model.sample_functions(params, jax.random.PRNGKey(3), 2)
    obs = jnp.full((2, 1, 3), 0.3)
    act = jnp.full((2, 1, 1), 0.5)
    out = model.transition(params, fns, jax.random.PRNGKey(0), obs, act, sample_noise=False)
    assert not np.allclose(out.next_obs[0], out.next_obs[1])
    model, params, _ = pendulum_fits["PE"]
    fns = model.sample_functions(params, jax.random.PRNGKey(3), 3)
    obs, act = jnp.full((3, 1, 3), 0.3), jnp.full((3, 1, 1), 0.5)
    a = model.step(params, fns, jax.random.PRNGKey(0), obs, act)
    b = model.step(params, fns, jax.random.PRNGKey(1), obs, act)
    c = model.step(params, fns, jax.random.PRNGKey(0), obs, act)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.heavy  # shares the five-family fixture (~25-40 s)
def test_ensemble_variants_and_elites(pendulum_fits):
    assert ProbabilisticEnsemble(obs_dim=1, act_dim=1, ensemble_size=1,
                                 probabilistic=False).variant == "D"
    assert ProbabilisticEnsemble(obs_dim=1, act_dim=1, ensemble_size=1).variant == "P"
    assert ProbabilisticEnsemble(obs_dim=1, act_dim=1, probabilistic=False).variant == "DE"
    assert ProbabilisticEnsemble(obs_dim=1, act_dim=1).variant == "PE"
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(8,), ensemble_size=5,
                                  num_elites=2)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 1)))
    params = model.with_elites(params, jnp.array([5.0, 1.0, 4.0, 0.5, 3.0]))
    np.testing.assert_array_equal(params["stats"]["elites"], [1, 3])
    fns = model.sample_functions(params, jax.random.PRNGKey(0), 4)
    np.testing.assert_array_equal(fns["member"], [1, 3, 1, 3])
    np.testing.assert_array_equal(fns["layers"][0]["w"][1], params["net"][0]["w"][3])
    fns = model.sample_functions(params, jax.random.PRNGKey(0), 3)
    assert set(np.asarray(fns["member"]).tolist()) <= {1, 3}


def test_members_train_on_different_bootstraps(pendulum_data):
    data = pendulum_data(400, seed=0)
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(16,), ensemble_size=3)
    params, _ = fit(model, data, max_epochs=2)
    w = params["net"][0]["w"]
    assert not np.allclose(w[0], w[1])
    # Same initialization, same data, no bootstrap: members still differ (own init), but two
    # runs with the same keys are identical (deterministic).
    params2, _ = fit(model, data, max_epochs=2)
    np.testing.assert_array_equal(params2["net"][0]["w"], w)


def test_ensemble_step_is_one_batched_matmul_per_layer():
    model = ProbabilisticEnsemble(obs_dim=4, act_dim=1, hidden_sizes=(200,) * 4, ensemble_size=5)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), jnp.zeros((1, 1)))
    fns = model.sample_functions(params, jax.random.PRNGKey(1), 5)
    obs, act = jnp.zeros((5, 1400, 4)), jnp.zeros((5, 1400, 1))
    jaxpr = jax.make_jaxpr(model.step)(params, fns, jax.random.PRNGKey(2), obs, act)
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    # 4 hidden layers + the output layer (mean and log-variance heads in one product), each over
    # all 5 x 1400 rows at once.
    assert len(dots) == 5
    for eqn in dots:
        (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"][1]
        assert tuple(lhs_batch) == (0,) and tuple(rhs_batch) == (0,)
        assert eqn.invars[0].aval.shape[:2] == (5, 1400)
        assert eqn.invars[1].aval.shape[0] == 5  # one weight matrix per function, not per row
    assert not any(e.primitive.name in ("while", "scan") for e in jaxpr.jaxpr.eqns)


def test_normalizer_is_robust_to_constant_dimensions():
    x = np.stack([np.linspace(0, 1, 10), np.full(10, 3.0)], -1)
    norm = models.Normalizer.fit(x)
    z = np.asarray(norm.normalize(x))
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, 1], 0.0)
    np.testing.assert_allclose(z[:, 0].std(), 1.0, rtol=1e-5)


def test_learned_reward_head(pendulum_data):
    data = pendulum_data(1500, seed=0)
    data["reward"] = (data["obs"][:, 0] - 0.01 * data["obs"][:, 2] ** 2).astype(np.float32)
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(64, 64), ensemble_size=2,
                                  learn_reward=True)
    params, _ = fit(model, data, max_epochs=25, batch_size=128, patience=25)
    fns = model.sample_functions(params, jax.random.PRNGKey(0), 2)
    obs = jnp.broadcast_to(data["obs"][:200], (2, 200, 3))
    act = jnp.broadcast_to(data["act"][:200], (2, 200, 1))
    out = model.transition(params, fns, jax.random.PRNGKey(0), obs, act, sample_noise=False)
    assert out.reward.shape == (2, 200)
    err = np.sqrt(np.mean((np.asarray(out.reward.mean(0)) - data["reward"][:200]) ** 2))
    assert err < 0.1 * data["reward"].std(), err


def test_bad_input_is_reported_clearly(pendulum_data):
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(8,), ensemble_size=2)
    with pytest.raises(ValueError, match="obs must have shape"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 4)), jnp.zeros((2, 1)))
    with pytest.raises(ValueError, match="share their leading"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 3)), jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match="NaN or inf"):
        model.init(jax.random.PRNGKey(0), jnp.full((2, 3), jnp.nan), jnp.zeros((2, 1)))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 3)), jnp.zeros((2, 1)))
    data = pendulum_data(20, seed=0)
    data["next_obs"][3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        train(model, params, data, jax.random.PRNGKey(0))
    empty = {k: v[:0] for k, v in pendulum_data(5, 0).items()}
    with pytest.raises(ValueError, match="empty buffer"):
        train(model, params, empty, jax.random.PRNGKey(0))
    no_reward = {k: v for k, v in pendulum_data(20, 0).items() if k != "reward"}
    reward_model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(8,),
                                         learn_reward=True)
    with pytest.raises(ValueError, match="lacks the field 'reward'"):
        train(reward_model, params, no_reward, jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="ReplayBuffer or a dict"):
        train(model, params, [data["obs"]], jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="num_elites"):
        ProbabilisticEnsemble(obs_dim=3, act_dim=1, ensemble_size=2, num_elites=3)
    with pytest.raises(ValueError, match="dropout_rate"):
        MCDropoutMLP(obs_dim=3, act_dim=1, dropout_rate=1.5)


def test_history_reports_the_holdout_error_of_the_returned_params(pendulum_data):
    data = pendulum_data(300, seed=2)
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(16,), ensemble_size=1,
                                  probabilistic=False)
    # A learning rate this high makes the holdout error jump around, so the best epoch is
    # usually not the last one.
    params, history = fit(model, data, max_epochs=12, patience=12, learning_rate=0.1)
    best = history["best_epoch"][0]
    # One deterministic member: the returned params are exactly those of its best epoch.
    np.testing.assert_allclose(history["final_holdout_mse"][0],
                               history["holdout_mse"][best - 1], rtol=1e-5)
    assert best < len(history["epoch"])  # not simply the last epoch's error


def test_early_stopping_on_the_holdout_nll_keeps_the_variances_calibrated(pendulum_data):
    """With little data the mean keeps improving long after the variance head has become
    overconfident: stopping on the MSE returns a much worse NLL than stopping on the NLL."""
    data = pendulum_data(80, seed=1)
    noise = np.random.default_rng(1).standard_normal(data["next_obs"].shape)
    data["next_obs"] = data["next_obs"] + 0.05 * noise.astype(np.float32)
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(64, 64), ensemble_size=1)
    kwargs = dict(max_epochs=200, patience=200, improvement_threshold=0.0, learning_rate=3e-3,
                  batch_size=16, holdout_fraction=0.25)
    params0 = model.init(jax.random.PRNGKey(0), data["obs"][:2], data["act"][:2])
    _, by_mse = train(model, params0, data, jax.random.PRNGKey(1), **kwargs)
    # train() leaves its input params usable (its update step donates only its own copies).
    _, by_nll = train(model, params0, data, jax.random.PRNGKey(1), early_stopping="nll",
                      **kwargs)
    # Same training run (same keys); each returns the params of its own best epoch.
    np.testing.assert_allclose(by_nll["holdout_nll"], by_mse["holdout_nll"], rtol=1e-4)
    np.testing.assert_allclose(by_mse["final_holdout_mse"][0], min(by_mse["holdout_mse"]),
                               rtol=1e-4)
    np.testing.assert_allclose(by_nll["final_holdout_nll"][0], min(by_nll["holdout_nll"]),
                               rtol=1e-4, atol=1e-4)
    assert by_nll["best_epoch"][0] < by_mse["best_epoch"][0] / 2
    assert by_mse["final_holdout_nll"][0] > by_nll["final_holdout_nll"][0] + 10.0
    assert by_mse["final_holdout_mse"][0] < by_nll["final_holdout_mse"][0]
    with pytest.raises(ValueError, match="early_stopping must be 'mse' or 'nll'"):
        fit(model, data, early_stopping="loss")


def test_softplus_matches_jax_in_value_and_gradient():
    from mbrl_bayes.models.gaussian import softplus

    x = jnp.concatenate([jnp.linspace(-90.0, 90.0, 20001), jnp.array([0.0, -1e-8, 1e-8])])
    np.testing.assert_allclose(softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-7)
    grad = jax.vmap(jax.grad(softplus))(x)
    np.testing.assert_allclose(grad, jax.nn.sigmoid(x), rtol=1e-6, atol=1e-7)
    special = softplus(jnp.array([jnp.inf, -jnp.inf, jnp.nan]))
    assert special[0] == jnp.inf and special[1] == 0.0 and jnp.isnan(special[2])


@pytest.mark.parametrize("top,bottom", [(0.5, -10.0), (3.0, -2.0), (-1.0, -20.0), (40.0, -40.0),
                                        (-1.0, 0.5)])
def test_bounded_std_equals_the_bounded_log_variance_route(top, bottom):
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(8,), ensemble_size=2)
    params = {"logvar_bounds": {"max": jnp.full((3,), top), "min": jnp.full((3,), bottom)}}
    raw = jnp.linspace(-200.0, 200.0, 30000).reshape(-1, 3)
    # float64: logvar = min + softplus(max - softplus(max - raw) - min)
    raw64 = np.asarray(raw, np.float64)
    inner = top - np.logaddexp(0.0, top - raw64)
    exact = np.exp(0.5 * (bottom + np.logaddexp(0.0, inner - bottom)))
    std = model._bounded_std(params, raw)
    assert bool(jnp.all(jnp.isfinite(std)))
    np.testing.assert_allclose(std, exact, rtol=1e-6)
    via_logvar = jnp.exp(0.5 * model._bounded_logvar(params, raw))
    np.testing.assert_allclose(std, via_logvar, rtol=2e-6 * max(1.0, abs(top), abs(bottom)) / 10)


def test_transition_noise_has_the_predicted_variance(noisy_pe):
    model, params = noisy_pe
    fns = model.sample_functions(params, jax.random.PRNGKey(0), model.num_functions)
    k, m = model.num_functions, 20000
    obs, act = jnp.full((k, m, 1), 0.3), jnp.full((k, m, 1), -0.2)
    step = model.transition(params, fns, jax.random.PRNGKey(1), obs, act).next_obs
    mean = model.transition(params, fns, jax.random.PRNGKey(1), obs, act,
                            sample_noise=False).next_obs
    np.testing.assert_allclose(step.mean(1), mean[:, 0], atol=0.05 * NOISE_STD)
    _, var = model.predict_moments(params, jax.random.PRNGKey(0), obs[0, :1], act[0, :1])
    np.testing.assert_allclose(step.std(1), jnp.sqrt(var[:, 0]), rtol=0.03)


def test_gaussian_nll_is_the_per_point_gaussian_log_density():
    rng = np.random.default_rng(0)
    mean, logvar, target = (rng.normal(size=(2, 5, 3)).astype(np.float32) for _ in range(3))
    nll = models.gaussian_nll(mean, logvar, target)
    assert nll.shape == (2, 5)  # one value per data point, summed over the target dimensions
    reference = -distrax.MultivariateNormalDiag(mean, np.exp(0.5 * logvar)).log_prob(target)
    np.testing.assert_allclose(nll, reference, rtol=1e-5)
    # A unit variance: half the squared error plus 0.5 log(2 pi) per dimension.
    np.testing.assert_allclose(models.gaussian_nll(mean, 0.0, target),
                               0.5 * ((target - mean) ** 2).sum(-1) + 1.5 * np.log(2 * np.pi),
                               rtol=1e-5)


def _batch(pendulum_data, n=64):
    return jax.tree_util.tree_map(jnp.asarray, pendulum_data(n, seed=3))


def _init(model, data):
    params = model.init(jax.random.PRNGKey(0), data["obs"][:2], data["act"][:2])
    params = model.fit_stats(params, jax.tree_util.tree_map(np.asarray, data))
    if "logvar_bounds" in params:  # bounds away from their initial values: a non-zero penalty
        params["logvar_bounds"] = {"max": jnp.array([0.3, 0.6, 0.9]),
                                   "min": jnp.array([-9.0, -8.0, -7.0])}
    return params


def test_the_pets_objective_is_mbrl_libs_loss(pendulum_data):
    """The ensemble trains on its NLL, scaled to mbrl-lib's loss: the sum over members of the
    mean over rows and dimensions of ``sq * exp(-logvar) + logvar`` (``sq`` if deterministic),
    plus ``0.01 * (sum(max_logvar) - sum(min_logvar))``; equal up to ``E * log(2 pi)``."""
    data = _batch(pendulum_data)
    key = jax.random.PRNGKey(1)
    for probabilistic in (True, False):
        model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(16,), ensemble_size=3,
                                      probabilistic=probabilistic)
        params = _init(model, data)
        loss, aux = model.loss(params, key, data)
        obs, act, target = model.standardized_targets(params, data)
        obs, act = (jnp.broadcast_to(a, (3,) + a.shape) for a in (obs, act))
        mean, logvar = model._standardized_prediction(params, model.all_members(params), key,
                                                      obs, act)
        sq = np.square(np.asarray(mean) - np.asarray(target))
        if probabilistic:
            bounds = params["logvar_bounds"]
            mbrl_lib = (sq * np.exp(-logvar) + logvar).mean((1, 2)).sum() + 0.01 * (
                bounds["max"].sum() - bounds["min"].sum())
        else:
            mbrl_lib = sq.mean((1, 2)).sum()
        np.testing.assert_allclose(loss, mbrl_lib + 3 * np.log(2 * np.pi), rtol=1e-5)
        np.testing.assert_allclose(aux["mse"], sq.mean(), rtol=1e-5)


@pytest.mark.heavy  # 10-20 s: run by .ci/run's second pytest
def test_every_family_reports_one_nll(pendulum_data):
    """``aux['nll']`` and ``evaluate``'s ``nll`` are the mean per-point NLL of the predictive
    Gaussian (a deterministic head's: variance DETERMINISTIC_STD**2), for every family; each
    objective is that NLL plus its own terms."""
    from mbrl_bayes.models.gaussian import DETERMINISTIC_STD

    data = _batch(pendulum_data)
    key = jax.random.PRNGKey(1)
    # One probabilistic member: evaluate's NLL is distrax's log density of its prediction.
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(16,), ensemble_size=1)
    params = _init(model, data)
    mean, logvar, target = model._holdout_prediction(params, key, data)
    reference = -distrax.MultivariateNormalDiag(mean, jnp.exp(0.5 * logvar)).log_prob(target)
    np.testing.assert_allclose(model.evaluate(params, key, data)["nll"], reference.mean(),
                               rtol=1e-5)
    loss, aux = model.loss(params, key, data)
    np.testing.assert_allclose(loss, 2 / 3 * aux["nll"] + model.logvar_penalty(params),
                               rtol=1e-5)
    # A deterministic head is scored with the variance that ``predict`` reports.
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(16,), ensemble_size=1,
                                  probabilistic=False)
    params = _init(model, data)
    mean, logvar, target = model._holdout_prediction(params, key, data)
    assert logvar is None
    scale = jnp.full_like(mean, DETERMINISTIC_STD)
    reference = -distrax.MultivariateNormalDiag(mean, scale).log_prob(target)
    np.testing.assert_allclose(model.evaluate(params, key, data)["nll"], reference.mean(),
                               rtol=1e-5)
    # Variational: the ELBO per data point, NLL + KL / N (+ the bound penalty).
    model = VariationalMLP(obs_dim=3, act_dim=1, hidden_sizes=(16,))
    params = _init(model, data)
    loss, aux = model.loss(params, key, data)
    np.testing.assert_allclose(aux["kl"], model.kl(params), rtol=1e-5)
    np.testing.assert_allclose(
        loss, aux["nll"] + aux["kl"] / 64 + model.logvar_penalty(params), rtol=1e-5)
    # MC dropout: one member's PETS objective.
    model = MCDropoutMLP(obs_dim=3, act_dim=1, hidden_sizes=(16,))
    params = _init(model, data)
    loss, aux = model.loss(params, key, data)
    np.testing.assert_allclose(loss, 2 / 3 * aux["nll"] + model.logvar_penalty(params),
                               rtol=1e-5)


def test_train_splits_and_bootstraps_through_the_replay_buffer(pendulum_data):
    data = pendulum_data(200, seed=4)
    buffer = ReplayBuffer(200, 3, 1)
    buffer.add(data["obs"], data["act"], data["next_obs"], data["reward"],
               np.zeros(200, bool), np.zeros(200, bool))
    model = ProbabilisticEnsemble(obs_dim=3, act_dim=1, hidden_sizes=(8,), ensemble_size=2)
    params = model.init(jax.random.PRNGKey(0), data["obs"][:2], data["act"][:2])
    kwargs = dict(max_epochs=2, batch_size=32, max_holdout=15)
    from_buffer, history = train(model, params, buffer, jax.random.PRNGKey(1), **kwargs)
    from_dict, same = train(model, params, data, jax.random.PRNGKey(1), **kwargs)
    # A dict of arrays is stored in a buffer and takes the same path: same split, same bootstrap.
    for a, b in zip(jax.tree_util.tree_leaves(from_buffer), jax.tree_util.tree_leaves(from_dict)):
        np.testing.assert_array_equal(a, b)
    assert history["holdout_mse"] == same["holdout_mse"]
    assert history["num_holdout"] == [15] and history["num_train"] == [185]  # 20 capped at 15
    assert len(history["train_nll"]) == len(history["epoch"]) == 2
