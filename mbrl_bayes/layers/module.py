"""The base of every Bayesian layer: variational weights, penalty records, weight keys."""

from __future__ import annotations

from typing import Optional, Sequence

import distrax
import haiku as hk
import jax
import jax.numpy as jnp

from mbrl_bayes.layers import collection
from mbrl_bayes.layers.initializers import Initializer, TrainableInitializer
from mbrl_bayes.layers.modes import current_estimator, is_posterior_mean
from mbrl_bayes.layers.regularizers import Regularizer


class BayesianModule(hk.Module):
    """A Haiku module whose weights are distributions.

    Subclasses build each weight's distribution with :meth:`weight_distribution` (which also
    records its penalty for ``bl.losses()``) and draw their randomness from
    :meth:`next_weight_key`. Layers with two estimators read the one to use from
    :meth:`estimator`: the ``bl.estimator(...)`` context's, else the class's
    ``_default_estimator``.
    """

    _default_estimator: str = "reparameterization"

    def estimator(self) -> str:
        """``"reparameterization"``, ``"flipout"`` or ``"local_reparameterization"``, decided
        at trace time (see ``bl.estimator``)."""
        return current_estimator() or self._default_estimator

    def weight_distribution(
        self,
        name: str,
        shape: Sequence[int],
        dtype: jnp.dtype,
        initializer: TrainableInitializer,
        regularizer: Optional[Regularizer],
        default_loc_init: Initializer,
    ) -> distrax.Distribution:
        """Creates (``init``) or reads (``apply``) weight ``name``'s variational parameters and
        returns its distribution; with a regularizer, records the penalty for ``bl.losses()``."""
        shape = tuple(int(d) for d in shape)
        posterior = initializer(name, shape, dtype, default_loc_init)
        if regularizer is not None:
            collection.record_penalty(collection.PenaltyRecord(
                module=self, name=name, shape=shape, dtype=dtype, initializer=initializer,
                default_loc_init=default_loc_init, regularizer=regularizer))
        return posterior

    def penalty(self, record: collection.PenaltyRecord) -> jax.Array:
        """The penalty of ``record``'s weight, from the current call's parameters.

        A module method so that Haiku re-enters this module's name scope: ``hk.get_parameter``
        then reads the same parameters the forward pass used.
        """
        posterior = record.initializer(record.name, record.shape, record.dtype,
                                       record.default_loc_init)
        return record.regularizer(posterior, hk.maybe_next_rng_key())

    def next_weight_key(self) -> Optional[jax.Array]:
        """A fresh key for a weight sample from ``hk.next_rng_key()``, or ``None`` at the
        posterior mean and in ``init``.

        ``init`` only creates parameters, so it evaluates the mean and takes no key for a
        draw: initialising a Bayesian network then takes the same keys, in the same order, as
        initialising its Haiku counterpart (one per kernel), and its posterior means start at
        the weights the Haiku network would get from the same key.

        Raises:
          ValueError: when sampling but the transformed function was applied without an rng.
        """
        if is_posterior_mean() or hk.running_init():
            return None
        key = hk.maybe_next_rng_key()
        if key is None:
            raise ValueError(
                f"{type(self).__name__} '{self.module_name}' samples its weights from "
                f"hk.next_rng_key(), but no rng was given: call apply(params, rng, ...), or "
                f"evaluate at the posterior mean with bl.posterior_mean().")
        return key

    def check_feature_size(self, attribute: str, size: int, what: str) -> None:
        """Raises ``ValueError`` when ``size`` differs from the one seen at the first call."""
        first = getattr(self, attribute, None)
        if first is None:
            setattr(self, attribute, size)
        elif first != size:
            raise ValueError(
                f"{type(self).__name__} '{self.module_name}' was first called with {first} "
                f"{what}, now with {size}: its weights have a fixed shape.")


def check_floating(inputs: jax.Array, layer: str) -> None:
    if not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise TypeError(f"{layer} needs floating-point inputs, got dtype {inputs.dtype}.")


def rademacher(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype) -> jax.Array:
    """Independent random signs (+1 / -1) of ``shape``: ``jax.random.rademacher``."""
    return jax.random.rademacher(key, tuple(shape), dtype=dtype)


def perturbation(distribution: distrax.Distribution,
                 key: Optional[jax.Array]) -> Optional[jax.Array]:
    """``w - mean(w)`` for one draw ``w`` (Flipout's ``dW``); ``None`` when it is identically
    zero (no key, or a point mass)."""
    if key is None or isinstance(distribution, distrax.Deterministic):
        return None
    if isinstance(distribution, distrax.Normal):
        scale = distribution.scale
        return scale * jax.random.normal(key, distribution.batch_shape, scale.dtype)
    return distribution.sample(seed=key) - distribution.mean()


def sample_or_mean(distribution: distrax.Distribution,
                   key: Optional[jax.Array]) -> jax.Array:
    """One draw from ``distribution`` with ``key``; its mean when ``key`` is ``None`` or it is a
    point mass (which then consumes no randomness).

    A normal draw is ``loc + scale * eps`` with ``eps = jax.random.normal(key, shape)``, as
    ``distrax.Normal.sample`` draws it.
    """
    if key is None or isinstance(distribution, distrax.Deterministic):
        return distribution.mean()
    if isinstance(distribution, distrax.Normal):
        return distribution.loc + perturbation(distribution, key)
    return distribution.sample(seed=key)
