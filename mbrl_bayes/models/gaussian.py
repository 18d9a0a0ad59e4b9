"""Shared machinery of the MLP dynamics models: ``s' = s + delta``, ``delta ~ N(mu, sigma^2)``.

A subclass supplies the network (``_init_net``, ``_apply_net``) and what a function draw is
(``sample_functions``); this class does the rest, identically for every model:

* inputs ``[obs, act]`` (``model_inputs``: without the ``ignored_obs_dims``, e.g. a root's
  unbounded x position, which the network then never sees) and targets
  ``[next_obs - obs, reward?]`` (every obs dimension) are standardized with statistics fitted on
  the data (``fit_stats``) and stored in ``params['stats']`` (never trained);
* a probabilistic head's log-variance is kept inside learned soft bounds (PETS, Chua et al.
  2018): ``logvar = max - softplus(max - raw)``, ``logvar = min + softplus(logvar - min)``, with
  the penalty
  ``0.01 * (sum(max) - sum(min))`` added to the loss;
* ``transition`` applies function draw ``i`` to rows ``obs[i]`` (function axis first);
* ``predict`` returns the predictive mixture over function draws, for calibration.

Params layout: ``{'net': ..., 'logvar_bounds': {'max', 'min'} (probabilistic only),
'stats': {'input': Normalizer, 'target': Normalizer, 'num_data': int, ...}}``. Everything except
``'stats'`` is trained.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from mbrl_bayes import sampling
from mbrl_bayes.models.base import Batch, Functions, Params, RolloutStates, Transition
from mbrl_bayes.models.checks import check_finite, check_obs_act, checks_draw_inputs
from mbrl_bayes.models.likelihood import gaussian_nll
from mbrl_bayes.models.normalization import Normalizer
from mbrl_bayes.models.transition_math import (
    bounded_variance,
    denormalized_sample,
    next_state,
    standardize,
)

# Predictive stddev (in standardized target units) reported for deterministic models, whose
# point predictions have no variance of their own; keeps their NLL finite but rightly poor.
DETERMINISTIC_STD = 1e-3

ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
}


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
    """``log(1 + exp(x))`` as ``max(x, 0) + log(1 + exp(-|x|))``, with derivative ``sigmoid(x)``.

    Within 1e-7 (absolute) of ``jax.nn.softplus`` and ~2.5x cheaper on XLA:CPU, whose ``log1p``
    and NaN guard cost more than an ``exp`` and a ``log``; the planner evaluates it twice per
    predicted dimension per particle per step (the bounded log-variance).
    """
    return jnp.maximum(x, 0.0) + jnp.log(1.0 + jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return softplus(x), jax.nn.sigmoid(x) * dx


def get_activation(activation: str | Callable[[jax.Array], jax.Array]) -> Callable:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[activation]


def _check_ignored_obs_dims(dims: Sequence[int], obs_dim: int) -> Tuple[int, ...]:
    """``dims`` as sorted distinct ints in ``[0, obs_dim)``, leaving at least one; else a
    one-line ValueError."""
    try:
        out = tuple(dims)
    except TypeError:
        out = None
    ok = out is not None and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < obs_dim
        for i in out) and len(set(out)) == len(out) < obs_dim
    if not ok:
        raise ValueError(f"ignored_obs_dims must be distinct ints in [0, obs_dim={obs_dim}) "
                         f"that leave at least one, got {dims!r}.")
    return tuple(sorted(int(i) for i in out))


def _kept_index(ignored: Tuple[int, ...], obs_dim: int) -> slice | np.ndarray:
    """Index of the obs dimensions a network sees: a slice when they are contiguous (so
    ``obs[..., index]`` is a slice, not a gather, in the planner's inner loop)."""
    kept = [i for i in range(obs_dim) if i not in ignored]
    if kept == list(range(kept[0], kept[-1] + 1)):
        return slice(kept[0], kept[-1] + 1)
    return np.asarray(kept)


def check_hidden_sizes(hidden_sizes: Sequence[int]) -> Tuple[int, ...]:
    """``hidden_sizes`` as a tuple of ints; ``ValueError`` unless every width is positive."""
    hidden_sizes = tuple(int(h) for h in hidden_sizes)
    if any(h <= 0 for h in hidden_sizes):
        raise ValueError(f"hidden_sizes must be positive, got {hidden_sizes}.")
    return hidden_sizes


class GaussianDynamics(abc.ABC):
    """Base of the MLP dynamics models; see the module docstring.

    ``ignored_obs_dims``: observation entries the network never sees (``model_inputs``), e.g.
    a task's ``absolute_position_dims``; their change is still predicted.
    """

    def __init__(
        self,
        *,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int],
        probabilistic: bool = True,
        learn_reward: bool = False,
        activation: str | Callable = "silu",
        max_logvar_init: float = 0.5,
        min_logvar_init: float = -10.0,
        logvar_bound_penalty: float = 0.01,
        ignored_obs_dims: Sequence[int] = (),
    ):
        if int(obs_dim) <= 0 or int(act_dim) <= 0:
            raise ValueError(f"obs_dim and act_dim must be positive, got {obs_dim}, {act_dim}.")
        self.ignored_obs_dims = _check_ignored_obs_dims(ignored_obs_dims, int(obs_dim))
        self._kept_obs = _kept_index(self.ignored_obs_dims, int(obs_dim))
        hidden_sizes = check_hidden_sizes(hidden_sizes)
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.hidden_sizes = hidden_sizes
        self.probabilistic = bool(probabilistic)
        self.learns_reward = bool(learn_reward)
        self.activation = get_activation(activation)
        self.max_logvar_init = float(max_logvar_init)
        self.min_logvar_init = float(min_logvar_init)
        self.logvar_bound_penalty = float(logvar_bound_penalty)

    # ----------------------------------------------------------------- subclass interface
    num_functions: Optional[int] = None
    # No whole-horizon rollout: the planner steps ``transition`` (see ``DynamicsModel``).
    rollout_states: Optional[RolloutStates] = None
    num_members: int = 1  # members trained jointly, each on its own bootstrap (``train``)

    @abc.abstractmethod
    def _init_net(self, key: jax.Array, x: jax.Array) -> Any:
        """Initial network params for standardized inputs ``x`` [n, in_dim]."""

    @abc.abstractmethod
    def _apply_net(self, net: Any, fns: Functions, key: jax.Array, x: jax.Array) -> Any:
        """Raw outputs [k, m, out_size] of draw ``i`` on standardized inputs ``x[i]`` [k, m, in]
        (or, for a probabilistic head, the tuple ``(mean, raw_logvar)``, each [k, m, t])."""

    @abc.abstractmethod
    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        """``k`` function draws from the posterior (leading axis ``k`` on every leaf)."""

    @abc.abstractmethod
    def loss(self, params: Params, key: jax.Array, batch: Batch) -> Tuple[jax.Array, dict]:
        """Training loss and metrics."""

    @abc.abstractmethod
    def eval_functions(self, params: Params, key: jax.Array) -> Functions:
        """The draws that ``evaluate`` scores (every member of an ensemble; a few weight draws
        of a variational net)."""

    def evaluate(self, params: Params, key: jax.Array, batch: Batch) -> dict:
        """Holdout metrics of ``batch`` ([n, ...] arrays), in standardized target units.

        Returns ``score`` [num_members] (MSE of each member for ensembles, of the mean over draws
        otherwise: lower is better; drives early stopping and elite selection), ``nll_score``
        [num_members] (the NLL of each member, or the mean over draws of each draw's NLL: the
        score of ``train(..., early_stopping='nll')``), ``mse`` and ``nll`` (scalars: means over
        draws). NLLs follow :mod:`~mbrl_bayes.models.likelihood` (nats per transition; see
        :meth:`_predictive_nll` for deterministic heads).
        """
        mean, logvar, target = self._holdout_prediction(params, key, batch)
        mse = jnp.square(mean - target).mean(axis=(-2, -1))  # [k]
        nll = self._predictive_nll(mean, logvar, target).mean(-1)  # [k]
        if self.num_members > 1:
            score, nll_score = mse, nll
        else:
            score = jnp.square(mean.mean(0) - target).mean()[None]
            nll_score = nll.mean()[None]
        return {"score": score, "nll_score": nll_score, "mse": mse.mean(), "nll": nll.mean()}

    def _holdout_prediction(
        self, params: Params, key: jax.Array, batch: Batch
    ) -> Tuple[jax.Array, Optional[jax.Array], jax.Array]:
        """What ``evaluate`` scores: the ``eval_functions`` draws' standardized means and
        log-variances (None if deterministic) [k, n, t] and the standardized targets [n, t]."""
        fn_key, net_key = jax.random.split(key)
        fns = self.eval_functions(params, fn_key)
        k = jax.tree_util.tree_leaves(fns)[0].shape[0]
        obs, act, target = self.standardized_targets(params, batch)
        obs, act = (jnp.broadcast_to(a, (k,) + a.shape) for a in (obs, act))
        mean, logvar = self._standardized_prediction(params, fns, net_key, obs, act)
        return mean, logvar, target

    # ----------------------------------------------------------------- sizes
    @property
    def in_dim(self) -> int:
        """Network input width: the obs dimensions it sees, then the action."""
        return self.obs_dim - len(self.ignored_obs_dims) + self.act_dim

    def model_inputs(self, obs: Any, act: Any) -> Any:
        """The network's inputs before standardization: ``obs`` [..., d] without the
        ``ignored_obs_dims``, then ``act`` [..., a] -> [..., in_dim]. Numpy in, numpy out; else
        a JAX array. Every model builds its inputs here, so a network's output (hence every
        prediction) does not depend on the ignored dimensions; it still predicts their change.
        """
        if self.ignored_obs_dims:
            obs = obs[..., self._kept_obs]
        if isinstance(obs, np.ndarray) and isinstance(act, np.ndarray):
            return np.concatenate([obs, act], axis=-1)
        return jnp.concatenate([obs, act], axis=-1)

    @property
    def target_dim(self) -> int:
        return self.obs_dim + int(self.learns_reward)

    @property
    def out_size(self) -> int:
        """Network output width: mean (and raw log-variance when probabilistic)."""
        return self.target_dim * (2 if self.probabilistic else 1)

    # ----------------------------------------------------------------- params
    def init(self, key: jax.Array, obs: jax.Array, act: jax.Array) -> Params:
        """Initial params from example ``obs`` [n, d], ``act`` [n, a] (identity normalization)."""
        check_obs_act(obs, act, self.obs_dim, self.act_dim, f"{type(self).__name__}.init",
                      axes=("n",))
        check_finite("obs", obs)
        check_finite("act", act)
        x = self.model_inputs(jnp.asarray(obs, jnp.float32), jnp.asarray(act, jnp.float32))
        x = x.reshape(-1, self.in_dim)
        params: Dict[str, Any] = {"net": self._init_net(key, x)}
        if self.probabilistic:
            params["logvar_bounds"] = {
                "max": jnp.full((self.target_dim,), self.max_logvar_init, jnp.float32),
                "min": jnp.full((self.target_dim,), self.min_logvar_init, jnp.float32),
            }
        params["stats"] = self._init_stats()
        return params

    def _init_stats(self) -> Dict[str, Any]:
        return {
            "input": Normalizer.identity(self.in_dim),
            "target": Normalizer.identity(self.target_dim),
            "num_data": jnp.asarray(1, jnp.int32),
        }

    def fit_stats(self, params: Params, data: Batch) -> Params:
        """Refits the input/target standardization on ``data`` (the training set)."""
        inputs, targets = self.inputs_targets(data)
        stats = dict(params["stats"])
        stats["input"] = Normalizer.fit(inputs)
        stats["target"] = Normalizer.fit(targets)
        stats["num_data"] = jnp.asarray(len(inputs), jnp.int32)
        return {**params, "stats": stats}

    def inputs_targets(self, data: Batch) -> Tuple[np.ndarray, np.ndarray]:
        """Model inputs (``model_inputs``) [n, in_dim], targets ``[delta, reward?]``
        [n, target_dim] (numpy)."""
        obs, act, next_obs = (np.asarray(data[f]) for f in ("obs", "act", "next_obs"))
        inputs = self.model_inputs(obs, act)
        targets = [next_obs - obs]
        if self.learns_reward:
            targets.append(np.asarray(data["reward"])[..., None])
        return inputs, np.concatenate(targets, axis=-1)

    # ----------------------------------------------------------------- forward
    def _bounded_logvar(self, params: Params, raw: jax.Array) -> jax.Array:
        bounds = params["logvar_bounds"]
        logvar = bounds["max"] - softplus(bounds["max"] - raw)
        return bounds["min"] + softplus(logvar - bounds["min"])

    def _bounded_std(self, params: Params, raw: jax.Array) -> jax.Array:
        """``exp(0.5 * _bounded_logvar(params, raw))`` (see :func:`bounded_variance`)."""
        bounds = params["logvar_bounds"]
        return jnp.sqrt(bounded_variance(raw, bounds["max"], jnp.exp(bounds["min"])))

    def _standardized_outputs(
        self, params: Params, fns: Functions, key: jax.Array, obs: jax.Array, act: jax.Array
    ) -> Tuple[jax.Array, Optional[jax.Array]]:
        """Standardized target mean and raw (unbounded) log-variance (None if deterministic),
        each [k, m, t]."""
        stats = jax.lax.stop_gradient(params["stats"])
        x = standardize(self.model_inputs(obs, act), stats["input"].mean, stats["input"].std)
        out = self._apply_net(params["net"], fns, key, x)
        if not self.probabilistic:
            return out, None
        mean, raw_logvar = out if isinstance(out, tuple) else jnp.split(out, 2, axis=-1)
        return mean, raw_logvar

    def _standardized_prediction(
        self, params: Params, fns: Functions, key: jax.Array, obs: jax.Array, act: jax.Array
    ) -> Tuple[jax.Array, Optional[jax.Array]]:
        """Standardized target mean and log-variance (None if deterministic), each [k, m, t]."""
        mean, raw_logvar = self._standardized_outputs(params, fns, key, obs, act)
        if raw_logvar is None:
            return mean, None
        return mean, self._bounded_logvar(params, raw_logvar)

    def _training_nll(
        self, mean: jax.Array, logvar: Optional[jax.Array], target: jax.Array
    ) -> jax.Array:
        """Per-point NLL [...] that training minimizes (:func:`gaussian_nll`, standardized
        units). A deterministic head (``logvar`` None) trains on a unit variance: half the
        squared error summed over dimensions, plus a constant (the MSE objective)."""
        return gaussian_nll(mean, 0.0 if logvar is None else logvar, target)

    def _predictive_nll(
        self, mean: jax.Array, logvar: Optional[jax.Array], target: jax.Array
    ) -> jax.Array:
        """Per-point NLL [...] that the model reports: that of its predictive Gaussian, so a
        deterministic head is scored with the variance ``DETERMINISTIC_STD**2`` that
        ``predict`` gives it (finite, but rightly poor), not with its training variance."""
        if logvar is None:
            logvar = jnp.asarray(2.0 * np.log(DETERMINISTIC_STD), mean.dtype)
        return gaussian_nll(mean, logvar, target)

    def _pets_objective(self, params: Params, nll: jax.Array) -> jax.Array:
        """The PETS / mbrl-lib ensemble objective from each member's mean per-point NLL ``nll``
        [E]: ``(2 / t) * sum(nll) + logvar_penalty(params)``.

        Up to the constant ``E * log(2 pi)`` this is mbrl-lib's loss, the sum over members of
        the mean over rows and dimensions of ``sq_err * exp(-logvar) + logvar`` (of ``sq_err``
        for a deterministic head); the factor ``2 / t`` keeps the log-variance bound penalty
        and the gradient clipping of ``train`` at the scale they were tuned for.
        """
        return (2.0 / self.target_dim) * nll.sum() + self.logvar_penalty(params)

    def _elbo_objective(
        self, params: Params, nll: jax.Array, kl: jax.Array, kl_weight: float
    ) -> jax.Array:
        """The negative ELBO per data point of a weight posterior: the mean per-point NLL
        ``nll`` + :meth:`_kl_per_point`, plus the log-variance bound penalty."""
        return nll + self._kl_per_point(params, kl, kl_weight) + self.logvar_penalty(params)

    def _kl_per_point(self, params: Params, kl: jax.Array, kl_weight: float) -> jax.Array:
        """``kl_weight * kl / N``, ``N`` = ``params['stats']['num_data']`` (the training set's
        size): the ELBO's KL term per data point."""
        num_data = jnp.maximum(params["stats"]["num_data"], 1).astype(jnp.float32)
        return kl_weight * kl / num_data

    def logvar_penalty(self, params: Params) -> jax.Array:
        if not self.probabilistic:
            return jnp.zeros(())
        bounds = params["logvar_bounds"]
        return self.logvar_bound_penalty * (bounds["max"].sum() - bounds["min"].sum())

    def standardized_targets(self, params: Params, batch: Batch) -> Tuple[jax.Array, ...]:
        """``obs``, ``act`` and standardized targets of a batch (any leading dims)."""
        obs, act, next_obs = batch["obs"], batch["act"], batch["next_obs"]
        targets = [next_obs - obs]
        if self.learns_reward:
            targets.append(batch["reward"][..., None])
        target = jnp.concatenate(targets, axis=-1)
        stats = jax.lax.stop_gradient(params["stats"])
        return obs, act, stats["target"].normalize(target)

    @checks_draw_inputs
    def transition(
        self,
        params: Params,
        fns: Functions,
        key: jax.Array,
        obs: jax.Array,
        act: jax.Array,
        sample_noise: bool = True,
    ) -> Transition:
        """Draw ``i`` applied to ``obs[i]`` [k, m, d], ``act[i]`` [k, m, a].

        Returns ``Transition(next_obs [k, m, d], reward [k, m] or None)``. With ``sample_noise``
        the aleatoric noise is drawn from ``key``; otherwise the predicted mean is returned.
        """
        net_key, noise_key = jax.random.split(key)
        mean, raw_logvar = self._standardized_outputs(params, fns, net_key, obs, act)
        return self._as_transition(params, obs, mean, raw_logvar, noise_key, sample_noise)

    def _as_transition(
        self, params: Params, obs: jax.Array, mean: jax.Array, raw_logvar: Optional[jax.Array],
        key: jax.Array, sample_noise: bool, carry: Any = None,
    ) -> Transition:
        """The step's ``Transition`` from the standardized target mean and raw log-variance
        [k, m, t] (None: deterministic): bounded variance, noise, denormalization and
        ``s + delta`` as :mod:`~mbrl_bayes.models.transition_math` computes them."""
        noise = logvar_max = var_min = None
        if sample_noise and raw_logvar is not None:
            noise = sampling.normal(key, mean.shape, mean.dtype)
            bounds = params["logvar_bounds"]
            logvar_max, var_min = bounds["max"], jnp.exp(bounds["min"])
        target = params["stats"]["target"]
        out = denormalized_sample(mean, raw_logvar, noise, logvar_max, var_min, target.mean,
                                  target.std)
        next_obs = next_state(obs, out)
        reward = out[..., self.obs_dim] if self.learns_reward else None
        return Transition(next_obs, reward, carry)

    @checks_draw_inputs
    def step(
        self, params: Params, fns: Functions, key: jax.Array, obs: jax.Array, act: jax.Array
    ) -> jax.Array:
        """``next_obs`` [k, m, d] of draw ``i`` on ``obs[i]``, aleatoric noise included."""
        return self.transition(params, fns, key, obs, act).next_obs

    def predict_moments(
        self, params: Params, key: jax.Array, obs: jax.Array, act: jax.Array,
        num_draws: Optional[int] = None,
    ) -> Tuple[jax.Array, jax.Array]:
        """Per-draw predictive mean and variance of ``next_obs``, each [k, n, d], for ``obs``
        [n, d].

        ``k`` is ``num_functions`` (all elites) for ensembles, else ``num_draws`` (default 20).
        """
        check_obs_act(obs, act, self.obs_dim, self.act_dim,
                      f"{type(self).__name__}.predict_moments", axes=("n",))
        k = self.num_functions or (num_draws or 20)
        fn_key, net_key = jax.random.split(key)
        fns = self.sample_functions(params, fn_key, k)
        obs_k = jnp.broadcast_to(obs, (k,) + obs.shape)
        act_k = jnp.broadcast_to(act, (k,) + act.shape)
        mean, logvar = self._standardized_prediction(params, fns, net_key, obs_k, act_k)
        std = params["stats"]["target"].std
        if logvar is None:
            var = jnp.full_like(mean, DETERMINISTIC_STD**2)
        else:
            var = jnp.exp(logvar)
        mean = params["stats"]["target"].denormalize(mean)[..., : self.obs_dim] + obs_k
        var = (var * jnp.square(std))[..., : self.obs_dim]
        return mean, var

    def predict(
        self, params: Params, key: jax.Array, obs: jax.Array, act: jax.Array,
        num_draws: Optional[int] = None,
    ) -> distrax.Distribution:
        """Predictive distribution of ``next_obs`` for ``obs`` [n, d], ``act`` [n, a]: an
        equal-weight mixture over function draws of diagonal Gaussians (batch shape [n], event
        shape [d])."""
        check_obs_act(obs, act, self.obs_dim, self.act_dim, f"{type(self).__name__}.predict",
                      axes=("n",))
        check_finite(f"{type(self).__name__}.predict: obs", obs)
        check_finite(f"{type(self).__name__}.predict: act", act)
        mean, var = self.predict_moments(params, key, obs, act, num_draws)
        loc = jnp.moveaxis(mean, 0, -2)  # [n, k, d]
        scale = jnp.sqrt(jnp.moveaxis(var, 0, -2))
        return distrax.MixtureSameFamily(
            mixture_distribution=distrax.Categorical(logits=jnp.zeros(loc.shape[:-1])),
            components_distribution=distrax.MultivariateNormalDiag(loc, scale),
        )
