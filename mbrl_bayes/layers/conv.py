"""Bayesian drop-in replacements for ``hk.Conv2D``."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import distrax
import haiku as hk
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

Padding = Union[str, Sequence[Tuple[int, int]], hk.pad.PadFn, Sequence[hk.pad.PadFn]]


def _replicate(value: Union[int, Sequence[int]], n: int, what: str) -> Tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise TypeError(f"{what} must be an int or a sequence of length 1 or {n}, got {value}.")
    return value


class _BayesianConvND(BayesianModule):
    """An N-d convolution with a distribution over its kernel; mirrors ``hk.ConvND``.

    ``_flipout`` (a class attribute) picks the estimator: one kernel draw per call shared by the
    batch (reparameterization), or per-example pseudo-independent kernels (Flipout).
    """

    _flipout: bool = False

    def __init__(
        self,
        num_spatial_dims: int,
        output_channels: int,
        kernel_shape: Union[int, Sequence[int]],
        stride: Union[int, Sequence[int]] = 1,
        rate: Union[int, Sequence[int]] = 1,
        padding: Padding = "SAME",
        with_bias: bool = True,
        w_init: Optional[Initializer] = None,
        b_init: Optional[Initializer] = None,
        data_format: str = "channels_last",
        mask: Optional[jax.Array] = None,
        feature_group_count: int = 1,
        name: Optional[str] = None,
        *,
        kernel_initializer: InitializerLike = "trainable_normal",
        kernel_regularizer: RegularizerLike = "normal_kl_divergence",
        bias_initializer: InitializerLike = "trainable_deterministic",
        bias_regularizer: RegularizerLike = None,
    ):
        super().__init__(name=name)
        if num_spatial_dims <= 0:
            raise ValueError(f"num_spatial_dims must be > 0, got {num_spatial_dims}.")
        self.num_spatial_dims = num_spatial_dims
        self.output_channels = output_channels
        self.kernel_shape = _replicate(kernel_shape, num_spatial_dims, "kernel_shape")
        self.stride = _replicate(stride, num_spatial_dims, "stride")
        self.kernel_dilation = _replicate(rate, num_spatial_dims, "rate")
        self.with_bias = with_bias
        self.mask = mask
        self.feature_group_count = feature_group_count
        self.data_format = data_format
        self.channel_index = hk.get_channel_index(data_format)
        self.input_channels: Optional[int] = None
        num_dims = num_spatial_dims + 2
        if self.channel_index == -1:
            image_spec = (0, num_dims - 1) + tuple(range(1, num_dims - 1))
        else:
            image_spec = (0, 1) + tuple(range(2, num_dims))
        kernel_spec = (num_dims - 1, num_dims - 2) + tuple(range(num_dims - 2))
        self.dimension_numbers = lax.ConvDimensionNumbers(
            lhs_spec=image_spec, rhs_spec=kernel_spec, out_spec=image_spec)
        if isinstance(padding, str):
            self.padding = padding.upper()
        elif hk.pad.is_padfn(padding):
            self.padding = hk.pad.create_from_padfn(
                padding=padding, kernel=self.kernel_shape, rate=self.kernel_dilation,
                n=num_spatial_dims)
        else:
            self.padding = hk.pad.create_from_tuple(padding, num_spatial_dims)
        self.kernel_initializer: TrainableInitializer = (
            get_initializer(kernel_initializer).with_loc_init(w_init))
        self.bias_initializer: TrainableInitializer = (
            get_initializer(bias_initializer).with_loc_init(b_init))
        self.kernel_regularizer = get_regularizer(kernel_regularizer)
        self.bias_regularizer = get_regularizer(bias_regularizer)

    def _conv(self, inputs: jax.Array, kernel: jax.Array,
              precision: Optional[lax.Precision]) -> jax.Array:
        if self.mask is not None:
            kernel = kernel * self.mask
        return lax.conv_general_dilated(
            inputs, kernel, window_strides=self.stride, padding=self.padding,
            rhs_dilation=self.kernel_dilation, dimension_numbers=self.dimension_numbers,
            feature_group_count=self.feature_group_count, precision=precision)

    def _channel_signs(self, key: jax.Array, batch: int, channels: int,
                       dtype: jnp.dtype) -> jax.Array:
        """Signs per example and channel, broadcast over the spatial axes."""
        shape = [batch] + [1] * (self.num_spatial_dims + 1)
        shape[self.channel_index] = channels
        return rademacher(key, shape, dtype)

    def _estimate(self, inputs: jax.Array, kernel: distrax.Distribution,
                  key: Optional[jax.Array], precision: Optional[lax.Precision]) -> jax.Array:
        if not self._flipout:
            return self._conv(inputs, sample_or_mean(kernel, key), precision)
        # Flipout: per-example signs on input and output channels, so example i sees the
        # kernel mean(W) + dW * outer(s_in[i], s_out[i]) at every spatial position.
        out = self._conv(inputs, kernel.mean(), precision)
        if key is None:
            return out
        kernel_key, sign_in_key, sign_out_key = jax.random.split(key, 3)
        delta = perturbation(kernel, kernel_key)
        if delta is None:
            return out
        batch = inputs.shape[0]
        sign_in = self._channel_signs(sign_in_key, batch, inputs.shape[self.channel_index],
                                      inputs.dtype)
        sign_out = self._channel_signs(sign_out_key, batch, self.output_channels, out.dtype)
        return out + self._conv(inputs * sign_in, delta, precision) * sign_out

    def __call__(self, inputs: jax.Array, *,
                 precision: Optional[lax.Precision] = None) -> jax.Array:
        """Applies one function draw (a key from ``hk.next_rng_key()``) to ``inputs``.

        Args:
          inputs: ``[N, *spatial, C]`` (rank N+2), or ``[*spatial, C]`` (rank N+1) unbatched;
            channels first for ``NC...`` data formats.
          precision: passed to ``lax.conv_general_dilated``.

        Returns:
          ``[N, *out_spatial, output_channels]`` (no ``N`` when unbatched), as ``hk.ConvND``.
        """
        inputs = jnp.asarray(inputs)
        layer = type(self).__name__
        unbatched_rank = self.num_spatial_dims + 1
        if inputs.ndim not in (unbatched_rank, unbatched_rank + 1):
            raise ValueError(
                f"{layer} input must have rank {unbatched_rank} (unbatched) or "
                f"{unbatched_rank + 1} (batched), got shape {inputs.shape}.")
        check_floating(inputs, layer)
        unbatched = inputs.ndim == unbatched_rank
        if unbatched:
            inputs = inputs[None]
        input_channels = inputs.shape[self.channel_index]
        self.check_feature_size("input_channels", input_channels, "input channels")
        if input_channels % self.feature_group_count:
            raise ValueError(f"{layer}: input channels {input_channels} must be a multiple of "
                             f"feature_group_count {self.feature_group_count}.")
        kernel_shape = self.kernel_shape + (input_channels // self.feature_group_count,
                                            self.output_channels)
        if self.mask is not None and tuple(self.mask.shape) != kernel_shape:
            raise ValueError(f"{layer}: mask shape {tuple(self.mask.shape)} must equal the "
                             f"kernel shape {kernel_shape}.")
        kernel = self.weight_distribution(
            "w", kernel_shape, inputs.dtype, self.kernel_initializer, self.kernel_regularizer,
            fan_in_truncated_normal(kernel_shape))
        key = self.next_weight_key()
        kernel_key, bias_key = (None, None) if key is None else jax.random.split(key)
        out = self._estimate(inputs, kernel, kernel_key, precision)
        if self.with_bias:
            if self.channel_index == -1:
                bias_shape = (self.output_channels,)
            else:
                bias_shape = (self.output_channels,) + (1,) * self.num_spatial_dims
            bias = self.weight_distribution(
                "b", bias_shape, inputs.dtype, self.bias_initializer, self.bias_regularizer,
                jnp.zeros)
            out = out + sample_or_mean(bias, bias_key)
        return out[0] if unbatched else out


class _BayesianConv2D(_BayesianConvND):
    """The 2-D constructor, argument for argument ``hk.Conv2D``'s."""

    def __init__(
        self,
        output_channels: int,
        kernel_shape: Union[int, Sequence[int]],
        stride: Union[int, Sequence[int]] = 1,
        rate: Union[int, Sequence[int]] = 1,
        padding: Padding = "SAME",
        with_bias: bool = True,
        w_init: Optional[Initializer] = None,
        b_init: Optional[Initializer] = None,
        data_format: str = "NHWC",
        mask: Optional[jax.Array] = None,
        feature_group_count: int = 1,
        name: Optional[str] = None,
        *,
        kernel_initializer: InitializerLike = "trainable_normal",
        kernel_regularizer: RegularizerLike = "normal_kl_divergence",
        bias_initializer: InitializerLike = "trainable_deterministic",
        bias_regularizer: RegularizerLike = None,
    ):
        """Constructs the layer; the arguments before ``*`` are ``hk.Conv2D``'s.

        Args:
          output_channels: number of output channels.
          kernel_shape: kernel shape, an int or a sequence of 2.
          stride: stride, an int or a sequence of 2.
          rate: kernel dilation rate, an int or a sequence of 2.
          padding: ``"SAME"``, ``"VALID"``, ``(low, high)`` pairs or ``hk.pad`` functions.
          with_bias: whether to add a bias.
          w_init: initializer of the kernel's posterior *mean*. ``None``: the kernel
            initializer's own, or else ``hk.Conv2D``'s default, truncated normal with stddev
            ``1 / sqrt(fan_in)``.
          b_init: initializer of the bias's posterior mean (``None``: zeros).
          data_format: ``"NHWC"`` or ``"NCHW"``.
          mask: optional mask multiplied into every kernel draw.
          feature_group_count: number of groups in a group convolution.
          name: module name.
          kernel_initializer: the kernel's posterior; default mean-field normal.
          kernel_regularizer: the kernel's penalty; default ``KL(q || N(0, 1))``.
          bias_initializer: the bias's posterior; default a point mass, as in Edward2.
          bias_regularizer: the bias's penalty; default none.
        """
        super().__init__(
            2, output_channels, kernel_shape, stride=stride, rate=rate, padding=padding,
            with_bias=with_bias, w_init=w_init, b_init=b_init, data_format=data_format,
            mask=mask, feature_group_count=feature_group_count, name=name,
            kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer,
            bias_initializer=bias_initializer, bias_regularizer=bias_regularizer)


class Conv2DReparameterization(_BayesianConv2D):
    """``hk.Conv2D`` with a distribution over its kernel, one kernel draw per call.

    The draw comes from ``hk.next_rng_key()`` and is shared by the batch: the same key gives
    the same function. Parameters (default posterior): ``w_loc``, ``w_raw_scale`` of the kernel
    shape ``[kh, kw, C_in / groups, C_out]`` and ``b``. ``bl.losses()`` gets
    ``KL(q(W) || N(0, 1))``.
    """

    _flipout = False


class Conv2DFlipout(_BayesianConv2D):
    """``hk.Conv2D`` with a distribution over its kernel, Flipout estimator.

    Each example sees its own pseudo-independent kernel ``mean(W) + dW * outer(s_in, s_out)``
    (random signs per example and channel) at the cost of two convolutions. Same constructor,
    parameters and penalties as :class:`Conv2DReparameterization`.
    """

    _flipout = True
