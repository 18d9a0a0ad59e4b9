"""Bayesian drop-in replacements for ``hk.Linear``."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import distrax
import jax
import jax.numpy as jnp
from jax import lax

from mbrl_bayes.layers.initializers import (
    Initializer,
    InitializerLike,
    TrainableInitializer,
    fan_in_truncated_normal,
    get_initializer,
)
from mbrl_bayes.layers.module import (
    BayesianModule,
    check_floating,
    perturbation,
    rademacher,
    sample_or_mean,
)
from mbrl_bayes.layers.regularizers import RegularizerLike, get_regularizer


class LinearDraw(NamedTuple):
    """One function draw of a kernel ``W`` ``[n_in, n_out]``, as a product ``x @ W``.

    Reparameterization: ``shared`` is the draw and ``delta`` is ``None``. Flipout: ``shared``
    is ``mean(W)`` and row ``i`` sees ``mean(W) + delta * outer(sign_in[i], sign_out[i])``.
    A draw applied at several steps (a recurrent cell) is the same function at each.
    """

    shared: jax.Array
    delta: Optional[jax.Array] = None
    sign_in: Optional[jax.Array] = None
    sign_out: Optional[jax.Array] = None

    def __call__(self, inputs: jax.Array, columns: slice = slice(None),
                 precision: Optional[lax.Precision] = None) -> jax.Array:
        """``inputs @ W[:, columns]``: ``[..., n_in]`` to ``[..., len(columns)]``."""
        out = jnp.dot(inputs, self.shared[:, columns], precision=precision)
        if self.delta is not None:
            flipped = jnp.dot(inputs * self.sign_in, self.delta[:, columns], precision=precision)
            out = out + flipped * self.sign_out[..., columns]
        return out


def reparameterized_draw(kernel: distrax.Distribution, key: Optional[jax.Array],
                         rows_shape: Sequence[int]) -> Tuple[LinearDraw, Optional[jax.Array]]:
    """One draw ``W ~ kernel`` from ``split(key)[0]`` shared by every row (the mean for
    ``key=None``), and the key left for the bias, ``split(key)[1]``."""
    del rows_shape
    kernel_key, bias_key = (None, None) if key is None else jax.random.split(key)
    return LinearDraw(sample_or_mean(kernel, kernel_key)), bias_key


def flipout_draw(kernel: distrax.Distribution, key: Optional[jax.Array],
                 rows_shape: Sequence[int]) -> Tuple[LinearDraw, Optional[jax.Array]]:
    """Flipout's pseudo-independent ``W_i`` for each row of inputs ``[*rows_shape, n_in]``, and
    the key left for the bias.

    With ``(k1, k2, k3, k4) = split(key, 4)``: one perturbation ``dW = W - mean(W)`` from
    ``k1``, Rademacher signs per row and input feature from ``k2`` and per row and output
    feature from ``k3``; ``k4`` is the bias's. ``key=None``: the mean.
    """
    if key is None:
        return LinearDraw(kernel.mean()), None
    kernel_key, sign_in_key, sign_out_key, bias_key = jax.random.split(key, 4)
    delta = perturbation(kernel, kernel_key)
    if delta is None:
        return LinearDraw(kernel.mean()), bias_key
    n_in, n_out = delta.shape
    rows_shape = tuple(rows_shape)
    return LinearDraw(kernel.mean(), delta,
                      rademacher(sign_in_key, rows_shape + (n_in,), delta.dtype),
                      rademacher(sign_out_key, rows_shape + (n_out,), delta.dtype)), bias_key


# One implementation per estimator: every dense-style layer (dense, LSTM, GRU) draws from these.
LINEAR_DRAWS = {"reparameterization": reparameterized_draw, "flipout": flipout_draw}


def _linear(draw_fn, inputs, kernel, bias, key, precision):
    draw, bias_key = draw_fn(kernel, key, inputs.shape[:-1])
    out = draw(inputs, precision=precision)
    if bias is not None:
        out = out + sample_or_mean(bias, bias_key)
    return out


def reparameterized_linear(
    inputs: jax.Array,
    kernel: distrax.Distribution,
    bias: Optional[distrax.Distribution],
    key: Optional[jax.Array],
    precision: Optional[lax.Precision] = None,
) -> jax.Array:
    """``inputs @ W + b`` with one draw ``W ~ kernel``, ``b ~ bias`` shared by every row.

    Args:
      inputs: ``[..., n_in]``.
      kernel: distribution with batch shape ``[n_in, n_out]``.
      bias: distribution with batch shape ``[n_out]``, or ``None``.
      key: drives the draw (kernel from ``split(key)[0]``, bias from ``[1]``); ``None`` uses
        the means.

    Returns:
      ``[..., n_out]``.
    """
    return _linear(reparameterized_draw, inputs, kernel, bias, key, precision)


def flipout_linear(
    inputs: jax.Array,
    kernel: distrax.Distribution,
    bias: Optional[distrax.Distribution],
    key: Optional[jax.Array],
    precision: Optional[lax.Precision] = None,
) -> jax.Array:
    """``inputs @ W_i + b`` with pseudo-independent weights ``W_i`` per row (Flipout).

    With one perturbation ``dW = W - mean(W)``, ``W ~ kernel``, and random signs ``s_in``
    (per row and input feature) and ``s_out`` (per row and output feature), row ``i`` sees
    ``W_i = mean(W) + dW * outer(s_in[i], s_out[i])``, computed without materializing it::

        out = x @ mean(W) + ((x * s_in) @ dW) * s_out + b

    Each ``W_i`` has the posterior's distribution when the perturbation is symmetric about
    zero (normal and other symmetric posteriors), so every row's output has the mean and
    variance of the reparameterization estimator, with less correlation between rows.

    Args:
      inputs: ``[..., n_in]``; every leading index is a row with its own signs.
      kernel, bias, precision: as in :func:`reparameterized_linear`.
      key: ``dW``, ``s_in``, ``s_out``, ``b`` from ``split(key, 4)`` (see
        :func:`flipout_draw`); ``None`` uses the means.

    Returns:
      ``[..., n_out]``.
    """
    return _linear(flipout_draw, inputs, kernel, bias, key, precision)


def normal_scale(kernel: distrax.Distribution, layer: str) -> jax.Array:
    """The stddevs of a mean-field normal posterior (the local reparameterization needs one).

    Raises:
      TypeError: for another posterior.
    """
    if not isinstance(kernel, distrax.Normal):
        raise TypeError(f"{layer}: the local reparameterization needs a normal posterior "
                        f"(e.g. bl.TrainableNormal), got {type(kernel).__name__}.")
    return kernel.scale


def local_output_noise(mean: jax.Array, variance: jax.Array, key: jax.Array) -> jax.Array:
    """``mean + sqrt(variance) * eps``, ``eps = jax.random.normal(key)`` per output."""
    # The floor keeps the gradient finite where the variance is zero (an all-zero input row).
    std = jnp.sqrt(jnp.maximum(variance, jnp.finfo(variance.dtype).tiny))
    return mean + std * jax.random.normal(key, mean.shape, mean.dtype)


def local_reparameterized_linear(
    inputs: jax.Array,
    kernel: distrax.Distribution,
    bias: Optional[distrax.Distribution],
    key: Optional[jax.Array],
    precision: Optional[lax.Precision] = None,
) -> jax.Array:
    """``inputs @ W_i + b`` with independent weights ``W_i`` per row, sampled in output space
    (the local reparameterization, Kingma et al. 2015).

    For a mean-field normal ``W`` the outputs of a row are independent Gaussians with mean
    ``x @ loc`` and variance ``x**2 @ scale**2``: each is drawn directly, with noise
    ``jax.random.normal(split(key)[0], out.shape)``; the bias from ``split(key)[1]``. Same
    per-output distribution as :func:`reparameterized_linear`, with rows independent.

    Raises:
      TypeError: when ``kernel`` is not a ``distrax.Normal`` (a point mass is fine: no noise).
    """
    if key is None or isinstance(kernel, distrax.Deterministic):
        return reparameterized_linear(inputs, kernel, bias, key, precision)
    scale = normal_scale(kernel, "local_reparameterized_linear")
    noise_key, bias_key = jax.random.split(key)
    mean = jnp.dot(inputs, kernel.loc, precision=precision)
    variance = jnp.dot(jnp.square(inputs), jnp.square(scale), precision=precision)
    out = local_output_noise(mean, variance, noise_key)
    if bias is not None:
        out = out + sample_or_mean(bias, bias_key)
    return out


LINEAR_ESTIMATORS = {"reparameterization": reparameterized_linear, "flipout": flipout_linear,
                     "local_reparameterization": local_reparameterized_linear}


class _BayesianDense(BayesianModule):
    """Shared constructor and weights of the dense layers; subclasses pick the estimator."""

    def __init__(
        self,
        output_size: int,
        with_bias: bool = True,
        w_init: Optional[Initializer] = None,
        b_init: Optional[Initializer] = None,
        name: Optional[str] = None,
        *,
        kernel_initializer: InitializerLike = "trainable_normal",
        kernel_regularizer: RegularizerLike = "normal_kl_divergence",
        bias_initializer: InitializerLike = "trainable_deterministic",
        bias_regularizer: RegularizerLike = None,
    ):
        """Constructs the layer; the first five arguments are ``hk.Linear``'s.

        Args:
          output_size: output dimensionality.
          with_bias: whether to add a bias to the output.
          w_init: initializer of the kernel's posterior *mean*. ``None``: the kernel
            initializer's own (``TrainableHeNormal``, ...) or else ``hk.Linear``'s default,
            truncated normal with stddev ``1 / sqrt(fan_in)``.
          b_init: initializer of the bias's posterior mean. ``None``: the bias initializer's own,
            or else zeros.
          name: module name.
          kernel_initializer: the kernel's posterior (a ``TrainableInitializer`` or its name);
            default mean-field normal.
          kernel_regularizer: the kernel's penalty (a ``Regularizer``, its name or ``None``);
            default ``KL(q || N(0, 1))``.
          bias_initializer: the bias's posterior; default a point mass, as in Edward2.
          bias_regularizer: the bias's penalty; default none.
        """
        super().__init__(name=name)
        self.output_size = output_size
        self.with_bias = with_bias
        self.input_size: Optional[int] = None
        self.kernel_initializer: TrainableInitializer = (
            get_initializer(kernel_initializer).with_loc_init(w_init))
        self.bias_initializer: TrainableInitializer = (
            get_initializer(bias_initializer).with_loc_init(b_init))
        self.kernel_regularizer = get_regularizer(kernel_regularizer)
        self.bias_regularizer = get_regularizer(bias_regularizer)

    def __call__(self, inputs: jax.Array, *,
                 precision: Optional[lax.Precision] = None) -> jax.Array:
        """Applies one function draw (a key from ``hk.next_rng_key()``) to ``inputs``.

        Args:
          inputs: ``[..., n_in]`` (at least rank 1), floating point.
          precision: passed to ``jnp.dot``.

        Returns:
          ``[..., output_size]``, as ``hk.Linear``.
        """
        inputs = jnp.asarray(inputs)
        layer = type(self).__name__
        if not inputs.shape:
            raise ValueError(f"{layer} input must not be a scalar: expected [..., features].")
        check_floating(inputs, layer)
        input_size = inputs.shape[-1]
        self.check_feature_size("input_size", input_size, "input features")
        kernel_shape = (input_size, self.output_size)
        kernel = self.weight_distribution(
            "w", kernel_shape, inputs.dtype, self.kernel_initializer, self.kernel_regularizer,
            fan_in_truncated_normal(kernel_shape))
        bias = None
        if self.with_bias:
            bias = self.weight_distribution(
                "b", (self.output_size,), inputs.dtype, self.bias_initializer,
                self.bias_regularizer, jnp.zeros)
        estimator = LINEAR_ESTIMATORS[self.estimator()]
        return estimator(inputs, kernel, bias, self.next_weight_key(), precision)


class DenseReparameterization(_BayesianDense):
    """``hk.Linear`` with a distribution over its weights, one weight draw per call.

    ``out = inputs @ W + b`` with ``W ~ q(W)`` drawn from ``hk.next_rng_key()`` and shared by
    every row: the same key gives the same function. Applied with a function axis first
    (``hk.vmap(layer, split_rng=True)`` or ``jax.vmap`` over keys, inputs ``[k, m, n_in]``),
    each of the ``k`` draws is one ``[m, n_in] @ [n_in, n_out]`` product.

    Parameters (default posterior): ``w_loc``, ``w_raw_scale`` ``[n_in, n_out]`` and ``b``
    ``[n_out]``. ``bl.losses()`` gets ``KL(q(W) || N(0, 1))``. Inside
    ``bl.estimator("flipout")`` it computes exactly what :class:`DenseFlipout` does.
    """

    _default_estimator = "reparameterization"


class DenseFlipout(_BayesianDense):
    """``hk.Linear`` with a distribution over its weights, Flipout estimator.

    Every row gets its own pseudo-independent weight draw at the cost of two matrix products
    (see :func:`flipout_linear`), which lowers the variance of minibatch gradients. Same
    constructor, parameters and penalties as :class:`DenseReparameterization`; the mean
    function is the same. Inside ``bl.estimator("reparameterization")`` it computes exactly
    what :class:`DenseReparameterization` does with the same parameters (a key is one function).
    """

    _default_estimator = "flipout"

