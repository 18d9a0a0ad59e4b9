"""Trajectory optimizers: CEM, iCEM, MPPI and random shooting, pure and jittable.

Every optimizer has the same two methods:

.. code-block:: python

    state = opt.init(horizon, act_dim, low, high)        # a pytree: the warm-start plan + bounds
    plan, state, info = opt.optimize(objective_fn, state, key)

``objective_fn(action_seqs [N, H, a], key) -> [N]`` scores candidates (higher is better; e.g. the
``objective`` of :func:`~mbrl_bayes.planning.rollout`). ``plan`` is the [H, a] action sequence to
execute (its first action is taken), and the returned ``state`` is already *shifted* by one step
(the plan minus its first action, padded with the middle of the bounds), ready to warm start the
next call. ``info`` holds ``best_value`` (the best objective seen) and ``best_sequence``.

Iterations run in ``lax.fori_loop``; candidates are evaluated as one batch; nothing loops in
Python at run time. Non-finite objective values are treated as the worst possible value.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Protocol, Tuple, Type

import jax
import jax.numpy as jnp

from mbrl_bayes.planning.noise import colored_noise

# objective_fn(action_seqs [N, H, a], key) -> values [N] (maximized)
ObjectiveFn = Callable[[jax.Array, jax.Array], jax.Array]
Info = dict


class TrajectoryOptimizer(Protocol):
    """What :class:`~mbrl_bayes.planning.MPC` needs of an optimizer."""

    def init(self, horizon: int, act_dim: int, low, high):
        """The initial state: a plan in the middle of the bounds ``low``, ``high`` ([a] or [])."""

    def optimize(
        self, objective_fn: ObjectiveFn, state, key: jax.Array
    ) -> Tuple[jax.Array, object, Info]:
        """``(plan [H, a], shifted state, info)``; see the module docstring."""


class PlanState(NamedTuple):
    """State shared by CEM, MPPI and random shooting.

    Attributes:
        mean: [H, a] warm-start plan (already shifted).
        low: [a] lower action bounds.
        high: [a] upper action bounds.
    """

    mean: jax.Array
    low: jax.Array
    high: jax.Array


class ICEMState(NamedTuple):
    """iCEM state: :class:`PlanState` fields plus ``elites`` [n_keep, H, a] (already shifted)."""

    mean: jax.Array
    elites: jax.Array
    low: jax.Array
    high: jax.Array


def _bounds(act_dim: int, low, high) -> Tuple[jax.Array, jax.Array]:
    low = jnp.broadcast_to(jnp.asarray(low, jnp.float32), (act_dim,))
    high = jnp.broadcast_to(jnp.asarray(high, jnp.float32), (act_dim,))
    return low, high


def _check_init(horizon: int, act_dim: int, low, high) -> None:
    if int(horizon) < 1 or int(act_dim) < 1:
        raise ValueError(f"horizon and act_dim must be >= 1, got {horizon} and {act_dim}.")
    try:
        low_, high_ = _bounds(act_dim, low, high)
    except (ValueError, TypeError) as err:
        raise ValueError(f"Action bounds must be scalars or shape [{act_dim}]: {err}") from None
    if not isinstance(low_, jax.core.Tracer) and not bool(jnp.all(low_ < high_)):
        raise ValueError(f"Action bounds need low < high, got low={low}, high={high}.")


def _middle(low: jax.Array, high: jax.Array, horizon: int) -> jax.Array:
    return jnp.broadcast_to((low + high) / 2, (horizon,) + low.shape)


def _shift(seq: jax.Array, fill: jax.Array) -> jax.Array:
    """Drops the first step of ``seq`` [..., H, a] and appends ``fill`` [a]."""
    pad = jnp.broadcast_to(fill, seq.shape[:-2] + (1, seq.shape[-1]))
    return jnp.concatenate([seq[..., 1:, :], pad], axis=-2)


def _finite(values: jax.Array) -> jax.Array:
    values = values.astype(jnp.float32)
    return jnp.where(jnp.isfinite(values), values, jnp.finfo(jnp.float32).min)


def _evaluate(objective_fn: ObjectiveFn, samples: jax.Array, key: jax.Array) -> jax.Array:
    values = objective_fn(samples, key)
    if values.shape != samples.shape[:1]:
        raise ValueError(
            f"objective_fn must map [N, H, a] candidates to [N] values, got {values.shape} for "
            f"{samples.shape}."
        )
    return _finite(values)


def _track_best(best, samples, values):
    best_seq, best_value = best
    i = jnp.argmax(values)
    better = values[i] > best_value
    return (jnp.where(better, samples[i], best_seq), jnp.where(better, values[i], best_value))


def _init_best(mean: jax.Array):
    return mean, jnp.asarray(jnp.finfo(jnp.float32).min, jnp.float32)


def _check_positive(**kwargs) -> None:
    for name, value in kwargs.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}.")


class CEM:
    """Cross-entropy method (PETS, Chua et al. 2018), with momentum ``alpha``.

    Each iteration samples ``population_size`` sequences from a diagonal Gaussian truncated at two
    standard deviations and clipped to the bounds, keeps the ``num_elites`` best, and refits:
    ``mean = alpha * mean + (1 - alpha) * elite_mean`` (same for the std). The Gaussian starts at
    the warm-start plan with std ``initial_std`` (default: a quarter of the bound range). Returns
    the mean of the last iteration's elites.
    """

    def __init__(
        self,
        population_size: int = 350,
        num_elites: int = 35,
        num_iterations: int = 5,
        alpha: float = 0.1,
        initial_std: Optional[float] = None,
    ):
        _check_positive(population_size=population_size, num_elites=num_elites,
                        num_iterations=num_iterations)
        if num_elites > population_size:
            raise ValueError(f"num_elites={num_elites} exceeds population_size={population_size}.")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}.")
        if initial_std is not None:
            _check_positive(initial_std=initial_std)
        self.population_size = int(population_size)
        self.num_elites = int(num_elites)
        self.num_iterations = int(num_iterations)
        self.alpha = float(alpha)
        self.initial_std = initial_std

    def init(self, horizon: int, act_dim: int, low, high) -> PlanState:
        _check_init(horizon, act_dim, low, high)
        low, high = _bounds(act_dim, low, high)
        return PlanState(_middle(low, high, horizon), low, high)

    def _std0(self, state: PlanState) -> jax.Array:
        if self.initial_std is not None:
            return jnp.full_like(state.mean, self.initial_std)
        return jnp.broadcast_to((state.high - state.low) / 4, state.mean.shape)

    def optimize(self, objective_fn: ObjectiveFn, state: PlanState, key: jax.Array):
        low, high = state.low, state.high
        shape = (self.population_size,) + state.mean.shape

        def body(i, carry):
            mean, std, _, best = carry
            sample_key, eval_key = jax.random.split(jax.random.fold_in(key, i))
            noise = jax.random.truncated_normal(sample_key, -2.0, 2.0, shape, jnp.float32)
            samples = jnp.clip(mean + std * noise, low, high)
            values = _evaluate(objective_fn, samples, eval_key)
            _, idx = jax.lax.top_k(values, self.num_elites)
            elites = samples[idx]
            elite_mean, elite_std = elites.mean(axis=0), elites.std(axis=0)
            mean = self.alpha * mean + (1 - self.alpha) * elite_mean
            std = self.alpha * std + (1 - self.alpha) * elite_std
            return mean, std, elite_mean, _track_best(best, samples, values)

        init = (state.mean, self._std0(state), state.mean, _init_best(state.mean))
        _, _, plan, (best_seq, best_value) = jax.lax.fori_loop(
            0, self.num_iterations, body, init
        )
        new_state = PlanState(_shift(plan, (low + high) / 2), low, high)
        return plan, new_state, {"best_value": best_value, "best_sequence": best_seq}


class ICEM:
    """Improved CEM (Pinneri et al. 2020).

    Differences from :class:`CEM`: samples are colored noise with power spectrum ``1 / f**
    noise_beta`` along time (``0`` is white, ``2`` is smooth); the population shrinks by
    ``population_decay`` per iteration (``max(N * decay**-i, 2 * num_elites)``); a fraction
    ``keep_elites`` of the elites is carried into the next iteration and, shifted by one step, into
    the next call; the current mean is added as a candidate; the best sequence ever evaluated is
    returned. Elites are ranked by value, so carried elites compete with the new samples.

    Iterations of different population sizes have different array shapes, so with
    ``population_decay != 1`` the (few) iterations are unrolled when traced, still one XLA call;
    with ``population_decay == 1`` they run in ``lax.fori_loop``.
    """

    def __init__(
        self,
        population_size: int = 350,
        num_elites: int = 35,
        num_iterations: int = 3,
        alpha: float = 0.1,
        noise_beta: float = 2.0,
        population_decay: float = 1.25,
        keep_elites: float = 0.3,
        shift_elites: bool = True,
        initial_std: Optional[float] = None,
    ):
        _check_positive(population_size=population_size, num_elites=num_elites,
                        num_iterations=num_iterations)
        if num_elites > population_size:
            raise ValueError(f"num_elites={num_elites} exceeds population_size={population_size}.")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}.")
        if population_decay < 1.0:
            raise ValueError(f"population_decay must be >= 1, got {population_decay}.")
        if not 0.0 <= keep_elites <= 1.0:
            raise ValueError(f"keep_elites must be in [0, 1], got {keep_elites}.")
        if noise_beta < 0:
            raise ValueError(f"noise_beta must be >= 0, got {noise_beta}.")
        self.population_size = int(population_size)
        self.num_elites = int(num_elites)
        self.num_iterations = int(num_iterations)
        self.alpha = float(alpha)
        self.noise_beta = float(noise_beta)
        self.population_decay = float(population_decay)
        self.num_keep = int(round(keep_elites * num_elites))
        self.shift_elites = bool(shift_elites)
        self.initial_std = initial_std

    def populations(self) -> Tuple[int, ...]:
        """New samples drawn at each iteration (carried elites and the mean come on top)."""
        return tuple(
            max(int(self.population_size * self.population_decay ** -i), 2 * self.num_elites)
            for i in range(self.num_iterations)
        )

    def init(self, horizon: int, act_dim: int, low, high) -> ICEMState:
        _check_init(horizon, act_dim, low, high)
        low, high = _bounds(act_dim, low, high)
        mean = _middle(low, high, horizon)
        elites = jnp.broadcast_to(mean, (self.num_keep,) + mean.shape)
        return ICEMState(mean, elites, low, high)

    def optimize(self, objective_fn: ObjectiveFn, state: ICEMState, key: jax.Array):
        low, high = state.low, state.high
        horizon, act_dim = state.mean.shape
        if self.initial_std is not None:
            std0 = jnp.full_like(state.mean, self.initial_std)
        else:
            std0 = jnp.broadcast_to((high - low) / 4, state.mean.shape)

        def iteration(i, carry, num_samples):
            mean, std, kept, best = carry
            sample_key, eval_key = jax.random.split(jax.random.fold_in(key, i))
            noise = colored_noise(sample_key, self.noise_beta, (num_samples, act_dim), horizon)
            noise = jnp.swapaxes(noise, -1, -2)  # [n, H, a]
            samples = jnp.clip(mean + std * noise, low, high)
            samples = jnp.concatenate([samples, kept, mean[None]], axis=0)
            values = _evaluate(objective_fn, samples, eval_key)
            _, idx = jax.lax.top_k(values, self.num_elites)
            elites = samples[idx]  # best first
            mean = self.alpha * mean + (1 - self.alpha) * elites.mean(axis=0)
            std = self.alpha * std + (1 - self.alpha) * elites.std(axis=0)
            return mean, std, elites[: self.num_keep], _track_best(best, samples, values)

        kept0 = state.elites if self.shift_elites else jnp.broadcast_to(
            state.mean, state.elites.shape)
        carry = (state.mean, std0, kept0, _init_best(state.mean))
        pops = self.populations()
        if len(set(pops)) == 1:
            carry = jax.lax.fori_loop(
                0, self.num_iterations, lambda i, c: iteration(i, c, pops[0]), carry
            )
        else:
            for i, n in enumerate(pops):
                carry = iteration(i, carry, n)
        mean, _, kept, (best_seq, best_value) = carry
        fill = (low + high) / 2
        new_state = ICEMState(_shift(mean, fill), _shift(kept, fill), low, high)
        return best_seq, new_state, {"best_value": best_value, "best_sequence": best_seq}


class MPPI:
    """Model-predictive path integral control (Williams et al. 2017; the PDDM/mbrl-lib variant).

    Each iteration perturbs the plan with Gaussian noise of std ``noise_std`` (default: a quarter
    of the bound range), smoothed in time: ``a_t = (1 - smoothing) * (mean_t + eps_t) + smoothing *
    a_{t-1}`` (``a_{-1} = mean_0``; ``smoothing = 0`` is white noise), clips to the bounds and
    replaces the plan with the average of the samples weighted by ``softmax(values /
    temperature)``. Returns that average.
    """

    def __init__(
        self,
        population_size: int = 350,
        num_iterations: int = 5,
        temperature: float = 1.0,
        noise_std: Optional[float] = None,
        smoothing: float = 0.0,
    ):
        _check_positive(population_size=population_size, num_iterations=num_iterations,
                        temperature=temperature)
        if noise_std is not None:
            _check_positive(noise_std=noise_std)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")
        self.population_size = int(population_size)
        self.num_iterations = int(num_iterations)
        self.temperature = float(temperature)
        self.noise_std = noise_std
        self.smoothing = float(smoothing)

    def init(self, horizon: int, act_dim: int, low, high) -> PlanState:
        _check_init(horizon, act_dim, low, high)
        low, high = _bounds(act_dim, low, high)
        return PlanState(_middle(low, high, horizon), low, high)

    def optimize(self, objective_fn: ObjectiveFn, state: PlanState, key: jax.Array):
        low, high = state.low, state.high
        if self.noise_std is not None:
            std = jnp.full_like(state.mean, self.noise_std)
        else:
            std = jnp.broadcast_to((high - low) / 4, state.mean.shape)
        shape = (self.population_size,) + state.mean.shape

        def body(i, carry):
            mean, best = carry
            sample_key, eval_key = jax.random.split(jax.random.fold_in(key, i))
            raw = mean + std * jax.random.normal(sample_key, shape, jnp.float32)
            if self.smoothing:
                s = self.smoothing

                def smooth(prev, a_t):
                    a_t = (1 - s) * a_t + s * prev
                    return a_t, a_t

                prev0 = jnp.broadcast_to(mean[0], (shape[0], shape[2]))
                _, raw = jax.lax.scan(smooth, prev0, jnp.swapaxes(raw, 0, 1))
                raw = jnp.swapaxes(raw, 0, 1)
            samples = jnp.clip(raw, low, high)
            values = _evaluate(objective_fn, samples, eval_key)
            weights = jax.nn.softmax((values - values.max()) / self.temperature)
            mean = jnp.einsum("n,nha->ha", weights, samples)
            return mean, _track_best(best, samples, values)

        plan, (best_seq, best_value) = jax.lax.fori_loop(
            0, self.num_iterations, body, (state.mean, _init_best(state.mean))
        )
        new_state = PlanState(_shift(plan, (low + high) / 2), low, high)
        return plan, new_state, {"best_value": best_value, "best_sequence": best_seq}


class RandomShooting:
    """Random shooting: ``population_size`` sequences uniform in the bounds (the first candidate is
    the warm-start plan); returns the best."""

    def __init__(self, population_size: int = 1000):
        _check_positive(population_size=population_size)
        self.population_size = int(population_size)

    def init(self, horizon: int, act_dim: int, low, high) -> PlanState:
        _check_init(horizon, act_dim, low, high)
        low, high = _bounds(act_dim, low, high)
        return PlanState(_middle(low, high, horizon), low, high)

    def optimize(self, objective_fn: ObjectiveFn, state: PlanState, key: jax.Array):
        low, high = state.low, state.high
        sample_key, eval_key = jax.random.split(key)
        shape = (self.population_size,) + state.mean.shape
        samples = jax.random.uniform(sample_key, shape, jnp.float32, low, high)
        samples = samples.at[0].set(state.mean)
        values = _evaluate(objective_fn, samples, eval_key)
        i = jnp.argmax(values)
        plan = samples[i]
        new_state = PlanState(_shift(plan, (low + high) / 2), low, high)
        return plan, new_state, {"best_value": values[i], "best_sequence": plan}


# The optimizers by name: what a run config's ``planner.optimizer`` and the CLI accept.
OPTIMIZERS: Dict[str, Type[TrajectoryOptimizer]] = {
    "cem": CEM,
    "icem": ICEM,
    "mppi": MPPI,
    "random_shooting": RandomShooting,
}
