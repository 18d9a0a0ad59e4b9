"""One-step model quality of GaussianProcessDynamics without the collapsed-bound hyperparameter
fit in fit_stats, with a fixed 200 steps of it (the former default), and with the default fit
run to convergence, after one 200-step random episode and the presets' training settings. Run
from the repository root: ``python docs/results/gp_model_quality/run.py ENV``."""

import sys
import time

import jax
import numpy as np

import envs
from agents import RandomAgent, run_episode
from mbrl_bayes import models
from mbrl_bayes.data import ReplayBuffer

env_name = sys.argv[1]
spec = envs.task(env_name)
env = envs.make(env_name)


def collect(seed, n):
    buf = ReplayBuffer(n, spec.obs_dim, spec.act_dim)
    run_episode(env, RandomAgent(spec.action_low, spec.action_high), jax.random.PRNGKey(seed),
                seed, n, buf)
    return buf


train_buf, test_buf = collect(0, 200), collect(1, 200)
test = {k: np.asarray(v) for k, v in test_buf.as_dict().items()}
SETTINGS = {"0": dict(hyperparameter_steps=0),
            "200": dict(hyperparameter_steps=200, hyperparameter_tolerance=0.0),
            "converged (default)": {}}
for label, kwargs in SETTINGS.items():
    start = time.time()
    model = models.GaussianProcessDynamics(obs_dim=spec.obs_dim, act_dim=spec.act_dim,
                                           **kwargs)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, spec.obs_dim), np.float32),
                        np.zeros((1, spec.act_dim), np.float32))
    params, history = models.train(model, params, train_buf, jax.random.PRNGKey(1),
                                   batch_size=32, max_epochs=50, patience=5)
    other = model.evaluate(params, jax.random.PRNGKey(2), test)
    print(f"| {env_name} | {label} | {len(history['epoch'])} | "
          f"{history['final_holdout_mse'][0]:.4g} | {float(other['mse']):.4g} | "
          f"{time.time() - start:.0f} |", flush=True)
