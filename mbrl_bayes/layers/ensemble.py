"""Efficient ensembles as layers: ``DenseBatchEnsemble`` (Wen et al. 2020) and ``DenseRank1``
(Dusenberry et al. 2020), k members at about the cost of one ``hk.Linear``.

Member ``i`` computes ``((x * alpha[i]) @ W) * gamma[i] + b[i]``: one shared weight matrix
``W`` [n_in, n_out] and per-member rank-1 factors ``alpha`` [k, n_in], ``gamma`` [k, n_out]
(points for the batch ensemble, mean-field normal distributions for rank-1 BNNs). Which
member runs is set around the call with :func:`ensemble_member`; applied under ``jax.vmap``
over members (function axis first: ``x`` [k, m, n_in]) the k members' products are one matrix
product with ``W``, never k weight matrices.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional

import haiku as hk
import jax
import jax.numpy as jnp
from jax import lax

from mbrl_bayes.layers.initializers import (
    Initializer,
    InitializerLike,
    fan_in_truncated_normal,
    get_initializer,
)
from mbrl_bayes.layers.module import BayesianModule, check_floating
from mbrl_bayes.layers.regularizers import (
    NormalKLDivergence,
    RegularizerLike,
    get_regularizer,
)

# Dusenberry et al.'s prior on the rank-1 factors: centred on 1, the identity factor.
FACTOR_PRIOR = NormalKLDivergence(mean=1.0, stddev=1.0)

_MEMBER = contextvars.ContextVar("mbrl_bayes_layers_ensemble_member", default=None)


@contextlib.contextmanager
def ensemble_member(member: Any) -> Iterator[None]:
    """Runs the ensemble layers (``DenseBatchEnsemble``, ``DenseRank1``) traced inside as
    member ``member``: an int or an integer scalar array, which may be traced (e.g. the mapped
    index under ``jax.vmap`` over members). Read at trace time, like ``bl.posterior_mean()``::

        def member_apply(params, key, member, x):
            with bl.ensemble_member(member):
                return model.apply(params, key, x)

        outs = jax.vmap(member_apply, (None, None, 0, 0))(params, key, jnp.arange(k), x)
    """
    if member is None:
        raise TypeError("bl.ensemble_member needs a member index, got None.")
    token = _MEMBER.set(member)
    try:
        yield
    finally:
        _MEMBER.reset(token)


def current_member() -> Optional[Any]:
    """The member set by the innermost :func:`ensemble_member`, or None."""
    return _MEMBER.get()


def _fast_weight_init() -> Initializer:
    # Wen et al.'s random-sign-free variant (uncertainty-baselines' random_sign_init=-0.5):
    # N(1, 0.5^2) factors, so that members differ from the start even on the same batches.
    return hk.initializers.RandomNormal(stddev=0.5, mean=1.0)


class _DenseEnsemble(BayesianModule):
    """Shared weight ``w`` and the bias ``b`` [k, n_out] of both ensemble layers."""

    def __init__(self, output_size: int, ensemble_size: int, with_bias: bool,
                 w_init: Optional[Initializer], b_init: Optional[Initializer],
                 name: Optional[str]):
        super().__init__(name=name)
        if int(output_size) <= 0 or int(ensemble_size) <= 0:
            raise ValueError(f"{type(self).__name__}: output_size and ensemble_size must be "
                             f"positive, got {output_size} and {ensemble_size}.")
        self.output_size = int(output_size)
        self.ensemble_size = int(ensemble_size)
        self.with_bias = with_bias
        self.w_init = w_init
        self.b_init = b_init

    def _member(self) -> Any:
        member = current_member()
        if member is None:
            if hk.running_init():
                return 0  # the parameters do not depend on the member
            raise ValueError(
                f"{type(self).__name__} '{self.module_name}' needs an ensemble member: apply it "
                f"inside bl.ensemble_member(i) (models.NetworkDynamics(..., ensemble_size=k) "
                f"does that for each function draw).")
        return member

    def _shared(self, inputs: jax.Array) -> tuple:
        inputs = jnp.asarray(inputs)
        layer = type(self).__name__
        if not inputs.shape:
            raise ValueError(f"{layer} input must not be a scalar: expected [..., features].")
        check_floating(inputs, layer)
        n_in = inputs.shape[-1]
        self.check_feature_size("input_size", n_in, "input features")
        shape = (n_in, self.output_size)
        w = hk.get_parameter("w", shape, inputs.dtype,
                             init=self.w_init or fan_in_truncated_normal(shape))
        b = None
        if self.with_bias:
            b = hk.get_parameter("b", [self.ensemble_size, self.output_size], inputs.dtype,
                                 init=self.b_init or jnp.zeros)
        return inputs, w, b

    def _combine(self, inputs, w, alpha, gamma, b, member, precision) -> jax.Array:
        out = jnp.dot(inputs * alpha[member], w, precision=precision) * gamma[member]
        return out if b is None else out + b[member]


class DenseBatchEnsemble(_DenseEnsemble):
    """``hk.Linear`` as a batch ensemble of ``ensemble_size`` members (Wen et al. 2020).

    Member ``i`` (set with :func:`ensemble_member`) computes
    ``((inputs * alpha[i]) @ w) * gamma[i] + b[i]``. Parameters: ``w`` [n_in, n_out] (shared,
    ``hk.Linear``'s initializer), ``alpha`` [k, n_in], ``gamma`` [k, n_out] (``N(1, 0.5^2)``,
    so members differ from the start) and ``b`` [k, n_out]. A function draw is a member.
    """

    def __init__(
        self,
        output_size: int,
        ensemble_size: int,
        with_bias: bool = True,
        w_init: Optional[Initializer] = None,
        b_init: Optional[Initializer] = None,
        name: Optional[str] = None,
        *,
        alpha_init: Optional[Initializer] = None,
        gamma_init: Optional[Initializer] = None,
    ):
        super().__init__(output_size, ensemble_size, with_bias, w_init, b_init, name)
        self.alpha_init = alpha_init or _fast_weight_init()
        self.gamma_init = gamma_init or _fast_weight_init()

    def __call__(self, inputs: jax.Array, *,
                 precision: Optional[lax.Precision] = None) -> jax.Array:
        """``inputs`` [..., n_in] -> [..., output_size] for the current member."""
        inputs, w, b = self._shared(inputs)
        k, dtype = self.ensemble_size, inputs.dtype
        alpha = hk.get_parameter("alpha", [k, inputs.shape[-1]], dtype, init=self.alpha_init)
        gamma = hk.get_parameter("gamma", [k, self.output_size], dtype, init=self.gamma_init)
        return self._combine(inputs, w, alpha, gamma, b, self._member(), precision)


class DenseRank1(_DenseEnsemble):
    """``hk.Linear`` as a rank-1 Bayesian ensemble (Dusenberry et al. 2020).

    As :class:`DenseBatchEnsemble`, but the factors ``alpha`` [k, n_in] and ``gamma``
    [k, n_out] are distributions (default mean-field normal, means ``N(1, 0.5^2)``, with
    ``KL(q || N(1, 1))`` in ``bl.losses()``), drawn from ``hk.next_rng_key()``: a function
    draw is a member and a key, and the same pair gives the same function. Under
    ``bl.posterior_mean()`` the factors are their means. Parameters: ``w``, ``b`` as the batch
    ensemble's; ``alpha_loc``, ``alpha_raw_scale``, ``gamma_loc``, ``gamma_raw_scale``.
    """

    def __init__(
        self,
        output_size: int,
        ensemble_size: int,
        with_bias: bool = True,
        w_init: Optional[Initializer] = None,
        b_init: Optional[Initializer] = None,
        name: Optional[str] = None,
        *,
        alpha_initializer: InitializerLike = "trainable_normal",
        gamma_initializer: InitializerLike = "trainable_normal",
        alpha_regularizer: RegularizerLike = FACTOR_PRIOR,
        gamma_regularizer: RegularizerLike = FACTOR_PRIOR,
    ):
        super().__init__(output_size, ensemble_size, with_bias, w_init, b_init, name)
        self.alpha_initializer = get_initializer(alpha_initializer)
        self.gamma_initializer = get_initializer(gamma_initializer)
        self.alpha_regularizer = get_regularizer(alpha_regularizer)
        self.gamma_regularizer = get_regularizer(gamma_regularizer)

    def __call__(self, inputs: jax.Array, *,
                 precision: Optional[lax.Precision] = None) -> jax.Array:
        """``inputs`` [..., n_in] -> [..., output_size] for the current member and key."""
        inputs, w, b = self._shared(inputs)
        k, dtype = self.ensemble_size, inputs.dtype
        alpha = self.weight_distribution("alpha", (k, inputs.shape[-1]), dtype,
                                         self.alpha_initializer, self.alpha_regularizer,
                                         _fast_weight_init())
        gamma = self.weight_distribution("gamma", (k, self.output_size), dtype,
                                         self.gamma_initializer, self.gamma_regularizer,
                                         _fast_weight_init())
        key = self.next_weight_key()
        if key is None:
            alpha, gamma = alpha.mean(), gamma.mean()
        else:
            alpha_key, gamma_key = jax.random.split(key)
            alpha, gamma = alpha.sample(seed=alpha_key), gamma.sample(seed=gamma_key)
        return self._combine(inputs, w, alpha, gamma, b, self._member(), precision)
