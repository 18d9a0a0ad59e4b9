"""One-step model quality of GaussianProcessDynamics with and without the collapsed-bound
hyperparameter fit in fit_stats, after one 200-step random episode and the presets' training
settings. Run from the repository root: ``python docs/results/gp_model_quality/run.py ENV``."""

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
for steps in (0, 200):
    start = time.time()
    model = models.GaussianProcessDynamics(obs_dim=spec.obs_dim, act_dim=spec.act_dim,
                                           hyperparameter_steps=steps)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, spec.obs_dim), np.float32),
                        np.zeros((1, spec.act_dim), np.float32))
    params, history = models.train(model, params, train_buf, jax.random.PRNGKey(1),
                                   batch_size=32, max_epochs=50, patience=5)
    other = model.evaluate(params, jax.random.PRNGKey(2), test)
    print(f"| {env_name} | {steps} | {len(history['epoch'])} | "
          f"{history['final_holdout_mse'][0]:.4g} | {float(other['mse']):.4g} | "
          f"{time.time() - start:.0f} |", flush=True)
