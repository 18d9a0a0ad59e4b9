"""Fakes and data shared by the test files: toy posteriors whose functions can be told apart and
the exact Pendulum-v1 dynamics. Each is served by a session fixture (the class or function
itself), so a test asks for it by name."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.models.base import Transition

# A run config small enough for CLI and config tests (seconds): pendulum, a 2-member PE, CEM.
TINY_RUN = {
    "env": "pendulum", "agent": "pets", "seed": 0, "trials": 1, "seed_steps": 20,
    "episode_length": 12,
    "model": {"name": "pe", "hidden_sizes": [16], "ensemble_size": 2},
    "train": {"batch_size": 16, "max_epochs": 2, "patience": 2},
    "planner": {"optimizer": "cem", "horizon": 4, "population": 16, "elites": 4,
                "iterations": 2, "num_particles": 4},
}


def pytest_configure(config):
    """Compile the tests' XLA:CPU code at LLVM optimization level 0 (backend codegen only: the
    HLO, and so what every computation computes, is unchanged), except when the learning bars
    (``-m slow``) are selected. On 2 cores the runs are compile-bound: level 0 takes about 40%
    off the CPU time of test_cli.py and test_agents.py (72 -> 40 s). A user's own
    ``--xla_backend_optimization_level`` in ``XLA_FLAGS`` is kept."""
    selects_slow = re.search(r"(?<!not )\bslow\b", config.getoption("markexpr") or "")
    flags = os.environ.get("XLA_FLAGS", "")
    if not selects_slow and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


# ----------------------------------------------------------------------------- Pendulum-v1
PENDULUM_DT, PENDULUM_MAX_SPEED, PENDULUM_MAX_TORQUE = 0.05, 8.0, 2.0


def pendulum_step(obs, act, g=10.0):
    """Exact Pendulum-v1 dynamics: next obs [..., 3] of obs (cos th, sin th, thdot) [..., 3] and
    torque ``act`` [..., 1] (jnp, so it traces with ``g`` as a parameter)."""
    th = jnp.arctan2(obs[..., 1], obs[..., 0])
    u = jnp.clip(act[..., 0], -PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    thdot = obs[..., 2] + (3.0 * g / 2.0 * jnp.sin(th) + 3.0 * u) * PENDULUM_DT
    thdot = jnp.clip(thdot, -PENDULUM_MAX_SPEED, PENDULUM_MAX_SPEED)
    th = th + thdot * PENDULUM_DT
    return jnp.stack([jnp.cos(th), jnp.sin(th), thdot], -1)


def pendulum_data(n, seed):
    """``n`` transitions of Pendulum-v1 from uniform states and torques: a dict of float32
    arrays ``obs`` [n, 3], ``act`` [n, 1], ``next_obs`` [n, 3], ``reward`` [n] (zeros)."""
    rng = np.random.default_rng(seed)
    th = rng.uniform(-np.pi, np.pi, n)
    thdot = rng.uniform(-8, 8, n)
    obs = np.stack([np.cos(th), np.sin(th), thdot], -1).astype(np.float32)
    act = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
    return {"obs": obs, "act": act, "next_obs": np.array(pendulum_step(obs, act), np.float32),
            "reward": np.zeros(n, np.float32)}


@pytest.fixture(scope="session", name="pendulum_step")
def _pendulum_step():
    return pendulum_step


@pytest.fixture(scope="session", name="pendulum_data")
def _pendulum_data():
    return pendulum_data


# ----------------------------------------------------------------------------- toy posteriors
class PendulumModel:
    """The true Pendulum-v1 dynamics as a one-function, noiseless "posterior" (params: {'g'})."""

    obs_dim, act_dim = 3, 1
    num_functions = 1
    learns_reward = False
    rollout_states = None  # steps `transition` (no whole-horizon rollout)

    def init(self, key, obs, act):
        return {"g": jnp.asarray(10.0, jnp.float32)}

    def sample_functions(self, params, key, k):
        return {"id": jnp.zeros((k,))}

    def transition(self, params, fns, key, obs, act, sample_noise=True):
        return Transition(pendulum_step(obs, act, params["g"]), None)

    def step(self, params, fns, key, obs, act):
        return self.transition(params, fns, key, obs, act).next_obs


class ShiftModel:
    """Function ``i`` maps ``s -> s + a + i`` (plus N(0, noise^2) aleatoric noise when sampled).

    With ``learns_reward`` its learned reward is ``i``, so returns and trajectories reveal which
    function a particle used.
    """

    obs_dim = 1
    act_dim = 1
    rollout_states = None  # steps `transition` (no whole-horizon rollout)

    def __init__(self, num_functions=3, noise=0.0, learns_reward=True):
        self.num_functions = num_functions
        self.noise = noise
        self.learns_reward = learns_reward

    def init(self, key, obs, act):
        return {}

    def sample_functions(self, params, key, k):
        if k % self.num_functions == 0:
            idx = jnp.tile(jnp.arange(self.num_functions), k // self.num_functions)
        else:
            idx = jax.random.randint(key, (k,), 0, self.num_functions)
        return {"shift": idx.astype(jnp.float32)}

    def transition(self, params, fns, key, obs, act, sample_noise=True):
        shift = fns["shift"][:, None, None]
        next_obs = obs + act + shift
        if sample_noise and self.noise:
            next_obs = next_obs + self.noise * jax.random.normal(key, next_obs.shape)
        reward = jnp.broadcast_to(shift[..., 0], obs.shape[:-1]) if self.learns_reward else None
        return Transition(next_obs, reward)

    def step(self, params, fns, key, obs, act):
        return self.transition(params, fns, key, obs, act).next_obs


@pytest.fixture(scope="session", name="pendulum_model")
def _pendulum_model():
    """The ``PendulumModel`` class."""
    return PendulumModel


@pytest.fixture(scope="session", name="shift_model")
def _shift_model():
    """The ``ShiftModel`` class: ``shift_model(num_functions=3, noise=0.0, learns_reward=True)``."""
    return ShiftModel
