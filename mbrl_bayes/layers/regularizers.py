"""Distributional regularizers: penalties ``KL(q || p)`` of a weight posterior ``q``.

A regularizer maps a weight distribution (what a trainable initializer returns) to a scalar
penalty, summed over all weights of the tensor. ``KL(q || p)`` is analytic where distrax
registers it (normal vs normal) and a Monte Carlo estimate otherwise.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Optional, Union

import distrax
import jax
import jax.numpy as jnp

from mbrl_bayes.layers._validation import check_positive

# Used only when a Monte Carlo penalty is computed without an rng (e.g. ``apply(params, None,
# ...)`` at the posterior mean): the estimate is then deterministic.
_FALLBACK_MC_SEED = 0


class Regularizer(abc.ABC):
    """A penalty on a weight distribution."""

    @abc.abstractmethod
    def __call__(self, posterior: distrax.Distribution,
                 key: Optional[jax.Array] = None) -> jax.Array:
        """Returns a scalar penalty.

        Args:
          posterior: the weights' distribution, batch shape = the weight shape.
          key: PRNG key for Monte Carlo estimates (ignored by analytic penalties).
        """


class _KLPenalty(Regularizer):
    """``scale_factor * KL(q || p)``, summed over every weight, ``p = prior_distribution()``."""

    scale_factor: float
    num_samples: int

    @abc.abstractmethod
    def prior_distribution(self) -> distrax.Distribution:
        """The prior ``p``, scalar event shape, broadcast over the weights."""

    def _check_num_samples(self) -> None:
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) \
                or self.num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {self.num_samples!r}.")

    def __call__(self, posterior: distrax.Distribution,
                 key: Optional[jax.Array] = None) -> jax.Array:
        try:
            kl = jnp.sum(posterior.kl_divergence(self.prior_distribution()))
        except NotImplementedError:
            kl = self.monte_carlo(posterior, key)
        return self.scale_factor * kl

    def monte_carlo(self, posterior: distrax.Distribution,
                    key: Optional[jax.Array] = None) -> jax.Array:
        """The Monte Carlo estimate ``mean_s sum [log q(w_s) - log p(w_s)]``, ``w_s ~ q``, of
        ``KL(q || p)`` over ``num_samples`` draws (without ``scale_factor``)."""
        if key is None:
            key = jax.random.PRNGKey(_FALLBACK_MC_SEED)
        weights = posterior.sample(seed=key, sample_shape=self.num_samples)
        log_ratio = posterior.log_prob(weights) - self.prior_distribution().log_prob(weights)
        return jnp.sum(log_ratio) / self.num_samples


@dataclasses.dataclass(frozen=True)
class KLDivergence(_KLPenalty):
    """``scale_factor * KL(q || prior)`` for any distrax ``prior``, summed over the weights.

    Analytic when distrax registers ``KL(type(q) || type(prior))``; otherwise the unbiased
    Monte Carlo estimate over ``num_samples`` draws ``w_s ~ q`` (keys from ``hk.next_rng_key()``
    when ``bl.losses()`` runs). For a point-mass ``q`` (``TrainableDeterministic``) that estimate
    is ``-log prior(w)``: MAP weight decay rather than an (infinite) KL.

    Attributes:
      prior: a distrax distribution with scalar event shape, broadcast over the weights.
      scale_factor: multiplies the penalty.
      num_samples: Monte Carlo draws per evaluation (only used without an analytic KL).
    """

    prior: distrax.Distribution
    scale_factor: float = 1.0
    num_samples: int = 1

    def __post_init__(self):
        if not isinstance(self.prior, distrax.Distribution):
            raise TypeError(f"KLDivergence needs a distrax prior, got {self.prior!r}.")
        if self.prior.event_shape != ():
            raise ValueError(
                f"KLDivergence needs a prior with scalar event shape (it is broadcast over the "
                f"weights), got event shape {self.prior.event_shape}.")
        self._check_num_samples()

    def prior_distribution(self) -> distrax.Distribution:
        return self.prior


@dataclasses.dataclass(frozen=True)
class NormalKLDivergence(_KLPenalty):
    """``scale_factor * KL(q || N(mean, stddev**2))`` per weight, summed (Edward2's default).

    Analytic for normal (and Monte Carlo for other) posteriors.
    """

    mean: float = 0.0
    stddev: float = 1.0
    scale_factor: float = 1.0
    num_samples: int = 1

    def __post_init__(self):
        check_positive(self.stddev, "NormalKLDivergence's stddev")
        self._check_num_samples()

    def prior_distribution(self) -> distrax.Distribution:
        return distrax.Normal(self.mean, self.stddev)


@dataclasses.dataclass(frozen=True)
class LaplaceKLDivergence(_KLPenalty):
    """``scale_factor * KL(q || Laplace(loc, scale))`` per weight, summed.

    A sparsity-promoting prior. No closed form against a normal posterior: a Monte Carlo
    estimate over ``num_samples`` draws (keys from ``hk.next_rng_key()`` when ``bl.losses()``
    runs).
    """

    loc: float = 0.0
    scale: float = 1.0
    scale_factor: float = 1.0
    num_samples: int = 1

    def __post_init__(self):
        check_positive(self.scale, "LaplaceKLDivergence's scale")
        self._check_num_samples()

    def prior_distribution(self) -> distrax.Distribution:
        return distrax.Laplace(self.loc, self.scale)


_REGULARIZERS = {
    "normal_kl_divergence": NormalKLDivergence,
    "laplace_kl_divergence": LaplaceKLDivergence,
}

RegularizerLike = Union[None, str, Regularizer]


def get_regularizer(identifier: RegularizerLike) -> Optional[Regularizer]:
    """Resolves a regularizer from its snake_case name, e.g. ``"normal_kl_divergence"``.

    ``None`` (no penalty) and instances pass through unchanged.

    Raises:
      ValueError: for an unknown name.
      TypeError: for anything else that is not a ``Regularizer``.
    """
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        try:
            return _REGULARIZERS[identifier]()
        except KeyError:
            raise ValueError(
                f"Unknown regularizer {identifier!r}; known names: "
                f"{', '.join(sorted(_REGULARIZERS))}.") from None
    raise TypeError(
        f"Expected a regularizer (a bl.Regularizer, one of the names "
        f"{', '.join(sorted(_REGULARIZERS))}, or None), got {identifier!r}.")
