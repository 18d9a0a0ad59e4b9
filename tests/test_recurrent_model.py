"""VariationalLSTM: history conditioning on a partially observed system."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.data import ReplayBuffer
from mbrl_bayes.models import ProbabilisticEnsemble, VariationalLSTM, train
from mbrl_bayes.planning import CEM, MPC

DT = 0.1


def oscillator_buffer(episodes, length, seed):
    """A spring-mass system observed through its position only: the velocity is hidden, so
    the next position depends on the history, not on the current observation alone."""
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(episodes * length, 1, 1)
    for _ in range(episodes):
        x, v = rng.uniform(-1, 1), rng.uniform(-1, 1)
        for t in range(length):
            a = rng.uniform(-1, 1)
            v_next = v + (-4.0 * x + a) * DT
            x_next = x + v_next * DT
            buf.add(np.array([x], np.float32), np.array([a], np.float32),
                    np.array([x_next], np.float32), 0.0, False, t == length - 1)
            x, v = x_next, v_next
    return buf


@pytest.fixture(scope="module")
def fitted():
    buf = oscillator_buffer(60, 40, seed=0)
    lstm = VariationalLSTM(obs_dim=1, act_dim=1, hidden_sizes=(32,), lstm_size=32,
                           sequence_length=8)
    params = lstm.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)))
    params, history = train(lstm, params, buf, jax.random.PRNGKey(1), batch_size=32,
                            max_epochs=40, patience=40, learning_rate=3e-3)
    mlp = ProbabilisticEnsemble(obs_dim=1, act_dim=1, hidden_sizes=(32, 32), ensemble_size=1)
    mlp_params = mlp.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)))
    mlp_params, _ = train(mlp, mlp_params, buf, jax.random.PRNGKey(1), batch_size=32,
                          max_epochs=40, patience=40)
    return lstm, params, history, mlp, mlp_params


@pytest.fixture(scope="module")
def untrained():
    """An LSTM at its initial parameters: enough for contracts that hold for any weights."""
    lstm = VariationalLSTM(obs_dim=1, act_dim=1, hidden_sizes=(32,), lstm_size=32,
                           sequence_length=8)
    return lstm, lstm.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)))


@pytest.mark.heavy  # the fixture trains an LSTM and an MLP, ~20 s: .ci/run's second pytest
def test_lstm_uses_history_where_a_markov_model_cannot(fitted):
    lstm, params, history, mlp, mlp_params = fitted
    test = oscillator_buffer(20, 40, seed=1).as_dict()
    obs = test["obs"].reshape(20, 40, 1)
    act = test["act"].reshape(20, 40, 1)
    nxt = test["next_obs"].reshape(20, 40, 1)
    means, _ = lstm.predict_sequence_moments(params, jax.random.PRNGKey(0), obs, act,
                                             num_draws=4)
    lstm_err = float(jnp.sqrt(jnp.mean(jnp.square(means.mean(0)[:, 3:] - nxt[:, 3:]))))
    mlp_mean, _ = mlp.predict_moments(mlp_params, jax.random.PRNGKey(0),
                                      obs.reshape(-1, 1), act.reshape(-1, 1))
    mlp_err = float(jnp.sqrt(jnp.mean(jnp.square(
        mlp_mean.mean(0).reshape(20, 40, 1)[:, 3:] - nxt[:, 3:]))))
    assert lstm_err < 0.5 * mlp_err, (lstm_err, mlp_err)
    assert history["holdout_mse"][-1] < 0.5 * history["holdout_mse"][0]


def test_carry_rollout_matches_sequence_prediction(untrained):
    """Stepping with the carry reproduces the sequence forward pass (same draw, no noise)."""
    lstm, params = untrained
    test = oscillator_buffer(2, 12, seed=2).as_dict()
    obs, act = test["obs"].reshape(2, 12, 1), test["act"].reshape(2, 12, 1)
    key = jax.random.PRNGKey(7)
    means, _ = lstm.predict_sequence_moments(params, key, obs, act, num_draws=3)
    fns = lstm.sample_functions(params, key, 3)
    carry = lstm.initial_carry(params, fns, 2)
    step = jax.jit(lambda c, o, a: lstm.transition(params, fns, key, o, a, sample_noise=False,
                                                   carry=c))
    stepped = []
    for t in range(12):
        o = jnp.broadcast_to(obs[:, t], (3, 2, 1))
        a = jnp.broadcast_to(act[:, t], (3, 2, 1))
        out = step(carry, o, a)
        carry = out.carry
        stepped.append(out.next_obs)
    stepped = jnp.stack(stepped, axis=2)  # [k, m, T, d]
    np.testing.assert_allclose(stepped, means, rtol=1e-4, atol=1e-5)


def test_one_draw_is_one_function(untrained):
    lstm, params = untrained
    fns = lstm.sample_functions(params, jax.random.PRNGKey(0), 2)
    obs, act = jnp.full((2, 3, 1), 0.2), jnp.full((2, 3, 1), 0.1)
    a = lstm.transition(params, fns, jax.random.PRNGKey(1), obs, act, sample_noise=False)
    b = lstm.transition(params, fns, jax.random.PRNGKey(2), obs, act, sample_noise=False)
    np.testing.assert_array_equal(a.next_obs, b.next_obs)
    assert not np.allclose(a.next_obs[0], a.next_obs[1])  # different draws, different functions
    np.testing.assert_allclose(a.next_obs[0], a.next_obs[0, :1].repeat(3, 0), atol=1e-6)


def test_sequence_model_needs_episodes():
    lstm = VariationalLSTM(obs_dim=1, act_dim=1, hidden_sizes=(8,), lstm_size=4,
                           sequence_length=50)
    params = lstm.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)))
    with pytest.raises(ValueError, match="contiguous steps"):
        train(lstm, params, oscillator_buffer(2, 10, 0), jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="ReplayBuffer"):
        train(lstm, params, oscillator_buffer(2, 60, 0).as_dict(), jax.random.PRNGKey(0))


@pytest.mark.heavy  # shares the trained fixture (see above)
def test_mpc_plans_from_the_episode_history(fitted):
    """The MPC keeps the last ``sequence_length - 1`` real steps and starts its rollouts from the
    LSTM state they lead to: its one-step prediction then knows the hidden velocity."""
    lstm, params, _, _, _ = fitted
    mpc = MPC(lstm, CEM(population_size=8, num_elites=2, num_iterations=1),
              lambda s, a, s2: -s2[..., 0] ** 2, None, horizon=2, num_particles=4,
              propagation="mean", action_low=-1.0, action_high=1.0)
    assert mpc.history_length == lstm.sequence_length - 1 == 7
    rng = np.random.default_rng(3)
    test_act = jnp.full((1, 2, 1), 0.3)
    errors = {"history": [], "none": []}
    for episode in range(6):
        x, v = rng.uniform(-1, 1, size=2)
        state = mpc.reset(params, jax.random.PRNGKey(episode))
        seen = []
        for t in range(10):
            obs = np.array([x], np.float32)
            action, state = mpc.act(params, state, obs, jax.random.PRNGKey(100 + t))
            seen.append((x, float(action[0])))
            v = v + (-4.0 * x + float(action[0])) * DT
            x = x + v * DT
        history = state.history
        assert int(history.count) == 7
        np.testing.assert_allclose(history.obs[:, 0], [o for o, _ in seen[-7:]], rtol=1e-6)
        np.testing.assert_allclose(history.act[:, 0], [a for _, a in seen[-7:]], rtol=1e-6)
        true_next = x + (v + (-4.0 * x + 0.3) * DT) * DT
        for name, s in (("history", state), ("none", mpc.reset(params, jax.random.PRNGKey(0)))):
            out = mpc.evaluate(params, s, np.array([x], np.float32), test_act,
                               jax.random.PRNGKey(9), return_trajectory=True)
            errors[name].append(abs(float(out.trajectory[0, 0, 1, 0]) - true_next))
    assert np.mean(errors["history"]) < 0.5 * np.mean(errors["none"]), errors
    fresh = mpc.reset(params, jax.random.PRNGKey(0))
    assert int(fresh.history.count) == 0
    with pytest.raises(ValueError, match="history_length is for recurrent models"):
        MPC(ProbabilisticEnsemble(obs_dim=1, act_dim=1, ensemble_size=1), CEM(),
            lambda s, a, s2: s2[..., 0], None, horizon=2, action_low=-1, action_high=1,
            history_length=3)


def test_training_draws_score_each_step_by_the_mixture_of_the_draws():
    """With training_draws=m the data term is each step's NLL under the equal mixture of the m
    weight draws' predictive Gaussians (keys split(key, m)); m must be a positive integer."""
    from mbrl_bayes.models import gaussian_nll

    model = VariationalLSTM(obs_dim=1, act_dim=1, hidden_sizes=(8,), lstm_size=4,
                            sequence_length=3, training_draws=3)
    rng = np.random.default_rng(0)
    batch = {"obs": rng.normal(size=(4, 3, 1)).astype(np.float32),
             "act": rng.normal(size=(4, 3, 1)).astype(np.float32)}
    batch["next_obs"] = batch["obs"] + 0.1 * batch["act"]
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)))
    params = model.fit_stats(params, {k: v.reshape(-1, 1) for k, v in batch.items()})
    key = jax.random.PRNGKey(1)
    loss, aux = model.loss(params, key, batch)
    per_draw = []
    for k in jax.random.split(key, 3):
        mean, logvar, target, kl = model._sequence_prediction(model._train_net.apply, params, k,
                                                              batch)
        per_draw.append(np.asarray(gaussian_nll(mean, logvar, target), np.float64))  # [4, 3]
    mixture = -np.log(np.exp(-np.stack(per_draw)).mean(0)).mean()
    expected = mixture + float(kl) / float(params["stats"]["num_data"]) + float(
        model.logvar_penalty(params))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(aux["nll"]), mixture, rtol=1e-5)
    assert mixture < np.mean(per_draw)  # Jensen
    with pytest.raises(ValueError, match="training_draws must be a positive integer"):
        VariationalLSTM(obs_dim=1, act_dim=1, training_draws=1.5)
