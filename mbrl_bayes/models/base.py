"""The contract every dynamics model satisfies: a posterior over transition functions.

Shapes use ``k`` for function draws, ``m`` for rows (particles) per draw, ``d`` = obs_dim and
``a`` = act_dim. Function axis first: ``model.step`` applies draw ``i`` to ``obs[i]`` (``m`` rows)
as one matrix product; weights are never materialized per particle.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Protocol, Tuple, runtime_checkable

import distrax
import jax

Params = Any  # a pytree of arrays
Functions = Any  # a pytree whose leaves have leading axis k (one entry per function draw)
Batch = Mapping[str, jax.Array]  # keys: obs [n, d], act [n, a], next_obs [n, d], reward [n]
# (params, fns, keys [H], obs [k, m, d], act [k, H, m, a]) -> (next_obs [k, H, m, d],
# reward [k, H, m] or None): see ``DynamicsModel.rollout_states``.
RolloutStates = Callable[..., Tuple[jax.Array, Optional[jax.Array]]]


class Transition(NamedTuple):
    """One model step: ``next_obs`` [k, m, d], ``reward`` [k, m] (``None`` without a reward head)
    and, for recurrent models, the ``carry`` (per-row history state) after the step."""

    next_obs: jax.Array
    reward: Optional[jax.Array]
    carry: Any = None


@runtime_checkable
class DynamicsModel(Protocol):
    """A posterior over transition functions ``s' = f(s, a) + noise``.

    Attributes:
        obs_dim: observation size ``d``.
        act_dim: action size ``a``.
        num_functions: number of distinct function draws (ensemble members, or the elites among
            them), or ``None`` when draws are unlimited (weight samples of a variational network).
        learns_reward: whether ``transition`` returns a learned reward.
        rollout_states: ``None`` (every built-in model), or a whole-horizon rollout that the
            planner calls instead of stepping ``transition`` under ``lax.scan`` when each
            particle keeps its function draw for the whole horizon (propagation ``ts_inf``,
            ``thompson``, ``optimistic``):
            ``rollout_states(params, fns, keys, obs, act) -> (next_obs, reward)`` rolls draw
            ``i`` out from ``obs[i]`` [k, m, d] under ``act[i]`` [k, H, m, a] and returns the
            state after each step, ``next_obs`` [k, H, m, d], and the learned reward
            [k, H, m] (``None`` without a reward head). ``keys`` [H] are the per-step keys:
            step ``h`` must draw the aleatoric noise that ``transition(params, fns, keys[h],
            ...)`` would, so both routes plan alike. Rewards and terminations never feed back
            into the dynamics, so the planner computes them for all steps afterwards. This is
            how a GPU kernel plugs in (``mbrl_bayes.kernels.KernelEnsemble``); recurrent
            models keep ``None``.

    Recurrent (history-conditioned) models also take and return a ``carry`` in ``transition``
    and provide ``initial_carry(params, fns, m)``; see ``VariationalLSTM``.

    ``isinstance(model, DynamicsModel)`` looks for the attributes and methods below by name
    only; ``models.check_model(model, key)`` lists, one line each, whatever a model lacks of
    the whole contract, including what its consumers read beyond these methods:

    * ``models.train``: ``params`` is a dict whose ``'stats'`` entry is never trained (the rest
      is, by optax); ``fit_stats(params, data) -> params`` refits ``'stats'`` on the training
      set (``data``: numpy ``obs``, ``act``, ``next_obs``, ``reward``, [n, ...]);
      ``loss(...)[1]`` holds ``'mse'`` (logged per epoch);
      ``evaluate(params, key, batch) -> dict`` with ``'score'`` and ``'nll_score'`` ([members]
      or [1], lower is better: early stopping and elite choice) and scalars ``'mse'``,
      ``'nll'``. Optional: ``num_members`` (default 1; > 1 trains each member on its own
      bootstrap, ``batch`` leaves then [members, B, ...]) with ``with_elites(params, scores)``;
      ``sequence_length`` (train on windows [B, L, ...] within episodes; needs a
      ``ReplayBuffer``).
    * ``planning.MPC`` / ``planning.rollout``: ``obs_dim``, ``act_dim``, ``learns_reward``
      (without it MPC needs a ``reward_fn``), ``num_functions`` (draws per action),
      ``sample_functions`` (inside ``jit``: ``k`` is a static int) and ``transition`` (inside
      ``jit``, ``vmap`` and ``lax.scan``: pure, shapes static); recurrent models:
      ``initial_carry`` and ``transition(..., carry=...)``.
    * the calibration metrics (``agents`` log them each trial): ``predict`` returns a distrax
      distribution with batch shape [n] and event shape [d]: a ``MixtureSameFamily`` with a
      ``Categorical`` over ``k`` draws and diagonal-Gaussian components, or one diagonal
      Gaussian (``metrics.from_mixture`` reads their means and variances).

    Entry points check shapes at trace time (``models.checks``): a wrong shape is one
    ``ValueError`` line stating the shapes expected, never an error from inside JAX.
    """

    obs_dim: int
    act_dim: int
    num_functions: Optional[int]
    learns_reward: bool
    rollout_states: Optional[RolloutStates]

    def init(self, key: jax.Array, obs: jax.Array, act: jax.Array) -> Params:
        """Initial parameters from example ``obs`` [n, d] and ``act`` [n, a]."""

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> Tuple[jax.Array, dict]:
        """Scalar training loss (NLL, plus KL / N for variational models) and a dict of metrics."""

    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        """``k`` draws from the posterior over functions (leading axis ``k`` on every leaf)."""

    def transition(self, params: Params, fns: Functions, key: jax.Array, obs: jax.Array,
                   act: jax.Array, sample_noise: bool = True) -> Transition:
        """Applies draw ``i`` to ``obs[i]`` [k, m, d], ``act[i]`` [k, m, a]. ``key`` drives the
        aleatoric noise (unused when ``sample_noise`` is False: the predicted mean)."""

    def step(self, params: Params, fns: Functions, key: jax.Array, obs: jax.Array,
             act: jax.Array) -> jax.Array:
        """``transition(...).next_obs`` with noise sampled: ``next_obs`` [k, m, d]."""

    def predict(self, params: Params, key: jax.Array, obs: jax.Array,
                act: jax.Array) -> distrax.Distribution:
        """Predictive distribution of ``next_obs`` for ``obs`` [n, d], ``act`` [n, a]: a mixture
        over function draws (batch shape [n], event shape [d]), for calibration."""
