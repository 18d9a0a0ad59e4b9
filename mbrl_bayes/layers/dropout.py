"""MC dropout as a layer: dropout kept on at prediction time, a function draw is a key."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mbrl_bayes.layers.modes import PER_ROW_ESTIMATORS, is_posterior_mean
from mbrl_bayes.layers.module import BayesianModule, check_floating


class MCDropout(BayesianModule):
    """Dropout (Gal & Ghahramani 2016) whose mask is drawn from ``hk.next_rng_key()``.

    ``out = inputs * mask / (1 - rate)`` with ``mask ~ Bernoulli(1 - rate)``, at training *and*
    prediction time: the network's distribution over functions. Two ways to draw the mask,
    chosen by the estimator (:meth:`estimator`: ``per_row``, or the ``bl.estimator`` context):

    * one mask per call (``"reparameterization"``, ``per_row=False``, the default): shape
      ``[features]`` (the last axis), shared by every row, so the same key gives the same
      function, as for the reparameterization layers. For planning: with a function axis
      first (``jax.vmap`` over keys, inputs ``[k, m, d]``) each draw is one mask for its ``m``
      rows.
    * a mask per row (``"flipout"`` or ``"local_reparameterization"``, ``per_row=True``):
      shape ``inputs.shape``, independent for every element as ``hk.dropout``'s. For
      training: rows of a minibatch get independent masks, as Flipout gives them independent
      weights.

    At the posterior mean (``bl.posterior_mean()``) and in ``init`` it is the identity (the
    mean of ``mask / (1 - rate)`` is one) and takes no key. No parameters, no penalty.
    """

    def __init__(self, rate: float, per_row: bool = False, name: Optional[str] = None):
        """Args:
          rate: probability of dropping a unit, in ``[0, 1)``.
          per_row: draw a mask per row (the training estimator) instead of one per call,
            unless a ``bl.estimator`` context chooses.
          name: module name.

        Raises:
          ValueError: for a ``rate`` outside ``[0, 1)``.
        """
        super().__init__(name=name)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"MCDropout rate must be in [0, 1), got {rate}.")
        self.rate = float(rate)
        self.per_row = bool(per_row)
        self._default_estimator = "flipout" if self.per_row else "reparameterization"

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Applies one function draw: ``inputs`` ``[..., features]`` (at least rank 1), floating
        point, to the same shape."""
        inputs = jnp.asarray(inputs)
        layer = type(self).__name__
        if not inputs.shape:
            raise ValueError(f"{layer} input must not be a scalar: expected [..., features].")
        check_floating(inputs, layer)
        if self.rate == 0.0 or is_posterior_mean():
            return inputs
        key = self.next_weight_key()
        if key is None:  # init
            return inputs
        shape = inputs.shape if self.estimator() in PER_ROW_ESTIMATORS else inputs.shape[-1:]
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(key, keep, shape)
        return jnp.where(mask, inputs / keep, jnp.zeros((), inputs.dtype))
