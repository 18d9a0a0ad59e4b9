"""Probabilistic ensembles (PETS, Chua et al. 2018): D, P, DE and PE in one class."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from mbrl_bayes.models.base import Batch, Functions, Params
from mbrl_bayes.models.checks import checks_num_draws
from mbrl_bayes.models.gaussian import GaussianDynamics


def init_stacked_mlp(key: jax.Array, num_members: int, sizes: Sequence[int]) -> list:
    """Stacked dense layers ``[{'w': [E, in, out], 'b': [E, out]}, ...]`` for ``sizes`` =
    (in, hidden..., out); weights ~ truncated normal with stddev 1 / (2 sqrt(in)) (as mbrl-lib)."""
    layers = []
    for fan_in, fan_out, k in zip(sizes[:-1], sizes[1:], jax.random.split(key, len(sizes) - 1)):
        std = 1.0 / (2.0 * math.sqrt(fan_in))
        w = std * jax.random.truncated_normal(k, -2.0, 2.0, (num_members, fan_in, fan_out))
        layers.append({"w": w, "b": jnp.zeros((num_members, fan_out), jnp.float32)})
    return layers


def apply_stacked_mlp(
    layers: list, x: jax.Array, activation: Callable[[jax.Array], jax.Array],
    split: Optional[int] = None,
) -> jax.Array | Tuple[jax.Array, jax.Array]:
    """Member ``i`` of the stacked MLP applied to rows ``x[i]``: [k, m, in] -> [k, m, out].

    Each layer is one batched matrix product over the member axis (a plain one when the layers
    hold a single member, ``E = 1``, shared by all ``k`` draws). With ``split`` the output layer
    is returned as two heads, outputs ``[:split]`` and ``[split:]``: one product for both (the
    activations are read once), with the bias halves added after the split (on XLA:CPU, adding
    the bias before slicing fuses into a loop it does not vectorize, ~3x slower).
    """
    def product(x, w):
        if w.shape[0] == 1:  # one weight set shared by every draw: a plain matrix product
            return jnp.einsum("kmi,io->kmo", x, w[0])
        return jnp.einsum("kmi,kio->kmo", x, w)

    def bias(b):  # [E, out] -> broadcastable to [k, m, out]
        return b[0] if b.shape[0] == 1 else b[:, None, :]

    for layer in layers[:-1]:
        x = activation(product(x, layer["w"]) + bias(layer["b"]))
    y, b = product(x, layers[-1]["w"]), bias(layers[-1]["b"])
    if split is None:
        return y + b
    return y[..., :split] + b[..., :split], y[..., split:] + b[..., split:]


class ProbabilisticEnsemble(GaussianDynamics):
    """An ensemble of MLPs predicting the next-state delta, trained jointly (stacked params).

    The four PETS variants:

    ==========  =================  ================
    variant     ``ensemble_size``  ``probabilistic``
    ==========  =================  ================
    D           1                  False
    P           1                  True
    DE          5                  False
    PE          5                  True
    ==========  =================  ================

    A function draw is a member: ``sample_functions`` gathers the weights of ``k`` members (the
    elites, tiled when ``k`` is a multiple of their count, else drawn uniformly with
    replacement), once, so ``transition`` is ``len(hidden_sizes) + 1`` batched matrix products.
    Members are trained on their own bootstrap of the data (see ``train``); after training the
    ``num_elites`` members with the lowest holdout error are used for planning.

    GPU planning kernels for this model live in :mod:`mbrl_bayes.kernels`
    (``KernelEnsemble``, a subclass); this class is plain XLA.
    """

    def __init__(
        self,
        *,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (200, 200, 200, 200),
        ensemble_size: int = 5,
        probabilistic: bool = True,
        num_elites: Optional[int] = None,
        learn_reward: bool = False,
        activation: str | Callable = "silu",
        max_logvar_init: float = 0.5,
        min_logvar_init: float = -10.0,
        logvar_bound_penalty: float = 0.01,
        ignored_obs_dims: Sequence[int] = (),
    ):
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=hidden_sizes,
            probabilistic=probabilistic, learn_reward=learn_reward, activation=activation,
            max_logvar_init=max_logvar_init, min_logvar_init=min_logvar_init,
            logvar_bound_penalty=logvar_bound_penalty, ignored_obs_dims=ignored_obs_dims,
        )
        if int(ensemble_size) < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}.")
        self.ensemble_size = int(ensemble_size)
        num_elites = self.ensemble_size if num_elites is None else int(num_elites)
        if not 1 <= num_elites <= self.ensemble_size:
            raise ValueError(
                f"num_elites must be in [1, ensemble_size={self.ensemble_size}], got {num_elites}."
            )
        self.num_elites = num_elites

    @property
    def num_functions(self) -> int:
        return self.num_elites

    @property
    def num_members(self) -> int:
        """Members trained jointly, each on its own bootstrap (``train`` reads this)."""
        return self.ensemble_size

    @property
    def variant(self) -> str:
        """'D', 'P', 'DE' or 'PE'."""
        return ("P" if self.probabilistic else "D") + ("E" if self.ensemble_size > 1 else "")

    def _init_net(self, key: jax.Array, x: jax.Array) -> list:
        sizes = (self.in_dim,) + self.hidden_sizes + (self.out_size,)
        return init_stacked_mlp(key, self.ensemble_size, sizes)

    def _init_stats(self) -> dict:
        stats = super()._init_stats()
        stats["elites"] = jnp.arange(self.num_elites, dtype=jnp.int32)
        return stats

    def _apply_net(self, net: list, fns: Functions, key: jax.Array, x: jax.Array) -> jax.Array:
        del net, key  # the draws carry their own (gathered) weights
        split = self.target_dim if self.probabilistic else None
        return apply_stacked_mlp(fns["layers"], x, self.activation, split=split)

    @checks_num_draws
    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        """Weights of ``k`` members, ``{'layers': [{'w': [k, in, out], 'b': [k, out]}, ...],
        'member': [k]}``: the elites tiled if ``k`` is a multiple of ``num_elites``, else ``k``
        elites drawn uniformly with replacement from ``key``."""
        elites = params["stats"]["elites"]
        if k % self.num_elites == 0:
            members = jnp.tile(elites, k // self.num_elites)
        else:
            members = elites[jax.random.randint(key, (k,), 0, self.num_elites)]
        layers = jax.tree_util.tree_map(lambda w: w[members], params["net"])
        return {"layers": layers, "member": members}

    def all_members(self, params: Params) -> Functions:
        """Every member, in order: the draws used for training and elite selection."""
        members = jnp.arange(self.ensemble_size)
        return {"layers": params["net"], "member": members}

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> Tuple[jax.Array, dict]:
        """The PETS objective (``GaussianDynamics._pets_objective``): each member's mean NLL on
        its own rows (unit variance when deterministic), summed over members, scaled by
        ``2 / target_dim``, plus the log-variance bound penalty.

        ``batch`` arrays are [E, B, ...] (one bootstrap batch per member) or [B, ...] (shared).
        Metrics ``nll`` (of the predictive Gaussian, nats per transition) and ``mse`` are means
        over members, in standardized target units; ``member_mse`` is [E].
        """
        obs, act, target = self.standardized_targets(params, batch)
        if obs.ndim == 2:
            obs, act, target = (
                jnp.broadcast_to(a, (self.ensemble_size,) + a.shape) for a in (obs, act, target)
            )
        mean, logvar = self._standardized_prediction(
            params, self.all_members(params), key, obs, act
        )
        loss = self._pets_objective(params, self._training_nll(mean, logvar, target).mean(-1))
        mse = jnp.square(mean - target).mean(axis=(-2, -1))
        nll = self._predictive_nll(mean, logvar, target).mean()
        return loss, {"nll": nll, "mse": mse.mean(), "member_mse": mse}

    def eval_functions(self, params: Params, key: jax.Array) -> Functions:
        return self.all_members(params)

    def with_elites(self, params: Params, scores: jax.Array) -> Params:
        """Params whose elites are the ``num_elites`` members with the lowest ``scores`` [E]."""
        elites = jnp.argsort(scores)[: self.num_elites].astype(jnp.int32)
        return {**params, "stats": {**params["stats"], "elites": jnp.sort(elites)}}
