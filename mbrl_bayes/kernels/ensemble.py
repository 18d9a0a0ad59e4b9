"""``KernelEnsemble``: a ``ProbabilisticEnsemble`` that plans through Pallas GPU kernels."""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mbrl_bayes import sampling
from mbrl_bayes.kernels.config import KernelConfig
from mbrl_bayes.kernels.fused_mlp import fused_stacked_mlp, pack_stacked_mlp
from mbrl_bayes.kernels.fused_rollout import fused_rollout, pack_rollout
from mbrl_bayes.kernels.mosaic_rollout import mosaic_rollout
from mbrl_bayes.models.base import Functions, Params
from mbrl_bayes.models.ensemble import ProbabilisticEnsemble
from mbrl_bayes.models.normalization import Normalizer


class KernelEnsemble(ProbabilisticEnsemble):
    """A :class:`~mbrl_bayes.models.ProbabilisticEnsemble` whose planning runs in GPU kernels.

    The same model (same params, training, ``evaluate``: the kernels have no gradient, so
    training keeps XLA's products); only planning differs:

    - ``rollout_states`` (the ``DynamicsModel`` hook) runs a whole planning horizon in one
      kernel launch for the propagation modes where each particle keeps its draw (``ts_inf``,
      ``thompson``, ``optimistic``): :func:`~mbrl_bayes.kernels.fused_rollout.fused_rollout`
      (``backend="triton"``) or :func:`~mbrl_bayes.kernels.mosaic_rollout.mosaic_rollout`
      (``backend="mosaic"``);
    - ``transition``, which the planner steps for ``ts1`` and ``mean``, runs each step's network
      as one kernel (:func:`~mbrl_bayes.kernels.fused_mlp.fused_stacked_mlp`) with
      ``backend="triton"``, and XLA's products with ``backend="mosaic"``.

    ``sample_functions`` packs the drawn members' weights for the kernels once per plan
    (``{'layers', 'member', 'rollout'[, 'packed']}``). Takes ``ProbabilisticEnsemble``'s
    arguments plus ``kernel`` (a :class:`KernelConfig`, default ``KernelConfig()``;
    ``interpret=True`` runs the kernels in Pallas' interpreter, which is how they are tested on
    CPUs).
    """

    def __init__(self, *, kernel: Optional[KernelConfig] = None, **kwargs):
        kernel = KernelConfig() if kernel is None else kernel
        if not isinstance(kernel, KernelConfig):
            raise TypeError(f"kernel must be a KernelConfig, got {kernel!r}.")
        super().__init__(**kwargs)
        self.kernel = kernel

    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        """``ProbabilisticEnsemble.sample_functions``' draws plus their weights packed for the
        whole-horizon kernel (``'rollout'``) and, with ``backend="triton"``, for the per-step
        network kernel (``'packed'``)."""
        fns = super().sample_functions(params, key, k)
        layers, stats = self._whole_state_inputs(fns["layers"], params["stats"])
        fns["rollout"] = pack_rollout(layers, stats, params.get("logvar_bounds"), self.obs_dim,
                                      self.kernel)
        if self.kernel.backend == "triton":
            fns["packed"] = pack_stacked_mlp(fns["layers"], self.kernel)
        return fns

    def _whole_state_inputs(self, layers: list, stats: dict) -> Tuple[list, dict]:
        """``layers`` and ``stats`` over the whole ``[obs, act]`` (the rollout kernel reads the
        whole state): zero first-layer rows and an identity standardization at the
        ``ignored_obs_dims``, so the network computes the same function of what it sees."""
        if not self.ignored_obs_dims:
            return layers, stats
        size = self.obs_dim + self.act_dim
        seen = np.asarray([i for i in range(size) if i not in self.ignored_obs_dims])
        first, inputs = layers[0], stats["input"]
        w = jnp.zeros(first["w"].shape[:1] + (size,) + first["w"].shape[2:], first["w"].dtype)
        mean = jnp.zeros((size,), inputs.mean.dtype).at[seen].set(inputs.mean)
        std = jnp.ones((size,), inputs.std.dtype).at[seen].set(inputs.std)
        return ([{**first, "w": w.at[:, seen].set(first["w"])}, *layers[1:]],
                {**stats, "input": Normalizer(mean, std)})

    def _apply_net(self, net: list, fns: Functions, key: jax.Array, x: jax.Array):
        if "packed" not in fns:  # training and evaluation (all members), or Mosaic GPU
            return super()._apply_net(net, fns, key, x)
        out = fused_stacked_mlp(fns["packed"], x, self.activation, self.out_size, self.kernel)
        if not self.probabilistic:
            return out
        return out[..., : self.target_dim], out[..., self.target_dim :]

    def rollout_states(
        self, params: Params, fns: Functions, keys: jax.Array, obs: jax.Array, act: jax.Array
    ) -> Tuple[jax.Array, Optional[jax.Array]]:
        """Draw ``i`` rolled out from ``obs[i]`` [k, m, d] under ``act[i]`` [k, H, m, a], all
        ``H`` steps in one kernel launch (see ``DynamicsModel.rollout_states``).

        ``keys`` [H] are the per-step keys: step ``h`` samples exactly the aleatoric noise that
        ``transition(params, fns, keys[h], ...)`` would. Returns ``next_obs`` [k, H, m, d] and the
        learned ``reward`` [k, H, m] (None without a reward head).
        """
        if "rollout" not in fns:
            raise ValueError("rollout_states needs draws from this model's sample_functions "
                             "(packed for the kernel).")
        k, _, m = act.shape[:3]
        noise = None
        if self.probabilistic:
            def step_noise(key):  # as ``transition``: its second split drives the noise
                return sampling.normal(jax.random.split(key)[1], (k, m, self.target_dim))

            noise = jnp.swapaxes(jax.vmap(step_noise)(keys), 0, 1)  # [k, H, m, t]
        kernel = mosaic_rollout if self.kernel.backend == "mosaic" else fused_rollout
        out = kernel(fns["rollout"], obs, act, noise, self.activation, self.kernel)
        reward = out[..., self.obs_dim] if self.learns_reward else None
        return out[..., : self.obs_dim], reward
