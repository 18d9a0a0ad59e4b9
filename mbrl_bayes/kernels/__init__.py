"""Pallas GPU kernels for planning, opt-in: nothing else in ``mbrl_bayes`` imports this package.

A model offers a kernel to the planner through the ``rollout_states`` hook of the
``DynamicsModel`` contract (:mod:`mbrl_bayes.models.base`); :class:`KernelEnsemble` is the
``ProbabilisticEnsemble`` that does, configured by a :class:`KernelConfig`::

    from mbrl_bayes.kernels import KernelConfig, KernelEnsemble
    model = KernelEnsemble(obs_dim=18, act_dim=6, kernel=KernelConfig(backend="mosaic"))

One kernel per backend and job:

=====================================  =================  ====================================
kernel                                 backend            serves
=====================================  =================  ====================================
``fused_rollout.fused_rollout``        Triton (any CUDA)  whole horizon: ts_inf, thompson,
                                                          optimistic
``mosaic_rollout.mosaic_rollout``      Mosaic GPU         the same, Hopper and later
                                       (sm_90+)
``fused_mlp.fused_stacked_mlp``        Triton             one step's network: ts1, mean
=====================================  =================  ====================================

Each computes a step with the functions of :mod:`mbrl_bayes.models.transition_math`, as the
XLA path does. Pallas itself is imported only when a kernel is traced.
"""

from mbrl_bayes.kernels.config import BACKENDS, KernelConfig
from mbrl_bayes.kernels.ensemble import KernelEnsemble

__all__ = ["BACKENDS", "KernelConfig", "KernelEnsemble"]
