"""Vectorized model rollouts: the return of candidate action sequences under a posterior.

A planner scores ``N`` candidate action sequences of horizon ``H`` from one start state by
rolling out ``P`` particles per candidate through function draws of a dynamics model (the
:class:`~mbrl_bayes.models.base.DynamicsModel` contract). All ``N * P`` particles advance together,
one ``model.transition`` call per time step, with the function axis first: the ``k`` drawn functions
each get ``N * P / k`` rows, so a layer of an ensemble is one batched matrix product. The horizon is
a ``lax.scan``. How particles meet functions is the *propagation* mode:

============  =====================================================================================
``ts_inf``    each particle keeps its function for the whole horizon (PETS TS-inf): particle ``p``
              of every candidate uses function ``p % k``.
``ts1``       particles are reshuffled across functions at every step (PETS TS-1): a fresh random
              permutation of each candidate's particles, still ``P / k`` particles per function.
``mean``      expectation: no aleatoric noise, the next state (and learned reward) is the mean of
              the ``k`` functions' predictions; one deterministic trajectory per candidate.
``thompson``  one function draw for the whole episode: ``fns`` holds a single draw (``k == 1``),
              all particles use it (aleatoric noise is still sampled).
``optimistic``  as ``ts_inf``, but the objective is ``mean_k + beta * std_k`` of the per-function
              returns (each function's return averaged over its particles).
``hucrl``     optimism by hallucinated control (H-UCRL, Curi, Berkenkamp & Krause 2020): each
              candidate holds, per step, the real action and a hallucinated ``eta`` in
              ``[-1, 1]^d`` (``action_seqs`` is [N, H, a + d], ``eta`` last, clipped); one
              deterministic trajectory per candidate, ``s' = mean_k(f(s, a)) + beta *
              std_k(f(s, a)) * eta`` over the ``k`` functions' noise-free predictions (the
              epistemic std, in the state's units). The optimizer picks the ``eta`` that helps
              most, i.e. the plausible model under which the plan does best.
============  =====================================================================================

``bonus="disagreement"`` (Pathak et al. 2019; Sekar et al. 2020, Plan2Explore) adds an intrinsic
reward ``bonus_scale * mean_d(std_k(f(s, a)))`` per step to the objective: the spread of the
``k`` functions' noise-free predictions at each candidate's state and action. It is defined for
the modes that already pass each candidate's state through all ``k`` functions (``mean``,
``hucrl``); the others are refused (``thompson`` has one function, and the particle modes would
need ``k`` times the transitions). ``mean_return`` stays the extrinsic return.

Particles that terminate (``termination_fn``) stop collecting reward; the reward of the
terminating transition itself is collected. A model whose ``rollout_states`` is not ``None`` (the
whole-horizon hook of the ``DynamicsModel`` contract, e.g. a GPU kernel of
:mod:`mbrl_bayes.kernels`) runs the fixed-assignment modes' (``ts_inf``, ``thompson``,
``optimistic``) horizon as one ``model.rollout_states`` call, with the same noise; rewards and
terminations then follow for all steps at once, as they never feed back into the dynamics.

Recurrent models (with ``initial_carry``) get their per-row history state threaded through the
horizon, starting at ``obs0`` from ``initial_carry`` (one state per function draw: the real
history summarized by that draw; see :class:`~mbrl_bayes.planning.MPC`) or from the zero state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from mbrl_bayes.models.base import DynamicsModel, Functions, Params

PROPAGATIONS = ("ts1", "ts_inf", "mean", "thompson", "optimistic", "hucrl")
# Intrinsic rewards (``bonus``) and the propagation modes each is defined with.
BONUSES = {"disagreement": ("mean", "hucrl")}

# fn(obs [..., d], act [..., a], next_obs [..., d]) -> [...]
RewardFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
TerminationFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class RolloutResult(NamedTuple):
    """Returns of ``N`` candidates with ``P`` particles each (``P = 1`` for ``mean``).

    Attributes:
        objective: [N] what a planner maximizes: ``mean_return``, or for ``optimistic``
            ``mean_k + beta * std_k`` over the per-function returns; plus the intrinsic return
            of a ``bonus``.
        mean_return: [N] return averaged over particles.
        std_return: [N] standard deviation of the return over particles (its spread).
        particle_returns: [N, P] return of each particle; particle ``p`` keeps its index over time.
        trajectory: [N, P, H + 1, d] states from ``obs0`` on (only with ``return_trajectory``).
    """

    objective: jax.Array
    mean_return: jax.Array
    std_return: jax.Array
    particle_returns: jax.Array
    trajectory: Optional[jax.Array]


def is_recurrent(model: DynamicsModel) -> bool:
    """Whether ``model`` threads a history state (it has ``initial_carry``)."""
    return callable(getattr(model, "initial_carry", None))


def num_draws(fns: Functions) -> int:
    """The number ``k`` of function draws in ``fns`` (the leading axis of its leaves)."""
    leaves = jax.tree_util.tree_leaves(fns)
    if not leaves:
        raise ValueError("fns has no array leaves: cannot tell the number of function draws.")
    return int(leaves[0].shape[0])


def check_propagation(propagation: str, num_particles: int, num_functions: int) -> None:
    """Raises a one-line ValueError if the propagation mode, particle and function counts clash."""
    if propagation not in PROPAGATIONS:
        raise ValueError(f"Unknown propagation {propagation!r}; expected one of {PROPAGATIONS}.")
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}.")
    if num_functions < 1:
        raise ValueError(f"The number of function draws must be >= 1, got {num_functions}.")
    if propagation == "thompson" and num_functions != 1:
        raise ValueError(
            f"propagation 'thompson' plans with one function draw, got {num_functions} draws."
        )
    if propagation in ("ts1", "ts_inf", "optimistic") and num_particles % num_functions:
        raise ValueError(
            f"propagation {propagation!r} spreads particles evenly over function draws: "
            f"num_particles={num_particles} is not divisible by the {num_functions} draws."
        )
    if propagation in ("optimistic", "hucrl") and num_functions < 2:
        raise ValueError(f"propagation {propagation!r} needs at least 2 function draws for a "
                         "spread.")


def check_bonus(bonus: Optional[str], propagation: str, bonus_scale: float = 1.0) -> None:
    """Raises a one-line ValueError unless ``bonus`` (None or a key of :data:`BONUSES`) is
    defined with ``propagation`` and ``bonus_scale`` is a finite number >= 0."""
    if bonus is None:
        return
    if bonus not in BONUSES:
        raise ValueError(f"Unknown bonus {bonus!r}; expected one of {tuple(BONUSES)} or None.")
    if propagation not in BONUSES[bonus]:
        raise ValueError(f"bonus {bonus!r} needs each candidate's state through all function "
                         f"draws: it is defined with propagation {' or '.join(BONUSES[bonus])}, "
                         f"not {propagation!r}.")
    scale = float(bonus_scale)
    if not (scale >= 0 and scale < float("inf")):
        raise ValueError(f"bonus_scale must be a finite number >= 0, got {bonus_scale!r}.")


def rollout(
    model: DynamicsModel,
    params: Params,
    fns: Functions,
    obs0: jax.Array,
    action_seqs: jax.Array,
    reward_fn: Optional[RewardFn],
    termination_fn: Optional[TerminationFn],
    key: jax.Array,
    propagation: str = "ts_inf",
    num_particles: int = 20,
    beta: float = 1.0,
    return_trajectory: bool = False,
    unroll: int | bool = 1,
    initial_carry: Any = None,
    bonus: Optional[str] = None,
    bonus_scale: float = 1.0,
) -> RolloutResult:
    """Rolls ``N`` candidate action sequences out from ``obs0`` through the model.

    Args:
        model: a dynamics model (``transition``, ``learns_reward`` and ``rollout_states`` are
            used).
        params: the model's params.
        fns: ``k`` function draws (``model.sample_functions(params, key, k)``), drawn once outside.
        obs0: [d] start state shared by all candidates, or [B, d] for a batch of environments.
        action_seqs: [N, H, a] candidate action sequences ([B, N, H, a] with a batch); for
            ``hucrl`` [N, H, a + d]: each step's action, then its hallucinated ``eta``.
        reward_fn: ``fn(obs, act, next_obs) -> reward``; ``None`` uses the model's learned reward.
        termination_fn: ``fn(obs, act, next_obs) -> bool``; ``None`` never terminates.
        key: drives the aleatoric noise (and the ``ts1`` reshuffles).
        propagation: one of :data:`PROPAGATIONS` (see the module docstring).
        num_particles: ``P``, particles per candidate (ignored by ``mean``).
        beta: optimism weight of ``optimistic`` and ``hucrl``.
        return_trajectory: also return the [N, P, H + 1, d] particle states.
        unroll: time steps per trip of the horizon's ``lax.scan`` (``True``: the whole horizon
            as straight-line code). Same results; longer compiles for a little speed on GPUs.
        initial_carry: recurrent models only: the history state each function draw starts from
            at ``obs0``, leaves ``[k, ...]`` (one row of ``model.initial_carry``); ``None``: zeros.
        bonus: ``None`` or ``"disagreement"`` (see the module docstring).
        bonus_scale: weight of the bonus per step.

    Returns:
        A :class:`RolloutResult` (every field with a leading ``B`` axis for a batch).
    """
    k = num_draws(fns)
    check_propagation(propagation, num_particles, k)
    check_bonus(bonus, propagation, bonus_scale)
    if reward_fn is None and not model.learns_reward:
        raise ValueError("reward_fn is None but the model does not learn the reward.")
    obs0, action_seqs = jnp.asarray(obs0), jnp.asarray(action_seqs)
    if obs0.ndim == 2 and action_seqs.ndim == 4 and action_seqs.shape[0] == obs0.shape[0]:
        # A batch of start states (environments), each with its own candidates; same draws
        # (an ``initial_carry`` then has a leading batch axis: one history per environment).
        def one(o, seqs, k_, carry):
            return rollout(model, params, fns, o, seqs, reward_fn, termination_fn, k_,
                           propagation, num_particles, beta, return_trajectory, unroll, carry,
                           bonus, bonus_scale)

        keys = jax.random.split(key, obs0.shape[0])
        return jax.vmap(one)(obs0, action_seqs, keys, initial_carry)  # None maps to None
    if obs0.ndim != 1 or action_seqs.ndim != 3:
        raise ValueError(
            f"rollout expects obs0 [d] and action_seqs [N, H, a] (or [B, d] and [B, N, H, a]), "
            f"got {obs0.shape} and {action_seqs.shape}."
        )
    num_candidates, horizon, width = action_seqs.shape
    obs0 = obs0.astype(jnp.float32)
    acts = jnp.swapaxes(action_seqs.astype(jnp.float32), 0, 1)  # [H, N, a], time-major
    etas = None
    if propagation == "hucrl":
        a, d = model.act_dim, obs0.shape[-1]
        if width != a + d:
            raise ValueError(f"propagation 'hucrl' plans the action and a hallucinated eta per "
                             f"step: action_seqs needs a + d = {a} + {d} = {a + d} entries per "
                             f"step, got {width}.")
        acts, etas = acts[..., :a], jnp.clip(acts[..., a:], -1.0, 1.0)
    keys = jax.random.split(key, horizon)

    def reward_and_done(obs, act, next_obs, learned):
        reward = learned if reward_fn is None else reward_fn(obs, act, next_obs)
        done = None if termination_fn is None else termination_fn(obs, act, next_obs)
        return reward, done

    recurrent = is_recurrent(model)
    if initial_carry is not None and not recurrent:
        raise ValueError("initial_carry is for recurrent models (with initial_carry); "
                         f"{type(model).__name__} has no history state.")
    ctx = _Context(model, params, fns, acts, keys, reward_and_done, k, return_trajectory,
                   recurrent, unroll, initial_carry)
    intrinsic = None
    if propagation in ("mean", "hucrl"):
        scale = None if bonus is None else float(bonus_scale)
        particle_returns, intrinsic, traj = _rollout_mean(ctx, obs0, etas, float(beta), scale)
    elif propagation == "ts1":
        particle_returns, traj = _rollout_ts1(ctx, obs0, num_particles)
    else:  # ts_inf, thompson, optimistic: particle p uses function p % k throughout
        particle_returns, traj = _rollout_fixed(ctx, obs0, num_particles)

    particle_returns = _finite(particle_returns)
    mean_return = particle_returns.mean(axis=1)
    std_return = particle_returns.std(axis=1)
    if propagation == "optimistic":
        per_fn = particle_returns.reshape(num_candidates, -1, k).mean(axis=1)  # [N, k]
        objective = per_fn.mean(axis=1) + beta * per_fn.std(axis=1)
    else:
        objective = mean_return
    if intrinsic is not None:
        objective = objective + _finite(intrinsic)
    trajectory = None
    if return_trajectory:  # traj: [N, P, H, d]
        start = jnp.broadcast_to(obs0, traj.shape[:2] + (1, obs0.shape[-1]))
        trajectory = jnp.concatenate([start, traj], axis=2)
    return RolloutResult(objective, mean_return, std_return, particle_returns, trajectory)


class _Context(NamedTuple):
    model: Any
    params: Any
    fns: Any
    acts: jax.Array  # [H, N, a]
    keys: jax.Array  # [H] keys
    reward_and_done: Callable
    k: int
    return_trajectory: bool
    recurrent: bool  # the model threads a per-row ``carry`` (history state) through steps
    unroll: int | bool  # ``lax.scan``'s unroll over the horizon
    carry0: Any  # recurrent models: per-draw history state at obs0, leaves [k, ...], or None


def _transition(ctx: _Context, key, obs, act, carry, sample_noise: bool = True):
    """``model.transition``, passing and returning the carry of recurrent models."""
    if not ctx.recurrent:
        tr = ctx.model.transition(ctx.params, ctx.fns, key, obs, act, sample_noise=sample_noise)
        return tr, None
    tr = ctx.model.transition(ctx.params, ctx.fns, key, obs, act, sample_noise=sample_noise,
                              carry=carry)
    return tr, tr.carry


def _initial_carry(ctx: _Context, m: int):
    """History state at ``obs0``, leaves [k, m, ...], for recurrent models (each draw's
    ``carry0`` repeated over its ``m`` rows, or zeros); else None."""
    if not ctx.recurrent:
        return None
    zeros = ctx.model.initial_carry(ctx.params, ctx.fns, m)
    if ctx.carry0 is None:
        return zeros
    zero_leaves, zero_tree = jax.tree_util.tree_flatten(zeros)
    carry_leaves, carry_tree = jax.tree_util.tree_flatten(ctx.carry0)
    expected = [(z.shape[0],) + z.shape[2:] for z in zero_leaves]  # [k, m, ...] minus m
    got = [jnp.shape(c) for c in carry_leaves]
    if zero_tree != carry_tree or expected != got:
        raise ValueError(f"initial_carry must hold one state per function draw, shapes "
                         f"{zero_tree.unflatten(expected)}; got {carry_tree.unflatten(got)}.")
    return jax.tree_util.tree_map(
        lambda z, c: jnp.broadcast_to(jnp.expand_dims(c, 1), z.shape).astype(z.dtype),
        zeros, ctx.carry0)


def _finite(x: jax.Array) -> jax.Array:
    """Non-finite returns (a diverging model) become a very low return, never NaN."""
    return jnp.where(jnp.isfinite(x), x, jnp.finfo(x.dtype).min / 4)


def _accumulate(ret, alive, reward, done):
    """Adds the reward of particles still alive, then retires those that terminated."""
    ret = ret + jnp.where(alive, reward, 0.0)
    if done is not None:
        alive = alive & ~done.astype(bool)
    return ret, alive


def _scan(ctx: _Context, body, init):
    """``lax.scan`` over (actions, keys); the states are emitted only for trajectories."""

    def step(carry, xs):
        carry, out = body(carry, xs)
        return carry, (out if ctx.return_trajectory else None)

    return jax.lax.scan(step, init, (ctx.acts, ctx.keys), unroll=ctx.unroll)


def _rollout_fixed(ctx: _Context, obs0: jax.Array, num_particles: int):
    """Particle ``p = j * k + i`` of every candidate uses function ``i`` throughout.

    The carry stays in the model's layout [k, N * P/k, d] (rows candidate-major), so nothing is
    transposed inside the loop.
    """
    k = ctx.k
    horizon, n, act_dim = ctx.acts.shape
    pk = num_particles // k
    rows = n * pk

    def body(carry, xs):
        obs, ret, alive, history = carry
        act_t, key_t = xs
        act = jnp.broadcast_to(act_t[None, :, None, :], (k, n, pk, act_dim)).reshape(k, rows, -1)
        tr, history = _transition(ctx, key_t, obs, act, history)
        reward, done = ctx.reward_and_done(obs, act, tr.next_obs, tr.reward)
        ret, alive = _accumulate(ret, alive, reward, done)
        return (tr.next_obs, ret, alive, history), tr.next_obs

    obs_rows = jnp.broadcast_to(obs0, (k, rows, obs0.shape[-1]))
    if ctx.model.rollout_states is not None and not ctx.recurrent:
        ret, states = _rollout_whole_horizon(ctx, obs_rows, pk)
    else:
        init = (obs_rows, jnp.zeros((k, rows), jnp.float32), jnp.ones((k, rows), bool),
                _initial_carry(ctx, rows))
        (_, ret, _, _), states = _scan(ctx, body, init)

    def to_particles(x):  # [k, N * pk, ...] -> [N, P, ...] with p = j * k + i
        x = x.reshape((k, n, pk) + x.shape[2:])
        x = jnp.moveaxis(x, 0, 2)  # [N, pk, k, ...]
        return x.reshape((n, num_particles) + x.shape[3:])

    traj = None
    if states is not None:  # [H, k, rows, d] -> [N, P, H, d]
        traj = to_particles(jnp.moveaxis(states, 0, 2))
    return to_particles(ret), traj


def _rollout_whole_horizon(ctx: _Context, obs_rows: jax.Array, pk: int):
    """``_rollout_fixed``'s horizon as one call of the model's ``rollout_states`` (e.g. one
    kernel launch); rewards and terminations, which do not feed back into the dynamics, follow
    for all steps at once. Returns the returns [k, rows] and the states [H, k, rows, d] (or
    None)."""
    k, rows, _ = obs_rows.shape
    horizon, n, act_dim = ctx.acts.shape
    act = jnp.broadcast_to(ctx.acts[None, :, :, None, :], (k, horizon, n, pk, act_dim))
    act = act.reshape(k, horizon, rows, act_dim)
    next_obs, learned = ctx.model.rollout_states(ctx.params, ctx.fns, ctx.keys, obs_rows, act)
    obs = jnp.concatenate([obs_rows[:, None], next_obs[:, :-1]], axis=1)  # [k, H, rows, d]
    reward, done = ctx.reward_and_done(obs, act, next_obs, learned)
    alive = jnp.ones(reward.shape, bool)
    if done is not None:  # alive before step h: no termination in steps < h
        survived = jnp.cumprod(~done.astype(bool), axis=1, dtype=jnp.int32).astype(bool)
        alive = jnp.concatenate([alive[:, :1], survived[:, :-1]], axis=1)
    ret = jnp.where(alive, reward, 0.0).sum(axis=1)
    states = jnp.moveaxis(next_obs, 1, 0) if ctx.return_trajectory else None
    return ret, states


def _rollout_ts1(ctx: _Context, obs0: jax.Array, num_particles: int):
    """Each step, each candidate's ``P`` particles are randomly permuted over the ``P`` slots, and
    slot ``q = j * k + i`` goes to function ``i``; the carry keeps particle order [N, P, d]."""
    k = ctx.k
    horizon, n, act_dim = ctx.acts.shape
    pk = num_particles // k
    d = obs0.shape[-1]

    def to_model(x):  # [N, P, ...] slot order -> [k, N * pk, ...]
        x = x.reshape((n, pk, k) + x.shape[2:])
        x = jnp.moveaxis(x, 2, 0)
        return x.reshape((k, n * pk) + x.shape[3:])

    def from_model(x):  # inverse of to_model
        x = x.reshape((k, n, pk) + x.shape[2:])
        x = jnp.moveaxis(x, 0, 2)
        return x.reshape((n, num_particles) + x.shape[3:])

    def permute(x, perm):  # [N, P, ...] along particles
        return jnp.take_along_axis(x, perm.reshape(perm.shape + (1,) * (x.ndim - 2)), axis=1)

    def body(carry, xs):
        obs, ret, alive, history = carry
        act_t, key_t = xs
        perm_key, model_key = jax.random.split(key_t)
        perm = jnp.argsort(jax.random.uniform(perm_key, (n, num_particles)), axis=1)
        inv = jnp.argsort(perm, axis=1)
        slots = permute(obs, perm)  # slot q holds particle perm[q]
        act = jnp.broadcast_to(act_t[:, None, :], (n, num_particles, act_dim))
        history = jax.tree_util.tree_map(lambda h: to_model(permute(h, perm)), history)
        tr, history = _transition(ctx, model_key, to_model(slots), to_model(act), history)
        unpermute = lambda x: permute(from_model(x), inv)
        next_obs = unpermute(tr.next_obs)
        history = jax.tree_util.tree_map(unpermute, history)
        learned = None if tr.reward is None else unpermute(tr.reward)
        reward, done = ctx.reward_and_done(obs, act, next_obs, learned)
        ret, alive = _accumulate(ret, alive, reward, done)
        return (next_obs, ret, alive, history), next_obs

    history0 = jax.tree_util.tree_map(from_model, _initial_carry(ctx, n * pk))
    init = (
        jnp.broadcast_to(obs0, (n, num_particles, d)),
        jnp.zeros((n, num_particles), jnp.float32),
        jnp.ones((n, num_particles), bool),
        history0,
    )
    (_, ret, _, _), states = _scan(ctx, body, init)
    traj = None if states is None else jnp.moveaxis(states, 0, 2)  # [N, P, H, d]
    return ret, traj


def _rollout_mean(ctx: _Context, obs0: jax.Array, etas: Optional[jax.Array] = None,
                  beta: float = 1.0, bonus_scale: Optional[float] = None):
    """One deterministic trajectory per candidate: the mean over the ``k`` functions' noiseless
    predictions (and learned rewards) at every step; with ``etas`` [H, N, d] (``hucrl``) plus
    ``beta * std_k * eta``. With ``bonus_scale`` also the intrinsic return [N] of
    ``bonus_scale * mean_d(std_k)`` per step (else None)."""
    k = ctx.k
    horizon, n, act_dim = ctx.acts.shape
    d = obs0.shape[-1]
    if etas is None:
        etas = jnp.zeros((horizon, 0), jnp.float32)  # scanned over; unused

    def body(carry, xs):
        obs, ret, bonus, alive, history = carry  # history: per function [k, N, ...]
        act_t, key_t, eta_t = xs
        tr, history = _transition(
            ctx, key_t, jnp.broadcast_to(obs[None], (k, n, d)),
            jnp.broadcast_to(act_t[None], (k, n, act_dim)), history, sample_noise=False,
        )
        next_obs = tr.next_obs.mean(axis=0)
        spread = tr.next_obs.std(axis=0)  # [N, d] epistemic std, the state's units
        if eta_t.shape[-1]:
            next_obs = next_obs + beta * spread * eta_t
        learned = None if tr.reward is None else tr.reward.mean(axis=0)
        reward, done = ctx.reward_and_done(obs, act_t, next_obs, learned)
        if bonus_scale is not None:
            bonus = bonus + jnp.where(alive, bonus_scale * spread.mean(axis=-1), 0.0)
        ret, alive = _accumulate(ret, alive, reward, done)
        out = next_obs if ctx.return_trajectory else None
        return (next_obs, ret, bonus, alive, history), out

    init = (
        jnp.broadcast_to(obs0, (n, d)),
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((n,), jnp.float32),
        jnp.ones((n,), bool),
        _initial_carry(ctx, n),
    )
    (_, ret, bonus, _, _), states = jax.lax.scan(body, init, (ctx.acts, ctx.keys, etas),
                                                 unroll=ctx.unroll)
    traj = None if states is None else jnp.moveaxis(states, 0, 1)[:, None]  # [N, 1, H, d]
    return ret[:, None], (bonus if bonus_scale is not None else None), traj
