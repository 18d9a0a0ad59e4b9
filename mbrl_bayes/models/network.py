"""Dynamics from any network: ``NetworkDynamics(network, obs_dim=..., act_dim=...)``.

The network maps standardized inputs ``[obs, act]`` to the standardized target ``[next_obs -
obs, reward?]``; everything else (standardization, delta targets, the bounded log-variance,
training, function draws, ``predict``) is ``GaussianDynamics``'s, as for the built-in models.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

from mbrl_bayes import layers as bl
from mbrl_bayes.models.base import Batch, Functions, Params
from mbrl_bayes.models.checks import check_training_draws, checks_num_draws
from mbrl_bayes.models.gaussian import GaussianDynamics
from mbrl_bayes.models.likelihood import mixture_nll

PureNetwork = Tuple[Callable[..., Any], Callable[..., Any]]  # (init, apply)
OBJECTIVES = ("elbo", "pets")


def _is_pair(network: Any) -> bool:
    return (isinstance(network, (tuple, list)) and len(network) == 2
            and all(callable(f) for f in network))


class NetworkDynamics(GaussianDynamics):
    """Gaussian dynamics ``s' = s + delta`` whose network is given by the user.

    ``network`` is either

    * a Haiku function ``network(x)`` (called inside ``hk.transform``; written with ``bl``
      layers, wrapped by ``bl.bayesian``, or plain Haiku), whose penalties ``bl.losses()``
      join the loss as ``kl_weight * sum(bl.losses()) / N``; or
    * a pair of pure functions ``(init, apply)``: ``init(key, x) -> params`` and
      ``apply(params, key, x) -> outputs`` (e.g. a Flax or Equinox network; no penalty).

    Its input ``x`` is ``[n, in_dim]``, the standardized ``[obs, act]`` (``in_dim = obs_dim +
    act_dim`` less the ``ignored_obs_dims``, see ``GaussianDynamics.model_inputs``); its output
    is, for the standardized target ``[next_obs - obs, reward?]`` of width ``t = obs_dim (+ 1
    with learn_reward)``:

    * ``[n, 2 t]``: the mean (first ``t`` columns) and the raw log-variance, or the tuple
      ``(mean [n, t], raw_logvar [n, t])``; the log-variance is kept inside learned soft bounds
      (PETS); or
    * ``[n, t]``: the mean only (a deterministic model: no aleatoric noise).

    A function draw is a key (``sample_functions`` returns ``{'key': [k] keys}``): draw ``i``
    is ``apply(params, key_i, x)``, applied to its ``m`` rows as one call, so the network must
    give the same function for the same key: it runs inside ``bl.estimator(
    "reparameterization")``, where every ``bl`` layer draws its weights (a dropout layer its
    mask) once per call (``bl.bayesian`` does too; a deterministic network ignores the key).
    The loss is the negative ELBO per data point with one key per minibatch: the Gaussian NLL
    (summed over target dimensions, averaged over rows) ``+ kl_weight * penalty / N`` (``N``
    the training-set size) ``+`` the log-variance bound penalty. Training runs each layer's own
    estimator on the same parameters: ``bl.DenseFlipout`` layers (per-row weights) or
    ``bl.MCDropout(rate, per_row=True)`` (per-row masks) give the rows of a minibatch
    independent noise, for lower-variance gradients, while planning still draws whole functions.

    With ``ensemble_size=k`` the network is an ensemble in layers (``bl.DenseBatchEnsemble``,
    ``bl.DenseRank1``): a function draw is ``{'member': [k], 'key': [k]}``, applied inside
    ``bl.ensemble_member(member)``; draws cycle through the members (from a random one), and
    the loss averages the NLL of every member on the same minibatch.

    Example::

        def network(x):                         # Bayesian last layer, 3 outputs -> 2 * t
            h = hk.nets.MLP([64, 64], activate_final=True)(x)
            return bl.DenseReparameterization(2 * 3)(h)

        model = models.NetworkDynamics(network, obs_dim=3, act_dim=1)
    """

    num_functions = None  # unlimited draws

    def __init__(
        self,
        network: Callable[[jax.Array], Any] | PureNetwork,
        *,
        obs_dim: int,
        act_dim: int,
        learn_reward: bool = False,
        kl_weight: float = 1.0,
        num_eval_draws: int = 8,
        ensemble_size: Optional[int] = None,
        objective: str = "elbo",
        training_draws: int = 1,
        **kwargs,
    ):
        """Args:
          network: a Haiku function ``network(x)`` or a pair ``(init, apply)`` (see above).
          obs_dim, act_dim: observation and action sizes.
          learn_reward: also predict the reward (one more target column).
          kl_weight: multiplies the network's penalty (``bl.losses()``) in the loss.
          num_eval_draws: function draws averaged by ``evaluate`` (holdout scores); with an
            ensemble, at least one per member.
          ensemble_size: the members of an ensemble-in-layers network (see above), or None.
          objective: the loss's scale. ``"elbo"``: the negative ELBO per data point, ``nll +
            kl_weight * penalty / N``. ``"pets"``: the same times ``2 / t`` (``t`` target
            columns), the scale of the PETS objective of ``ProbabilisticEnsemble`` and
            ``MCDropoutMLP``, at which the log-variance bound penalty and ``train``'s gradient
            clipping were tuned. Same minimizer, up to the weight of the bound penalty (added
            unscaled to both).
          training_draws: ``m``, the noise draws (keys) per minibatch in the loss. With ``m =
            1`` the data term is the NLL of one draw (the ELBO's). With ``m > 1`` it is each
            row's NLL under the mixture of its ``m`` draws, ``-log mean_j p(y | w_j)``: the
            PAC^m bound (Morningstar et al. 2022; Li & Gal 2017's alpha-divergence dropout
            with alpha = 1), whose variance head need not absorb the spread of the draws
            (under the ELBO it learns noise + that spread, which prediction then adds again:
            over-wide intervals on small data). ``m`` times the training cost; not with
            ``ensemble_size``.
          **kwargs: ``GaussianDynamics``'s ``max_logvar_init``, ``min_logvar_init``,
            ``logvar_bound_penalty``, ``ignored_obs_dims``.

        Raises:
          TypeError: when ``network`` is neither a function nor an ``(init, apply)`` pair.
          ValueError: when its output (traced, not run) is not one of the forms above.
        """
        super().__init__(obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=(),
                         learn_reward=learn_reward, **kwargs)
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}.")
        if int(num_eval_draws) <= 0:
            raise ValueError(f"num_eval_draws must be positive, got {num_eval_draws}.")
        if ensemble_size is not None and int(ensemble_size) <= 0:
            raise ValueError(f"ensemble_size must be positive, got {ensemble_size}.")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}.")
        training_draws = check_training_draws(training_draws)
        if training_draws > 1 and ensemble_size is not None:
            raise ValueError("training_draws > 1 is for one network's noise draws; an ensemble "
                             "in layers trains every member instead (ensemble_size).")
        self.network = network
        self.kl_weight = float(kl_weight)
        self.num_eval_draws = int(num_eval_draws)
        self.ensemble_size = None if ensemble_size is None else int(ensemble_size)
        self.objective = objective
        self.training_draws = training_draws
        if _is_pair(network):
            init, apply = network
            self._init, self._apply = init, apply
            self._apply_with_penalty = lambda p, k, x: (apply(p, k, x), jnp.zeros(()))
        elif callable(network) and not isinstance(network, (tuple, list)):
            forward = hk.transform(network)
            with_penalty = hk.transform(
                lambda x: (network(x), jnp.asarray(sum(bl.losses()), jnp.float32)))
            self._init, self._apply = forward.init, forward.apply
            self._apply_with_penalty = with_penalty.apply
        else:
            raise TypeError(
                f"NetworkDynamics needs a Haiku function network(x) or a pair (init, apply) "
                f"with init(key, x) -> params and apply(params, key, x) -> outputs, got "
                f"{network!r}.")
        self.probabilistic = self._probe_output()

    # ----------------------------------------------------------------- the network's output
    def _probe_output(self) -> bool:
        """Whether the network predicts a log-variance, from its output shapes (traced only)."""
        x = jax.ShapeDtypeStruct((2, self.in_dim), jnp.float32)

        def probe(key, x):
            with bl.ensemble_member(0):
                return self._apply(self._init(key, x), key, x)

        try:
            out = jax.eval_shape(probe, jax.random.PRNGKey(0), x)
        except TypeError as e:
            if _is_pair(self.network):
                raise TypeError(
                    f"NetworkDynamics: calling the pair as init(key, x) and apply(params, key, "
                    f"x) failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from e
            raise
        t = self.target_dim
        expected = (f"mean [n, {t}], mean and raw log-variance [n, {2 * t}], or a tuple "
                    f"(mean, raw_logvar) of two [n, {t}]")
        if isinstance(out, (tuple, list)):
            shapes = [getattr(o, "shape", None) for o in out]
            if len(out) != 2 or any(s != (2, t) for s in shapes):
                raise ValueError(f"NetworkDynamics: the network must return the {expected}; "
                                 f"for x [2, {self.in_dim}] it returned shapes {shapes}.")
            return True
        shape = getattr(out, "shape", None)
        if shape not in ((2, t), (2, 2 * t)):
            raise ValueError(f"NetworkDynamics: the network must return the {expected}; for x "
                             f"[2, {self.in_dim}] it returned shape {shape}.")
        return shape == (2, 2 * t)

    def _outputs(self, out: Any) -> Tuple[jax.Array, Optional[jax.Array]]:
        """``(mean, raw_logvar)`` ([..., t] each; ``raw_logvar`` None if deterministic)."""
        if isinstance(out, (tuple, list)):
            return out[0], out[1]
        if not self.probabilistic:
            return out, None
        return out[..., : self.target_dim], out[..., self.target_dim:]

    # ----------------------------------------------------------------- GaussianDynamics hooks
    def _init_net(self, key: jax.Array, x: jax.Array) -> Any:
        return self._init(key, x)

    def _per_draw(self, apply: Callable, net: Any, fns: Functions, x: jax.Array,
                  x_axis: Optional[int] = 0) -> Any:
        """``apply(net, key_i, x_i)`` for every draw ``i`` (inside ``bl.ensemble_member``
        with an ensemble)."""
        if self.ensemble_size is None:
            return jax.vmap(lambda k, rows: apply(net, k, rows), (0, x_axis))(fns["key"], x)

        def member_apply(member, k, rows):
            with bl.ensemble_member(member):
                return apply(net, k, rows)

        return jax.vmap(member_apply, (0, 0, x_axis))(fns["member"], fns["key"], x)

    def _apply_net(self, net: Any, fns: Functions, key: jax.Array, x: jax.Array) -> Any:
        # Function draws (planning, predict, evaluate): per-row estimators (flipout, local
        # reparameterization, per-row dropout masks) are for training, so every ``bl`` layer
        # draws its weights from the draw's key: one function per key.
        del key
        with bl.estimator("reparameterization"):
            out = self._per_draw(self._apply, net, fns, x)
        mean, raw_logvar = self._outputs(out)
        return mean if raw_logvar is None else (mean, raw_logvar)

    @checks_num_draws
    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        if self.ensemble_size is None:
            return {"key": jax.random.split(key, k)}
        member_key, key = jax.random.split(key)
        first = jax.random.randint(member_key, (), 0, self.ensemble_size)
        members = (jnp.arange(k) + first) % self.ensemble_size
        return {"member": members.astype(jnp.int32), "key": jax.random.split(key, k)}

    def eval_functions(self, params: Params, key: jax.Array) -> Functions:
        k = self.num_eval_draws
        if self.ensemble_size is not None:
            k = -(-k // self.ensemble_size) * self.ensemble_size
        return self.sample_functions(params, key, k)

    def kl(self, params: Params) -> jax.Array:
        """The network's penalty ``sum(bl.losses())`` (the KL divergence of a variational
        network's weight posterior from its prior; zero for an ``(init, apply)`` pair), as
        ``loss`` reports it in ``kl``."""
        x = jnp.zeros((1, self.in_dim), jnp.float32)
        with bl.ensemble_member(0):
            return self._apply_with_penalty(params["net"], jax.random.PRNGKey(0), x)[1]

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> Tuple[jax.Array, dict]:
        """The training loss of a minibatch (``batch`` arrays [B, ...]), the network run with
        its layers' own estimators and one key per minibatch; ``t`` target columns, ``N``
        training points, ``nll_e`` the mean per-point Gaussian NLL of member ``e``
        (``models.gaussian_nll``; unit variance without a log-variance; one member without
        ``ensemble_size``):

        * ``objective="elbo"``: the negative ELBO per data point, ``mean_e(nll_e) + kl_weight *
          penalty / N``;
        * ``objective="pets"``: PETS's objective (``ProbabilisticEnsemble``'s, on one
          minibatch), ``(2 / t) * (sum_e(nll_e) + kl_weight * penalty / N)``;

        each plus the log-variance bound penalty. Metrics ``nll`` (nats per transition, of the
        predictive Gaussian), ``mse`` (standardized units) and ``kl`` (the penalty)."""
        if self.training_draws > 1:
            return self._mixture_loss(params, key, batch)
        if self.objective == "pets":
            return self._pets_loss(params, key, batch)
        obs, act, target = self.standardized_targets(params, batch)
        stats = jax.lax.stop_gradient(params["stats"])
        x = stats["input"].normalize(self.model_inputs(obs, act))
        if self.ensemble_size is None:
            out, penalty = self._apply_with_penalty(params["net"], key, x)
        else:  # every member on the minibatch; the penalty does not depend on the member
            fns = self.sample_functions(params, key, self.ensemble_size)
            out, penalty = self._per_draw(self._apply_with_penalty, params["net"], fns, x,
                                          x_axis=None)
            penalty = penalty.mean()
        mean, raw_logvar = self._outputs(out)
        logvar = None if raw_logvar is None else self._bounded_logvar(params, raw_logvar)
        loss = self._elbo_objective(
            params, self._training_nll(mean, logvar, target).mean(), penalty, self.kl_weight)
        return loss, self._metrics(mean, logvar, target, penalty)

    def _pets_loss(self, params: Params, key: jax.Array,
                   batch: Batch) -> Tuple[jax.Array, dict]:
        """``loss`` with ``objective="pets"``: every member on the minibatch as a function draw
        [k, B, ...], as ``ProbabilisticEnsemble`` trains its members."""
        obs, act, target = self.standardized_targets(params, batch)
        if self.ensemble_size is None:
            fns = {"key": key[None]}
        else:
            fns = self.sample_functions(params, key, self.ensemble_size)
        k = jax.tree_util.tree_leaves(fns)[0].shape[0]
        obs, act = (jnp.broadcast_to(a, (k,) + a.shape) for a in (obs, act))
        stats = jax.lax.stop_gradient(params["stats"])
        x = stats["input"].normalize(self.model_inputs(obs, act))
        out, penalty = self._per_draw(self._apply_with_penalty, params["net"], fns, x)
        penalty = penalty.mean()
        # jnp.split, as GaussianDynamics splits function draws, not _outputs' slices: equal
        # values, but gradients that differ in the last bit; this way MCDropoutMLP trains
        # exactly as it did before it was a NetworkDynamics.
        if isinstance(out, (tuple, list)):
            mean, raw_logvar = out
        elif self.probabilistic:
            mean, raw_logvar = jnp.split(out, 2, axis=-1)
        else:
            mean, raw_logvar = out, None
        logvar = None if raw_logvar is None else self._bounded_logvar(params, raw_logvar)
        nll = self._training_nll(mean, logvar, target).mean(-1)  # [k]
        loss = self._pets_objective(params, nll) + (2.0 / self.target_dim) * self._kl_per_point(
            params, penalty, self.kl_weight)
        return loss, self._metrics(mean, logvar, target, penalty)

    def _mixture_loss(self, params: Params, key: jax.Array,
                      batch: Batch) -> Tuple[jax.Array, dict]:
        """``loss`` with ``training_draws = m > 1``: the network run ``m`` times on the
        minibatch with its layers' own estimators (keys ``split(key, m)``), each row scored by
        the NLL of the equal mixture of its ``m`` predictive Gaussians, then the objective's
        scale and penalty as with one draw. Metric ``nll``: the mixture's."""
        obs, act, target = self.standardized_targets(params, batch)
        stats = jax.lax.stop_gradient(params["stats"])
        x = stats["input"].normalize(self.model_inputs(obs, act))
        out, penalty = self._per_draw(self._apply_with_penalty, params["net"],
                                      {"key": jax.random.split(key, self.training_draws)}, x,
                                      x_axis=None)
        mean, raw_logvar = self._outputs(out)
        logvar = None if raw_logvar is None else self._bounded_logvar(params, raw_logvar)
        nll = mixture_nll(self._training_nll(mean, logvar, target))  # [B]
        penalty = penalty.mean()
        if self.objective == "pets":
            loss = self._pets_objective(params, nll.mean()[None]) + (
                2.0 / self.target_dim) * self._kl_per_point(params, penalty, self.kl_weight)
        else:
            loss = self._elbo_objective(params, nll.mean(), penalty, self.kl_weight)
        metrics = self._metrics(mean[0], None if logvar is None else logvar[0], target, penalty)
        # ``nll``: that of the predictive mixture the loss scores (``mse``: the first draw's).
        metrics["nll"] = mixture_nll(self._predictive_nll(mean, logvar, target)).mean()
        return loss, metrics

    def _metrics(self, mean: jax.Array, logvar: Optional[jax.Array], target: jax.Array,
                 penalty: jax.Array) -> dict:
        nll = self._predictive_nll(mean, logvar, target).mean()
        return {"nll": nll, "mse": jnp.square(mean - target).mean(), "kl": penalty}
