"""Agents: a random agent, and model-based agents that plan through a learned posterior.

Every agent has the same small interface, used by the trial loop (``agents.run``):

* ``update(buffer, key) -> dict``: learn from the replay buffer (train the model);
* ``begin_episode(key)``: episode start (the Thompson agent draws its function here);
* ``act(obs, key) -> action``: ``obs`` [d] -> ``action`` [a] (numpy, within the action bounds);
* ``params``: what a checkpoint stores (``None`` for the random agent).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import jax
import numpy as np

from mbrl_bayes.models import train
from mbrl_bayes.planning import MPC


class RandomAgent:
    """Uniformly random actions within ``[action_low, action_high]``: seed data and baseline."""

    params = None

    def __init__(self, action_low: np.ndarray, action_high: np.ndarray):
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)

    def update(self, buffer: Any, key: jax.Array) -> Dict[str, float]:
        return {}

    def begin_episode(self, key: jax.Array) -> None:
        seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, key: Optional[jax.Array] = None) -> np.ndarray:
        if not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(0)
        return self._rng.uniform(self.action_low, self.action_high).astype(np.float32)


class ModelBasedAgent:
    """A dynamics model (any ``mbrl_bayes.models`` posterior) + MPC over it.

    Args:
        model: the dynamics model.
        mpc: an ``mbrl_bayes.planning.MPC`` built on ``model``.
        train_kwargs: keyword arguments of ``mbrl_bayes.models.train``.
    """

    def __init__(self, model: Any, mpc: MPC, train_kwargs: Optional[Dict[str, Any]] = None):
        self.model = model
        self.mpc = mpc
        self.train_kwargs = dict(train_kwargs or {})
        self.params = None
        self._state = None

    @property
    def propagation(self) -> str:
        return self.mpc.propagation

    def init_params(self, key: jax.Array) -> None:
        d, a = self.model.obs_dim, self.model.act_dim
        self.params = self.model.init(key, np.zeros((1, d), np.float32),
                                      np.zeros((1, a), np.float32))

    def update(self, buffer: Any, key: jax.Array) -> Dict[str, float]:
        """Trains the model on ``buffer`` (from its current params); returns the last epoch's
        ``train_loss``, the holdout ``holdout_mse``/``holdout_nll`` of the params it keeps (each
        member's best epoch), ``epochs`` and ``seconds``."""
        init_key, train_key = jax.random.split(key)
        if self.params is None:
            self.init_params(init_key)
        start = time.perf_counter()
        self.params, history = train(self.model, self.params, buffer, train_key,
                                     **self.train_kwargs)
        return {
            "train_loss": history["train_loss"][-1],
            "holdout_mse": history["final_holdout_mse"][0],
            "holdout_nll": history["final_holdout_nll"][0],
            "epochs": len(history["epoch"]),
            "seconds": time.perf_counter() - start,
        }

    def begin_episode(self, key: jax.Array) -> None:
        if self.params is None:
            raise RuntimeError("The agent has no model yet: call update(buffer, key) first.")
        self._state = self.mpc.reset(self.params, key)

    def act(self, obs: np.ndarray, key: jax.Array) -> np.ndarray:
        if self._state is None:
            raise RuntimeError("Call begin_episode(key) before act(obs, key).")
        action, self._state = self.mpc.act(self.params, self._state, np.asarray(obs, np.float32),
                                           key)
        return np.asarray(action)


class PETSAgent(ModelBasedAgent):
    """PETS (Chua et al. 2018): probabilistic ensemble + CEM + trajectory sampling (``ts_inf``
    by default; any optimizer and propagation can be configured)."""


class ThompsonAgent(ModelBasedAgent):
    """Posterior sampling: one function drawn from the model posterior at the start of each
    episode, planned against for the whole episode (``thompson`` propagation). Works with
    ensembles (a member) and variational models (a weight sample)."""

    def __init__(self, model: Any, mpc: MPC, train_kwargs: Optional[Dict[str, Any]] = None):
        if mpc.propagation != "thompson":
            raise ValueError(
                f"ThompsonAgent needs an MPC with propagation='thompson', got {mpc.propagation!r}."
            )
        super().__init__(model, mpc, train_kwargs)
