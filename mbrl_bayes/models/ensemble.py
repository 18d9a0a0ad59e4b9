"""Probabilistic ensembles (PETS, Chua et al. 2018): D, P, DE and PE in one class."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from mbrl_bayes import sampling
from mbrl_bayes.models.base import Batch, Functions, Params
from mbrl_bayes.models.fused_mlp import FusedMLPConfig, fused_stacked_mlp, pack_stacked_mlp
from mbrl_bayes.models.fused_rollout import fused_rollout, pack_rollout
from mbrl_bayes.models.gaussian import GaussianDynamics
from mbrl_bayes.models.mosaic_rollout import mosaic_rollout


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
    masks: Optional[list] = None, split: Optional[int] = None,
) -> jax.Array | Tuple[jax.Array, jax.Array]:
    """Member ``i`` of the stacked MLP applied to rows ``x[i]``: [k, m, in] -> [k, m, out].

    Each layer is one batched matrix product over the member axis (a plain one when the layers
    hold a single member, ``E = 1``, shared by all ``k`` draws). With ``split`` the output layer
    is returned as two heads, outputs ``[:split]`` and ``[split:]``: one product for both (the
    activations are read once), with the bias halves added after the split (on XLA:CPU, adding
    the bias before slicing fuses into a loop it does not vectorize, ~3x slower).
    ``masks`` (optional, one [k, 1 or m, hidden] multiplier per hidden layer) implements
    dropout.
    """
    def product(x, w):
        if w.shape[0] == 1:  # one weight set shared by every draw: a plain matrix product
            return jnp.einsum("kmi,io->kmo", x, w[0])
        return jnp.einsum("kmi,kio->kmo", x, w)

    def bias(b):  # [E, out] -> broadcastable to [k, m, out]
        return b[0] if b.shape[0] == 1 else b[:, None, :]

    for i, layer in enumerate(layers[:-1]):
        x = activation(product(x, layer["w"]) + bias(layer["b"]))
        if masks is not None:
            x = x * masks[i]
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

    With ``fused_mlp`` (a :class:`~mbrl_bayes.models.fused_mlp.FusedMLPConfig`), the draws of
    ``sample_functions`` carry zero-padded weights and ``transition`` runs the whole network as
    one Pallas/Triton kernel (GPUs; ``interpret=True`` on CPUs). With
    ``FusedMLPConfig(whole_horizon=True)`` the draws carry the weights packed for
    :func:`~mbrl_bayes.models.fused_rollout.fused_rollout` instead, and ``rollout_states`` runs a
    fixed-assignment planning horizon as one kernel launch (``transition`` then uses XLA's
    products; ``backend="mosaic"``: :func:`~mbrl_bayes.models.mosaic_rollout.mosaic_rollout`
    on Pallas' Mosaic GPU backend). Training and ``evaluate`` use the plain products either way
    (the kernels have no gradient).
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
        fused_mlp: Optional[FusedMLPConfig] = None,
    ):
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=hidden_sizes,
            probabilistic=probabilistic, learn_reward=learn_reward, activation=activation,
            max_logvar_init=max_logvar_init, min_logvar_init=min_logvar_init,
            logvar_bound_penalty=logvar_bound_penalty,
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
        if fused_mlp is not None and not isinstance(fused_mlp, FusedMLPConfig):
            raise TypeError(f"fused_mlp must be a FusedMLPConfig or None, got {fused_mlp!r}.")
        self.fused_mlp = fused_mlp

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
        if "packed" in fns:
            out = fused_stacked_mlp(fns["packed"], x, self.activation, self.out_size,
                                    self.fused_mlp)
            return out if split is None else (out[..., :split], out[..., split:])
        return apply_stacked_mlp(fns["layers"], x, self.activation, split=split)

    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        """Weights of ``k`` members, ``{'layers': [{'w': [k, in, out], 'b': [k, out]}, ...],
        'member': [k]}``: the elites tiled if ``k`` is a multiple of ``num_elites``, else ``k``
        elites drawn uniformly with replacement from ``key``. With ``fused_mlp`` the weights
        are packed for the kernel instead: ``{'packed': PackedMLP, 'member': [k]}``."""
        elites = params["stats"]["elites"]
        if k % self.num_elites == 0:
            members = jnp.tile(elites, k // self.num_elites)
        else:
            members = elites[jax.random.randint(key, (k,), 0, self.num_elites)]
        layers = jax.tree_util.tree_map(lambda w: w[members], params["net"])
        if self.has_rollout_kernel:
            packed = pack_rollout(layers, params["stats"], params.get("logvar_bounds"),
                                  self.obs_dim, self.fused_mlp)
            return {"layers": layers, "rollout": packed, "member": members}
        if self.fused_mlp is not None:
            return {"packed": pack_stacked_mlp(layers, self.fused_mlp), "member": members}
        return {"layers": layers, "member": members}

    @property
    def has_rollout_kernel(self) -> bool:
        """Whether ``rollout_states`` runs (``FusedMLPConfig(whole_horizon=True)``)."""
        return self.fused_mlp is not None and self.fused_mlp.whole_horizon

    def rollout_states(
        self, params: Params, fns: Functions, keys: jax.Array, obs: jax.Array, act: jax.Array
    ) -> Tuple[jax.Array, Optional[jax.Array]]:
        """Draw ``i`` rolled out from ``obs[i]`` [k, m, d] under ``act[i]`` [k, H, m, a], all
        ``H`` steps in one kernel launch (``has_rollout_kernel`` models only).

        ``keys`` [H] are the per-step keys: step ``h`` samples exactly the aleatoric noise that
        ``transition(params, fns, keys[h], ...)`` would. Returns ``next_obs`` [k, H, m, d] and the
        learned ``reward`` [k, H, m] (None without a reward head).
        """
        if not self.has_rollout_kernel or "rollout" not in fns:
            raise ValueError("rollout_states needs FusedMLPConfig(whole_horizon=True) and draws "
                             "from this model's sample_functions.")
        k, _, m = act.shape[:3]
        noise = None
        if self.probabilistic:
            def step_noise(key):  # as ``transition``: its second split drives the noise
                return sampling.normal(jax.random.split(key)[1], (k, m, self.target_dim))

            noise = jnp.swapaxes(jax.vmap(step_noise)(keys), 0, 1)  # [k, H, m, t]
        kernel = mosaic_rollout if self.fused_mlp.backend == "mosaic" else fused_rollout
        out = kernel(fns["rollout"], obs, act, noise, self.activation, self.fused_mlp)
        reward = out[..., self.obs_dim] if self.learns_reward else None
        return out[..., : self.obs_dim], reward

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
