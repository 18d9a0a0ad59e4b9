"""Bayesian drop-in replacements for ``hk.Linear``."""

from __future__ import annotations

from typing import Optional

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
      key: drives the draw; ``None`` uses the means.

    Returns:
      ``[..., n_out]``.
    """
    kernel_key, bias_key = (None, None) if key is None else jax.random.split(key)
    out = jnp.dot(inputs, sample_or_mean(kernel, kernel_key), precision=precision)
    if bias is not None:
        out = out + sample_or_mean(bias, bias_key)
    return out


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
      kernel, bias, key, precision: as in :func:`reparameterized_linear`.

    Returns:
      ``[..., n_out]``.
    """
    if key is None:
        kernel_key = sign_in_key = sign_out_key = bias_key = None
    else:
        kernel_key, sign_in_key, sign_out_key, bias_key = jax.random.split(key, 4)
    out = jnp.dot(inputs, kernel.mean(), precision=precision)
    delta = perturbation(kernel, kernel_key)
    if delta is not None:
        sign_in = rademacher(sign_in_key, inputs.shape, inputs.dtype)
        sign_out = rademacher(sign_out_key, out.shape, out.dtype)
        out = out + jnp.dot(inputs * sign_in, delta, precision=precision) * sign_out
    if bias is not None:
        out = out + sample_or_mean(bias, bias_key)
    return out


class _BayesianDense(BayesianModule):
    """Shared constructor and weights of the dense layers; subclasses pick the estimator."""

    _estimator = staticmethod(reparameterized_linear)

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
        return type(self)._estimator(inputs, kernel, bias, self.next_weight_key(), precision)


class DenseReparameterization(_BayesianDense):
    """``hk.Linear`` with a distribution over its weights, one weight draw per call.

    ``out = inputs @ W + b`` with ``W ~ q(W)`` drawn from ``hk.next_rng_key()`` and shared by
    every row: the same key gives the same function. Applied with a function axis first
    (``hk.vmap(layer, split_rng=True)`` or ``jax.vmap`` over keys, inputs ``[k, m, n_in]``),
    each of the ``k`` draws is one ``[m, n_in] @ [n_in, n_out]`` product.

    Parameters (default posterior): ``w_loc``, ``w_raw_scale`` ``[n_in, n_out]`` and ``b``
    ``[n_out]``. ``bl.losses()`` gets ``KL(q(W) || N(0, 1))``.
    """

    _estimator = staticmethod(reparameterized_linear)


class DenseFlipout(_BayesianDense):
    """``hk.Linear`` with a distribution over its weights, Flipout estimator.

    Every row gets its own pseudo-independent weight draw at the cost of two matrix products
    (see :func:`flipout_linear`), which lowers the variance of minibatch gradients. Same
    constructor, parameters and penalties as :class:`DenseReparameterization`; the mean
    function is the same, one key gives the same outputs.
    """

    _estimator = staticmethod(flipout_linear)

