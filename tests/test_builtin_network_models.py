"""``VariationalMLP`` and ``MCDropoutMLP`` are ``NetworkDynamics`` given a network of ``bl``
layers: nothing of their own but the network and its defaults."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import layers as bl
from mbrl_bayes import models
from mbrl_bayes.models.dropout import mc_dropout_network
from mbrl_bayes.models.variational import variational_mlp_network


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    next_obs = obs + 0.1 * np.tanh(obs + act) + 0.05 * rng.normal(size=(n, 3))
    return {"obs": obs, "act": act, "next_obs": next_obs.astype(np.float32)}


DATA = _data()


def _params(model, seed=0):
    params = model.init(jax.random.PRNGKey(seed), DATA["obs"][:2], DATA["act"][:2])
    return model.fit_stats(params, DATA)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _gaussian_nll(params, out, target, t):
    """Mean over rows of the Gaussian NLL (summed over the ``t`` targets) of raw network outputs
    ``out`` [n, 2 t]: the mean, and the raw log-variance inside the PETS soft bounds."""
    out, target = np.asarray(out, np.float64), np.asarray(target, np.float64)
    hi = np.asarray(params["logvar_bounds"]["max"], np.float64)
    lo = np.asarray(params["logvar_bounds"]["min"], np.float64)
    mean, raw = out[:, :t], out[:, t:]
    logvar = hi - _softplus(hi - raw)
    logvar = lo + _softplus(logvar - lo)
    nll = 0.5 * (np.log(2 * np.pi) + logvar + (target - mean) ** 2 / np.exp(logvar))
    return nll.sum(-1).mean(), 0.01 * (hi.sum() - lo.sum())


def _standardized(params):
    stats = params["stats"]
    x = stats["input"].normalize(np.concatenate([DATA["obs"], DATA["act"]], -1))
    return x, np.asarray(stats["target"].normalize(DATA["next_obs"] - DATA["obs"]))


@pytest.mark.parametrize("model", [
    models.VariationalMLP(obs_dim=3, act_dim=1, hidden_sizes=(4,)),
    models.MCDropoutMLP(obs_dim=3, act_dim=1, hidden_sizes=(4,)),
], ids=["vmlp", "dropout"])
def test_the_builtin_mlps_are_network_dynamics_with_only_a_constructor(model):
    assert isinstance(model, models.NetworkDynamics)
    own = [name for name, value in vars(type(model)).items() if callable(value)]
    assert own == ["__init__"]


@pytest.mark.heavy  # 10-20 s: run by .ci/run's second pytest
def test_variational_mlp_loss_is_mean_nll_plus_weighted_kl_over_n():
    network = variational_mlp_network(6, (8,), prior_stddev=0.5, posterior_stddev_init=0.05)
    model = models.VariationalMLP(obs_dim=3, act_dim=1, hidden_sizes=(8,), prior_stddev=0.5,
                                  posterior_stddev_init=0.05, kl_weight=0.3, training_draws=1)
    params = _params(model)
    key = jax.random.PRNGKey(3)
    loss, aux = model.loss(params, key, DATA)
    # The same loss as NetworkDynamics given the network (same parameters, same key).
    same = models.NetworkDynamics(network, obs_dim=3, act_dim=1, kl_weight=0.3)
    np.testing.assert_array_equal(same.loss(params, key, DATA)[0], loss)
    # Closed form: KL(N(loc, s^2) || N(0, 0.5^2)) summed over every kernel entry.
    kl = 0.0
    for layer in ("linear_0", "linear_out"):
        loc = np.asarray(params["net"][layer]["w_loc"], np.float64)
        s = _softplus(np.asarray(params["net"][layer]["w_raw_scale"], np.float64))
        kl += np.sum(np.log(0.5 / s) + (s ** 2 + loc ** 2) / (2 * 0.25) - 0.5)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(model.kl(params), kl, rtol=1e-5)
    # The NLL of the network's outputs on this key: Flipout, the layers' own estimator.
    x, target = _standardized(params)
    out = hk.transform(network).apply(params["net"], key, x)
    nll, bound_penalty = _gaussian_nll(params, out, target, 3)
    np.testing.assert_allclose(
        loss, nll + 0.3 * kl / len(DATA["obs"]) + bound_penalty, rtol=1e-5)
    assert kl / len(DATA["obs"]) > 0.05 * abs(nll)  # the KL term is not negligible here
    # By default the data term is the mixture NLL of 5 draws (NetworkDynamics's PAC^m loss).
    default = models.VariationalMLP(obs_dim=3, act_dim=1, hidden_sizes=(8,), prior_stddev=0.5,
                                    posterior_stddev_init=0.05, kl_weight=0.3)
    mixture = models.NetworkDynamics(network, obs_dim=3, act_dim=1, kl_weight=0.3,
                                     training_draws=5)
    assert default.training_draws == 5
    np.testing.assert_array_equal(default.loss(params, key, DATA)[0],
                                  mixture.loss(params, key, DATA)[0])


def test_mc_dropout_trains_on_row_masks_and_draws_one_mask_per_function():
    model = models.MCDropoutMLP(obs_dim=3, act_dim=1, hidden_sizes=(16,), dropout_rate=0.3,
                                training_draws=1)
    assert models.MCDropoutMLP(obs_dim=3, act_dim=1).training_draws == 5  # the default
    params = _params(model)
    key = jax.random.PRNGKey(4)
    loss, aux = model.loss(params, key, DATA)
    network = mc_dropout_network(6, (16,), dropout_rate=0.3)
    same = models.NetworkDynamics(network, obs_dim=3, act_dim=1, objective="pets")
    np.testing.assert_array_equal(same.loss(params, key, DATA)[0], loss)
    # One PETS member: (2 / t) * mean NLL + bound penalty, the NLL of per-row masks.
    x, target = _standardized(params)
    apply = hk.transform(network).apply
    nll, bound_penalty = _gaussian_nll(params, apply(params["net"], key, x), target, 3)
    np.testing.assert_allclose(loss, 2 / 3 * nll + bound_penalty, rtol=1e-5)
    assert float(aux["kl"]) == 0.0
    # Training: identical rows get different masks (different outputs) ...
    rows = apply(params["net"], key, jnp.broadcast_to(x[:1], (8, 4)))
    assert np.abs(rows - rows[:1]).max() > 1e-3
    # ... a function draw: one mask for all of its rows, another for another key.
    fns = model.sample_functions(params, jax.random.PRNGKey(5), 2)
    obs = np.broadcast_to(DATA["obs"][:1], (2, 8, 3))
    act = np.broadcast_to(DATA["act"][:1], (2, 8, 1))
    nxt = model.transition(params, fns, key, obs, act, sample_noise=False).next_obs
    np.testing.assert_array_equal(nxt, np.broadcast_to(nxt[:, :1], nxt.shape))
    assert np.abs(nxt[0, 0] - nxt[1, 0]).max() > 1e-4


def test_the_pets_objective_scales_the_negative_elbo_by_two_over_t():
    network = variational_mlp_network(6, (4,))
    elbo = models.NetworkDynamics(network, obs_dim=3, act_dim=1)
    pets = models.NetworkDynamics(network, obs_dim=3, act_dim=1, objective="pets")
    params = _params(elbo)
    key = jax.random.PRNGKey(6)
    penalty = elbo.logvar_penalty(params)
    np.testing.assert_allclose(pets.loss(params, key, DATA)[0] - penalty,
                               2 / 3 * (elbo.loss(params, key, DATA)[0] - penalty), rtol=1e-5)
    with pytest.raises(ValueError, match="objective must be one of"):
        models.NetworkDynamics(network, obs_dim=3, act_dim=1, objective="mse")


def rank1_network(x):
    """A rank-1 Bayesian ensemble of 2 members in layers."""
    h = jax.nn.silu(hk.nets.MLP([8], activate_final=True)(x))
    return bl.DenseRank1(6, 2, name="out")(h)


def test_the_pets_objective_of_an_ensemble_sums_its_members_nlls():
    """ELBO: the mean of the members' NLLs; PETS: their sum (as ``ProbabilisticEnsemble``),
    each with the penalty counted once."""
    elbo = models.NetworkDynamics(rank1_network, obs_dim=3, act_dim=1, ensemble_size=2)
    pets = models.NetworkDynamics(rank1_network, obs_dim=3, act_dim=1, ensemble_size=2,
                                  objective="pets")
    params = _params(elbo)
    key = jax.random.PRNGKey(8)
    penalty = elbo.logvar_penalty(params)
    loss, aux = elbo.loss(params, key, DATA)
    kl_term = aux["kl"] / len(DATA["obs"])
    assert kl_term > 1e-3
    mean_nll = loss - penalty - kl_term
    np.testing.assert_allclose(pets.loss(params, key, DATA)[0] - penalty,
                               2 / 3 * (2 * mean_nll + kl_term), rtol=1e-5)
