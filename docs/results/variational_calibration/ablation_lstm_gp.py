"""Ablation behind docs/results/variational_calibration (cartpole_swingup_noisy): the
variational LSTM's posterior init and training draws, and the GP's hyperparameter steps, in
experiments/calibration.py's protocol (15 training / 3 held-out episodes, 64x64x64, 50 epochs).

    PYTHONPATH=$PWD python docs/results/variational_calibration/ablation_lstm_gp.py \
        lstm TRAINING_DRAWS POSTERIOR_STDDEV_INIT SEED
    PYTHONPATH=$PWD python docs/results/variational_calibration/ablation_lstm_gp.py \
        gp HYPERPARAMETER_STEPS SEED      # a fixed number of steps, or `default`: to convergence

Prints the 90% coverage, calibration error, NLL, RMSE and the epistemic / aleatoric variance
(the GP's also from its analytic predictive, and per observation dimension against the truth).
"""
import argparse
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import noisy
from experiments import calibration
from mbrl_bayes import metrics
from mbrl_bayes.models import recurrent, train

ENV = "cartpole_swingup_noisy"
ARGS = argparse.Namespace(train_episodes=15, test_episodes=3, episode_length=None,
                          hidden_sizes=[64, 64, 64], sequence_length=10, batch_size=64,
                          max_epochs=50, patience=5, early_stopping="mse", horizon=1)


def lstm(draws: int, init: float, seed: int) -> None:
    original = recurrent.VariationalLSTM.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **dict(kwargs, training_draws=draws, posterior_stddev_init=init))

    recurrent.VariationalLSTM.__init__ = patched
    cell = calibration.evaluate_cell(ENV, "variational LSTM", seed, ARGS)
    print({k: round(cell[k], 5) for k in ("coverage90", "calibration_error", "nll", "rmse",
                                          "epistemic_var", "aleatoric_var")})


def gp(steps: str, seed: int) -> None:
    spec = envs.task(ENV)
    data = calibration.collect(ENV, 15, seed, spec.episode_length)
    test = calibration.collect(ENV, 3, 10_000 + seed, spec.episode_length).as_dict()
    config = dataclasses.replace(calibration.MODELS["GP"])
    model = calibration._model(config, spec, (64, 64, 64), 10)
    if steps != "default":
        model.hyperparameter_steps, model.hyperparameter_tolerance = int(steps), 0.0
    key = jax.random.PRNGKey(seed)
    params = model.init(key, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)))
    params, _ = train(model, params, data, jax.random.fold_in(key, 1), batch_size=64,
                      max_epochs=50, patience=5)
    y = test["next_obs"]
    pred = model.predict_moments(params, jax.random.fold_in(key, 2), test["obs"], test["act"])
    mean, var = model.predictive_moments(params, test["obs"], test["act"])
    _, true_var = noisy.next_obs_moments(ENV, test["obs"], test["act"])
    print({"coverage90 (draws)": float(metrics.coverage(pred, y, 0.9)),
           "coverage90 (analytic)": float(metrics.coverage((mean[None], var[None]), y, 0.9)),
           "rmse": float(metrics.rmse((mean[None], var[None]), y)),
           "epistemic_var": float(jnp.mean(metrics.epistemic_variance(pred))),
           "aleatoric_var": float(jnp.mean(metrics.aleatoric_variance(pred)))})
    print("variance per dimension: model", np.round(np.asarray(var.mean(0)), 5),
          "truth", np.round(np.asarray(true_var.mean(0)), 5))


if __name__ == "__main__":
    if sys.argv[1] == "lstm":
        lstm(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
    else:
        gp(sys.argv[2], int(sys.argv[3]))
