"""Trainable initializers: parameterized distributions over a weight tensor.

A Keras initializer returns an array; a trainable initializer returns a *distribution* whose
parameters it creates with :func:`haiku.get_parameter` in the calling module. Every distribution
here is mean-field (batch shape == the weight shape, event shape ``()``), so the weight tensor
is one elementwise-independent draw.

Parameter names, for a weight called ``name`` (``"w"`` for kernels, ``"b"`` for biases):

============================== ===========================================================
initializer                    parameters
============================== ===========================================================
``TrainableNormal`` (+ He,     ``{name}_loc`` and ``{name}_raw_scale``;
Glorot)                        ``scale = softplus({name}_raw_scale)``
``TrainableNormalFixedStddev`` ``{name}_loc`` (the scale is a constant)
``TrainableDeterministic``     ``{name}`` (a point mass: the same name ``hk.Linear`` uses)
============================== ===========================================================
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Optional, Sequence, Union

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from mbrl_bayes.layers._validation import check_positive

Initializer = hk.initializers.Initializer


def fan_in_truncated_normal(shape: Sequence[int]) -> Initializer:
    """The kernels' default mean init: exactly the default ``w_init`` of ``hk.Linear`` and
    ``hk.ConvND``, ``TruncatedNormal(stddev=1 / sqrt(fan_in))`` with ``fan_in =
    prod(shape[:-1])``, so one key gives the posterior mean the weights Haiku would give."""
    return hk.initializers.TruncatedNormal(stddev=1. / np.sqrt(np.prod(shape[:-1])))


# softplus(-3) ~= 0.049, Edward2's TrainableNormal's initial stddev (Edward2 jitters the raw
# scale by TruncatedNormal(stddev=0.1); a constant takes no rng, so initialising a Bayesian
# network uses the same keys, in the same order, as initialising its Haiku counterpart).
_DEFAULT_RAW_SCALE_INIT = hk.initializers.Constant(-3.0)


class TrainableInitializer(abc.ABC):
    """Creates the variational parameters of one weight tensor and returns its distribution.

    Attributes:
      loc_init: initializer of the distribution's mean (``loc``). ``None`` defers to the layer's
        default: for kernels the initializer ``hk.Linear`` and ``hk.Conv2D`` initialise ``w``
        with (truncated normal, stddev ``1 / sqrt(fan_in)``), for biases zeros. A layer's
        ``w_init`` / ``b_init`` replaces it, with the meaning it has for the Haiku layer: the
        mean is created with ``hk.get_parameter(..., init=w_init)``, as Haiku creates ``w``.

    To write one: a frozen dataclass with a ``loc_init`` field (``with_loc_init`` uses
    ``dataclasses.replace``) whose ``__call__`` creates parameters named ``{name}_...``.
    """

    loc_init: Optional[Initializer]

    @abc.abstractmethod
    def __call__(self, name: str, shape: Sequence[int], dtype: jnp.dtype,
                 default_loc_init: Initializer) -> distrax.Distribution:
        """Returns the distribution of weight ``name`` (batch shape ``shape``, event shape ``()``).

        Must run inside a Haiku module: parameters are created (or, in ``apply``, read) with
        ``hk.get_parameter`` under names prefixed by ``name``.

        Args:
          name: the weight's name within its module, e.g. ``"w"`` or ``"b"``.
          shape: the weight's shape.
          dtype: the parameters' dtype.
          default_loc_init: the layer's mean initializer, used when ``loc_init`` is ``None``.
        """

    def with_loc_init(self, loc_init: Optional[Initializer]) -> "TrainableInitializer":
        """A copy whose mean is initialised by ``loc_init`` (unchanged when it is ``None``)."""
        if loc_init is None:
            return self
        return dataclasses.replace(self, loc_init=loc_init)  # type: ignore[type-var]

    def _loc(self, name: str, shape: Sequence[int], dtype: jnp.dtype,
             default_loc_init: Initializer, param_name: str) -> jax.Array:
        loc_init = self.loc_init if self.loc_init is not None else default_loc_init
        return hk.get_parameter(param_name, list(shape), dtype, init=loc_init)


@dataclasses.dataclass(frozen=True)
class TrainableNormal(TrainableInitializer):
    """Mean-field normal ``N(loc, softplus(raw_scale)**2)`` with trainable ``loc`` and scale.

    Attributes:
      loc_init: initializer of ``{name}_loc`` (``None``: the layer's default, see base class).
      raw_scale_init: initializer of ``{name}_raw_scale``, the pre-softplus stddev. The default,
        ``Constant(-3)``, starts every stddev at ``softplus(-3) ~= 0.049`` (Edward2's mean
        value) and takes no rng key; ``TruncatedNormal(stddev=0.1, mean=-3.0)`` is Edward2's.
    """

    loc_init: Optional[Initializer] = None
    raw_scale_init: Initializer = _DEFAULT_RAW_SCALE_INIT

    def __call__(self, name: str, shape: Sequence[int], dtype: jnp.dtype,
                 default_loc_init: Initializer) -> distrax.Distribution:
        loc = self._loc(name, shape, dtype, default_loc_init, f"{name}_loc")
        raw_scale = hk.get_parameter(f"{name}_raw_scale", list(shape), dtype,
                                     init=self.raw_scale_init)
        return distrax.Normal(loc, jax.nn.softplus(raw_scale))


@dataclasses.dataclass(frozen=True)
class TrainableHeNormal(TrainableNormal):
    """``TrainableNormal`` whose mean starts He-normal: truncated normal, variance 2 / fan_in."""

    loc_init: Optional[Initializer] = dataclasses.field(
        default_factory=lambda: hk.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal"))


@dataclasses.dataclass(frozen=True)
class TrainableGlorotNormal(TrainableNormal):
    """``TrainableNormal`` whose mean starts Glorot-normal: truncated normal, variance
    2 / (fan_in + fan_out)."""

    loc_init: Optional[Initializer] = dataclasses.field(
        default_factory=lambda: hk.initializers.VarianceScaling(1.0, "fan_avg", "truncated_normal"))


@dataclasses.dataclass(frozen=True)
class TrainableNormalFixedStddev(TrainableInitializer):
    """Normal ``N(loc, stddev**2)`` with trainable ``loc`` and a fixed, positive ``stddev``."""

    stddev: float = 1.0
    loc_init: Optional[Initializer] = None

    def __post_init__(self):
        check_positive(self.stddev, "TrainableNormalFixedStddev's stddev")

    def __call__(self, name: str, shape: Sequence[int], dtype: jnp.dtype,
                 default_loc_init: Initializer) -> distrax.Distribution:
        loc = self._loc(name, shape, dtype, default_loc_init, f"{name}_loc")
        return distrax.Normal(loc, jnp.full(loc.shape, self.stddev, dtype))


@dataclasses.dataclass(frozen=True)
class TrainableDeterministic(TrainableInitializer):
    """A point mass at a trainable ``{name}``: an ordinary (non-Bayesian) weight.

    The default bias of every Bayesian layer, as in Edward2; as a kernel initializer it turns a
    Bayesian layer back into its Haiku counterpart, with the same parameter names.
    """

    loc_init: Optional[Initializer] = None

    def __call__(self, name: str, shape: Sequence[int], dtype: jnp.dtype,
                 default_loc_init: Initializer) -> distrax.Distribution:
        return distrax.Deterministic(self._loc(name, shape, dtype, default_loc_init, name))


_INITIALIZERS = {
    "trainable_normal": TrainableNormal,
    "trainable_he_normal": TrainableHeNormal,
    "trainable_glorot_normal": TrainableGlorotNormal,
    "trainable_normal_fixed_stddev": TrainableNormalFixedStddev,
    "trainable_deterministic": TrainableDeterministic,
}

InitializerLike = Union[str, TrainableInitializer]


def get_initializer(identifier: InitializerLike) -> TrainableInitializer:
    """Resolves a trainable initializer from its snake_case name, e.g. ``"trainable_normal"``.

    Instances pass through unchanged; a name builds the initializer with its defaults.

    Raises:
      ValueError: for an unknown name.
      TypeError: for anything that is neither a name nor a ``TrainableInitializer``.
    """
    if isinstance(identifier, TrainableInitializer):
        return identifier
    if isinstance(identifier, str):
        try:
            return _INITIALIZERS[identifier]()
        except KeyError:
            raise ValueError(
                f"Unknown trainable initializer {identifier!r}; known names: "
                f"{', '.join(sorted(_INITIALIZERS))}.") from None
    raise TypeError(
        f"Expected a trainable initializer (a bl.TrainableInitializer or one of the names "
        f"{', '.join(sorted(_INITIALIZERS))}), got {identifier!r}. To initialise the posterior "
        f"mean with a Haiku initializer, pass it as w_init= / b_init= or as "
        f"bl.TrainableNormal(loc_init=...).")
