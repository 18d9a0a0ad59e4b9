"""MC-dropout dynamics (Gal & Ghahramani 2016): a cheap approximate posterior over functions."""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import jax
import jax.numpy as jnp

from mbrl_bayes.models.base import Batch, Functions, Params
from mbrl_bayes.models.checks import checks_num_draws
from mbrl_bayes.models.ensemble import apply_stacked_mlp, init_stacked_mlp
from mbrl_bayes.models.gaussian import GaussianDynamics


class MCDropoutMLP(GaussianDynamics):
    """One MLP with dropout after every hidden layer, kept on at prediction time.

    A function draw is one dropout mask per hidden layer, shared by all rows the draw is applied
    to (so a draw is a fixed function, not fresh noise per particle); ``sample_functions`` returns
    ``{'masks': [[k, 1, hidden], ...]}`` already scaled by ``1 / (1 - dropout_rate)``. Training
    uses independent masks per row, as usual.
    """

    num_functions = None  # unlimited draws
    num_members = 1

    def __init__(
        self,
        *,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (200, 200, 200, 200),
        dropout_rate: float = 0.1,
        probabilistic: bool = True,
        learn_reward: bool = False,
        activation: str | Callable = "silu",
        num_eval_draws: int = 8,
        **kwargs,
    ):
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=hidden_sizes,
            probabilistic=probabilistic, learn_reward=learn_reward, activation=activation,
            **kwargs,
        )
        if not 0.0 < float(dropout_rate) < 1.0:
            raise ValueError(f"dropout_rate must be in (0, 1), got {dropout_rate}.")
        self.dropout_rate = float(dropout_rate)
        self.num_eval_draws = int(num_eval_draws)

    def _init_net(self, key: jax.Array, x: jax.Array) -> list:
        sizes = (self.in_dim,) + self.hidden_sizes + (self.out_size,)
        return init_stacked_mlp(key, 1, sizes)

    def _masks(self, key: jax.Array, k: int, rows: int) -> list:
        keep = 1.0 - self.dropout_rate
        keys = jax.random.split(key, len(self.hidden_sizes))
        return [
            jax.random.bernoulli(kk, keep, (k, rows, h)).astype(jnp.float32) / keep
            for kk, h in zip(keys, self.hidden_sizes)
        ]

    def _apply_net(self, net: list, fns: Functions, key: jax.Array, x: jax.Array) -> jax.Array:
        del key
        split = self.target_dim if self.probabilistic else None
        return apply_stacked_mlp(net, x, self.activation, masks=fns["masks"], split=split)

    @checks_num_draws
    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        return {"masks": self._masks(key, k, 1)}

    def eval_functions(self, params: Params, key: jax.Array) -> Functions:
        return self.sample_functions(params, key, self.num_eval_draws)

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> Tuple[jax.Array, dict]:
        """The PETS objective of one member (``GaussianDynamics._pets_objective``) with
        independent dropout masks per row. ``batch`` arrays are [B, ...]. Metrics ``nll`` (nats
        per transition) and ``mse``, in standardized target units."""
        obs, act, target = self.standardized_targets(params, batch)
        fns = {"masks": self._masks(key, 1, obs.shape[0])}
        mean, logvar = self._standardized_prediction(
            params, fns, key, obs[None], act[None]
        )
        loss = self._pets_objective(params, self._training_nll(mean, logvar, target).mean(-1))
        nll = self._predictive_nll(mean, logvar, target).mean()
        return loss, {"nll": nll, "mse": jnp.square(mean - target).mean()}
