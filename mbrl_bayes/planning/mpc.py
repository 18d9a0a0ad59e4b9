"""Model-predictive control: a trajectory optimizer planning through model rollouts.

.. code-block:: python

    mpc = MPC(model, CEM(), reward_fn, termination_fn, horizon=15, num_particles=20,
              propagation="ts_inf", action_low=-1.0, action_high=1.0)
    state = mpc.reset(params, key)                    # episode start (Thompson: a new draw)
    action, state = mpc.act(params, state, obs, key)  # one jitted call per action

``act`` takes ``obs`` [d] (state from ``reset(params, key)``) or a batch of environments ``obs``
[B, d] (state from ``reset(params, key, batch_size=B)``), and returns [a] or [B, a]. The model
params are an argument of the jitted call, so retraining never recompiles. With several devices
visible the candidate sequences are sharded across them (``jax.sharding``); results match one
device for the same key.

Recurrent models (``VariationalLSTM``) plan from the episode's history: the state keeps the last
``history_length`` real steps (each ``obs`` given to ``act`` and the action it returned; by
default ``model.sequence_length - 1``, so that history plus the first planned step is one
training window), and every action replays them through each function draw to get the LSTM
state the rollouts start from.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mbrl_bayes.compile import jit
from mbrl_bayes.models.base import DynamicsModel, Functions, Params
from mbrl_bayes.models.checks import check_finite
from mbrl_bayes.planning.optimizers import TrajectoryOptimizer
from mbrl_bayes.planning.rollout import (
    RewardFn,
    RolloutResult,
    TerminationFn,
    check_bonus,
    check_propagation,
    is_recurrent,
    rollout,
)


class RecentSteps(NamedTuple):
    """The last ``L`` real steps of the episode, oldest first (recurrent models only).

    Attributes:
        obs: [L, d] observations given to ``act``.
        act: [L, a] the actions it returned.
        count: how many of the ``L`` rows are real (the last ``count``); the rest are padding.
    """

    obs: jax.Array
    act: jax.Array
    count: jax.Array


class MPCState(NamedTuple):
    """What :class:`MPC` carries between actions (leading axis ``B`` on every leaf when batched).

    Attributes:
        plan: the optimizer's state: the warm-start plan (shifted previous plan) and bounds.
        functions: for ``thompson``, the episode's single function draw (leading axis 1);
            otherwise ``None`` (functions are drawn afresh at every action).
        history: for recurrent models, the :class:`RecentSteps` the plan conditions on;
            otherwise ``None``.
    """

    plan: Any
    functions: Optional[Functions]
    history: Optional[RecentSteps] = None


class MPC:
    """Plans an action for an observation by optimizing action sequences through model rollouts.

    Args:
        model: a :class:`~mbrl_bayes.models.base.DynamicsModel`.
        optimizer: a trajectory optimizer (:class:`CEM`, :class:`ICEM`, :class:`MPPI`,
            :class:`RandomShooting`).
        reward_fn: ``fn(obs [..., d], act [..., a], next_obs [..., d]) -> [...]``; ``None`` uses the
            model's learned reward.
        termination_fn: same signature, returns bools; ``None`` never terminates.
        horizon: planning horizon ``H``.
        action_low, action_high: action bounds (scalars or [a]).
        num_particles: particles per candidate ``P``.
        propagation: ``ts1``, ``ts_inf``, ``mean``, ``thompson``, ``optimistic`` or ``hucrl``
            (see :mod:`mbrl_bayes.planning.rollout`). ``hucrl`` optimizes [H, a + d] sequences
            (the action, then the hallucinated ``eta`` in ``[-1, 1]^d``); ``act`` and ``plan``
            still return actions only (``info["best_sequence"]`` keeps the ``eta``).
        beta: optimism weight (``optimistic`` and ``hucrl``).
        bonus: ``None`` or ``"disagreement"``: an intrinsic reward for the spread of the
            function draws' predictions (with ``mean`` or ``hucrl``).
        bonus_scale: the bonus's weight per step.
        num_functions: function draws per action (not ``thompson``); default the model's
            ``num_functions`` or, for models with unlimited draws, ``num_particles``.
        devices: devices to shard candidates over; default all visible devices.
        unroll: time steps per trip of the rollout's horizon loop (``True``: all of them). Plans
            are the same; unrolling trades compile time for a little speed on GPUs (whole
            horizon on an H100: pets_halfcheetah 3% and pets_cartpole 11% faster per action, but
            9-17 s instead of 2 s to compile), nothing on CPUs.
        history_length: recurrent models only: real steps kept to condition the plan on
            (default ``model.sequence_length - 1``; ``0``: plan from the zero state).
    """

    def __init__(
        self,
        model: DynamicsModel,
        optimizer: TrajectoryOptimizer,
        reward_fn: Optional[RewardFn] = None,
        termination_fn: Optional[TerminationFn] = None,
        *,
        horizon: int,
        action_low: Any,
        action_high: Any,
        num_particles: int = 20,
        propagation: str = "ts_inf",
        beta: float = 1.0,
        num_functions: Optional[int] = None,
        devices: Optional[Sequence[jax.Device]] = None,
        unroll: int | bool = 1,
        history_length: Optional[int] = None,
        bonus: Optional[str] = None,
        bonus_scale: float = 1.0,
    ):
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}.")
        if reward_fn is None and not model.learns_reward:
            raise ValueError("reward_fn is None but the model does not learn the reward.")
        if propagation == "thompson":
            k = 1
        elif num_functions is not None:
            k = int(num_functions)
        else:
            k = model.num_functions or int(num_particles)
        check_propagation(propagation, int(num_particles), k)
        check_bonus(bonus, propagation, bonus_scale)
        self.bonus = bonus
        self.bonus_scale = float(bonus_scale)
        self.model = model
        self.optimizer = optimizer
        self.reward_fn = reward_fn
        self.termination_fn = termination_fn
        self.horizon = int(horizon)
        self.num_particles = int(num_particles)
        self.propagation = propagation
        self.beta = float(beta)
        self.num_functions = k
        # Validates the bounds once, at the boundary.
        self._plan0 = optimizer.init(self.horizon, model.act_dim, action_low, action_high)
        if propagation == "hucrl":  # the plan also holds eta in [-1, 1]^d per step
            low, high = (jnp.broadcast_to(jnp.asarray(b, jnp.float32), (model.act_dim,))
                         for b in (action_low, action_high))
            ones = jnp.ones((model.obs_dim,), jnp.float32)
            self._plan0 = optimizer.init(self.horizon, model.act_dim + model.obs_dim,
                                         jnp.concatenate([low, -ones]),
                                         jnp.concatenate([high, ones]))
        devices = list(jax.devices() if devices is None else devices)
        valid_int = isinstance(unroll, (int, np.integer)) and not isinstance(unroll, bool)
        if not (unroll is True or (valid_int and unroll >= 1)):
            raise ValueError(f"unroll must be True or an int >= 1, got {unroll!r}.")
        self.unroll = unroll if unroll is True else int(unroll)
        recurrent = is_recurrent(model)
        if history_length is None:
            window = int(getattr(model, "sequence_length", 1))
            history_length = max(window - 1, 0) if recurrent else 0
        if int(history_length) < 0:
            raise ValueError(f"history_length must be >= 0, got {history_length}.")
        if int(history_length) and not recurrent:
            raise ValueError(f"history_length is for recurrent models; {type(model).__name__} "
                             "has no history state.")
        self.history_length = int(history_length)
        self.num_devices = len(devices)
        self._mesh = Mesh(np.asarray(devices), ("candidates",)) if len(devices) > 1 else None

        self._reset_one = jit(self._reset_impl)
        self._reset_many = jit(jax.vmap(self._reset_impl, in_axes=(None, 0)))
        self._plan_one = jit(self._plan_impl)
        self._plan_many = jit(jax.vmap(self._plan_impl, in_axes=(None, 0, 0, 0)))
        self._act_one = jit(lambda *a: _first_action(self._plan_impl(*a)))
        self._act_many = jit(
            lambda *a: _first_action(jax.vmap(self._plan_impl, in_axes=(None, 0, 0, 0))(*a))
        )
        self._evaluate = jit(self._evaluate_impl, static_argnums=(5,))

    # ------------------------------------------------------------------ public API
    def reset(self, params: Params, key: jax.Array, batch_size: Optional[int] = None) -> MPCState:
        """State for a new episode: the initial plan and, for ``thompson``, a fresh function
        draw. With ``batch_size`` every leaf gets a leading axis ``B`` (one draw per env)."""
        if batch_size is None:
            return self._reset_one(params, key)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        return self._reset_many(params, jax.random.split(key, int(batch_size)))

    def act(
        self, params: Params, state: MPCState, obs: jax.Array, key: jax.Array
    ) -> Tuple[jax.Array, MPCState]:
        """The first action of the optimized plan: ``obs`` [d] -> [a], or [B, d] -> [B, a]."""
        batch = self._check_obs(state, obs)
        obs = jnp.asarray(obs, jnp.float32)
        if batch is None:
            return self._act_one(params, state, obs, key)
        return self._act_many(params, state, obs, jax.random.split(key, batch))

    def plan(
        self, params: Params, state: MPCState, obs: jax.Array, key: jax.Array
    ) -> Tuple[jax.Array, MPCState, dict]:
        """Like :meth:`act` but returns the whole plan [H, a] (or [B, H, a]) and the optimizer's
        info (``best_value``: the best objective found, ``best_sequence``)."""
        batch = self._check_obs(state, obs)
        obs = jnp.asarray(obs, jnp.float32)
        if batch is None:
            return self._plan_one(params, state, obs, key)
        return self._plan_many(params, state, obs, jax.random.split(key, batch))

    def evaluate(
        self, params: Params, state: MPCState, obs: jax.Array, action_seqs: jax.Array,
        key: jax.Array, return_trajectory: bool = False,
    ) -> RolloutResult:
        """Scores ``action_seqs`` [N, H, a] (``hucrl``: [N, H, a + d]) from ``obs`` [d] exactly
        as the planner does."""
        self._check_obs(state, obs, allow_batch=False)
        return self._evaluate(params, state, jnp.asarray(obs, jnp.float32), action_seqs, key,
                              bool(return_trajectory))

    # ------------------------------------------------------------------ internals
    def _check_obs(self, state: MPCState, obs: Any, allow_batch: bool = True) -> Optional[int]:
        check_finite("MPC: obs", obs)  # numpy or jax arrays, where the data enters
        shape = np.shape(obs)
        d = self.model.obs_dim
        if len(shape) not in ((1, 2) if allow_batch else (1,)) or shape[-1] != d:
            want = f"[{d}] or [B, {d}]" if allow_batch else f"[{d}]"
            raise ValueError(f"MPC: obs must have shape {want}, got {shape}.")
        plan_shape = np.shape(jax.tree_util.tree_leaves(state.plan)[0])
        batched_state = len(plan_shape) == np.ndim(jax.tree_util.tree_leaves(self._plan0)[0]) + 1
        if len(shape) == 1:
            if batched_state:
                raise ValueError("MPC: a batched state (reset with batch_size) needs obs [B, d].")
            return None
        if not batched_state or plan_shape[0] != shape[0]:
            raise ValueError(
                f"MPC: obs has batch size {shape[0]} but the state was not reset with "
                f"batch_size={shape[0]}."
            )
        return int(shape[0])

    def _reset_impl(self, params: Params, key: jax.Array) -> MPCState:
        functions = None
        if self.propagation == "thompson":
            functions = self.model.sample_functions(params, key, 1)
        history = None
        if self.history_length:
            length = self.history_length
            history = RecentSteps(jnp.zeros((length, self.model.obs_dim), jnp.float32),
                                  jnp.zeros((length, self.model.act_dim), jnp.float32),
                                  jnp.zeros((), jnp.int32))
        return MPCState(self._plan0, functions, history)

    def _history_carry(self, params: Params, fns: Functions, history: Optional[RecentSteps],
                       key: jax.Array):
        """Each draw's LSTM state after the real steps in ``history`` (leaves [k, ...])."""
        if history is None:
            return None
        k = jax.tree_util.tree_leaves(fns)[0].shape[0]
        length = history.obs.shape[0]

        def step(carry, xs):
            obs, act, real = xs
            tr = self.model.transition(
                params, fns, key, jnp.broadcast_to(obs, (k, 1) + obs.shape),
                jnp.broadcast_to(act, (k, 1) + act.shape), sample_noise=False, carry=carry,
            )
            return jax.tree_util.tree_map(lambda new, old: jnp.where(real, new, old),
                                          tr.carry, carry), None

        real = jnp.arange(length) >= length - history.count
        carry0 = self.model.initial_carry(params, fns, 1)
        carry, _ = jax.lax.scan(step, carry0, (history.obs, history.act, real))
        return jax.tree_util.tree_map(lambda c: c[:, 0], carry)

    @staticmethod
    def _remember(history: Optional[RecentSteps], obs: jax.Array, act: jax.Array):
        if history is None:
            return None
        length = history.obs.shape[0]
        return RecentSteps(
            jnp.concatenate([history.obs[1:], obs[None].astype(history.obs.dtype)]),
            jnp.concatenate([history.act[1:], act[None].astype(history.act.dtype)]),
            jnp.minimum(history.count + 1, length),
        )

    def _functions(self, params: Params, state: MPCState, key: jax.Array) -> Functions:
        if self.propagation == "thompson":
            return state.functions
        return self.model.sample_functions(params, key, self.num_functions)

    def _shard(self, action_seqs: jax.Array) -> jax.Array:
        if self._mesh is None or action_seqs.shape[0] % self.num_devices:
            return action_seqs
        spec = PartitionSpec("candidates", *([None] * (action_seqs.ndim - 1)))
        return jax.lax.with_sharding_constraint(action_seqs, NamedSharding(self._mesh, spec))

    def _rollout(self, params, fns, obs, action_seqs, key, carry0, return_trajectory=False):
        return rollout(
            self.model, params, fns, obs, self._shard(action_seqs), self.reward_fn,
            self.termination_fn, key, self.propagation, self.num_particles, self.beta,
            return_trajectory, self.unroll, carry0, self.bonus, self.bonus_scale,
        )

    def _plan_impl(self, params: Params, state: MPCState, obs: jax.Array, key: jax.Array):
        fn_key, opt_key = jax.random.split(key)
        fns = self._functions(params, state, fn_key)
        obs = obs.astype(jnp.float32)
        carry0 = self._history_carry(params, fns, state.history, fn_key)

        def objective(action_seqs, eval_key):
            return self._rollout(params, fns, obs, action_seqs, eval_key, carry0).objective

        plan, plan_state, info = self.optimizer.optimize(objective, state.plan, opt_key)
        plan = plan[:, : self.model.act_dim]  # hucrl: drop the hallucinated eta
        history = self._remember(state.history, obs, plan[0])
        return plan, MPCState(plan_state, state.functions, history), info

    def _evaluate_impl(self, params, state, obs, action_seqs, key, return_trajectory):
        fn_key, eval_key = jax.random.split(key)
        fns = self._functions(params, state, fn_key)
        obs = obs.astype(jnp.float32)
        carry0 = self._history_carry(params, fns, state.history, fn_key)
        return self._rollout(params, fns, obs, action_seqs, eval_key, carry0, return_trajectory)


def _first_action(out):
    plan, state, _ = out
    return plan[..., 0, :], state
