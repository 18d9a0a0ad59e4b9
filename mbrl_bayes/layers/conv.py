"""Bayesian drop-in replacements for ``hk.Conv1D/2D/3D`` and ``hk.Conv2DTranspose``.

One module, :class:`_BayesianConvND`, holds the kernel posterior and both estimators for any
number of spatial dimensions; the (transposed) convolution itself is a hook, and the public
classes only fix the dimensionality, Haiku's constructor and the default estimator.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from haiku._src import conv as hk_conv  # to_dimension_numbers, compute_adjusted_padding
from jax import lax

from mbrl_bayes.layers.dense import local_output_noise, normal_scale
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
    """An N-d (transposed) convolution with a distribution over its kernel.

    The estimator (:meth:`estimator`: the class's or the ``bl.estimator`` context's) turns the
    kernel posterior into outputs: one kernel draw per call shared by the batch
    (reparameterization), or per-example pseudo-independent kernels (Flipout). Subclasses
    provide the linear map: :meth:`_kernel_shape`, :meth:`_default_w_init`, :meth:`_apply`.
    """

    def __init__(
        self,
        num_spatial_dims: int,
        output_channels: int,
        kernel_shape: Union[int, Sequence[int]],
        stride: Union[int, Sequence[int]],
        with_bias: bool,
        w_init: Optional[Initializer],
        b_init: Optional[Initializer],
        data_format: str,
        mask: Optional[jax.Array],
        name: Optional[str],
        kernel_initializer: InitializerLike,
        kernel_regularizer: RegularizerLike,
        bias_initializer: InitializerLike,
        bias_regularizer: RegularizerLike,
    ):
        super().__init__(name=name)
        if num_spatial_dims <= 0:
            raise ValueError(f"num_spatial_dims must be > 0, got {num_spatial_dims}.")
        self.num_spatial_dims = num_spatial_dims
        self.output_channels = output_channels
        self.kernel_shape = _replicate(kernel_shape, num_spatial_dims, "kernel_shape")
        self.stride = _replicate(stride, num_spatial_dims, "stride")
        self.with_bias = with_bias
        self.mask = mask
        self.data_format = data_format
        self.channel_index = hk.get_channel_index(data_format)
        self.input_channels: Optional[int] = None
        self.kernel_initializer: TrainableInitializer = (
            get_initializer(kernel_initializer).with_loc_init(w_init))
        self.bias_initializer: TrainableInitializer = (
            get_initializer(bias_initializer).with_loc_init(b_init))
        self.kernel_regularizer = get_regularizer(kernel_regularizer)
        self.bias_regularizer = get_regularizer(bias_regularizer)

    # The linear map: hooks of the convolution and the transposed convolution.
    def _kernel_shape(self, input_channels: int) -> Tuple[int, ...]:
        raise NotImplementedError

    def _default_w_init(self, kernel_shape: Tuple[int, ...]) -> Initializer:
        raise NotImplementedError

    def _apply(self, inputs: jax.Array, kernel: jax.Array,
               precision: Optional[lax.Precision]) -> jax.Array:
        raise NotImplementedError

    def _conv(self, inputs: jax.Array, kernel: jax.Array,
              precision: Optional[lax.Precision]) -> jax.Array:
        if self.mask is not None:
            kernel = kernel * self.mask
        return self._apply(inputs, kernel, precision)

    # The estimators: one implementation each, for every dimensionality and both maps.
    def _channel_signs(self, key: jax.Array, batch: int, channels: int,
                       dtype: jnp.dtype) -> jax.Array:
        """Signs per example and channel, broadcast over the spatial axes."""
        shape = [batch] + [1] * (self.num_spatial_dims + 1)
        shape[self.channel_index] = channels
        return rademacher(key, shape, dtype)

    def _reparameterized(self, inputs: jax.Array, kernel: distrax.Distribution,
                         key: Optional[jax.Array],
                         precision: Optional[lax.Precision]) -> jax.Array:
        return self._conv(inputs, sample_or_mean(kernel, key), precision)

    def _flipout(self, inputs: jax.Array, kernel: distrax.Distribution,
                 key: Optional[jax.Array], precision: Optional[lax.Precision]) -> jax.Array:
        # Per-example signs on input and output channels: example i sees the kernel
        # mean(W) + dW * outer(s_in[i], s_out[i]) at every spatial position (the map is linear
        # in the kernel and mixes channels only through it).
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

    def _local_reparameterized(self, inputs: jax.Array, kernel: distrax.Distribution,
                               key: Optional[jax.Array],
                               precision: Optional[lax.Precision]) -> jax.Array:
        # Each output is a sum of independent Gaussians: mean conv(x, loc), variance
        # conv(x**2, (mask * scale)**2); drawn per output (Kingma et al. 2015).
        if key is None or isinstance(kernel, distrax.Deterministic):
            return self._reparameterized(inputs, kernel, None, precision)
        scale = normal_scale(kernel, type(self).__name__)
        if self.mask is not None:
            scale = scale * self.mask
        variance = self._apply(jnp.square(inputs), jnp.square(scale), precision)
        return local_output_noise(self._conv(inputs, kernel.loc, precision), variance, key)

    _ESTIMATORS = {"reparameterization": _reparameterized, "flipout": _flipout,
                   "local_reparameterization": _local_reparameterized}

    def __call__(self, inputs: jax.Array, *,
                 precision: Optional[lax.Precision] = None) -> jax.Array:
        """Applies one function draw (a key from ``hk.next_rng_key()``) to ``inputs``.

        Args:
          inputs: ``[N, *spatial, C]`` (rank N+2), or ``[*spatial, C]`` (rank N+1) unbatched;
            channels first for ``NC...`` data formats.
          precision: passed to ``lax.conv_general_dilated`` / ``lax.conv_transpose``.

        Returns:
          ``[N, *out_spatial, output_channels]`` (no ``N`` when unbatched), as Haiku's layer.
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
        kernel_shape = self._kernel_shape(input_channels)
        if self.mask is not None and tuple(self.mask.shape) != kernel_shape:
            raise ValueError(f"{layer}: mask shape {tuple(self.mask.shape)} must equal the "
                             f"kernel shape {kernel_shape}.")
        kernel = self.weight_distribution(
            "w", kernel_shape, inputs.dtype, self.kernel_initializer, self.kernel_regularizer,
            self._default_w_init(kernel_shape))
        key = self.next_weight_key()
        kernel_key, bias_key = (None, None) if key is None else jax.random.split(key)
        out = self._ESTIMATORS[self.estimator()](self, inputs, kernel, kernel_key, precision)
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


class _BayesianConv(_BayesianConvND):
    """``hk.ConvND``'s convolution; the constructor is ``hk.Conv{1,2,3}D``'s, argument for
    argument, with the dimensionality (``_num_spatial_dims``) fixed by the class."""

    _num_spatial_dims: int
    _default_data_format: str

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
        data_format: Optional[str] = None,
        mask: Optional[jax.Array] = None,
        feature_group_count: int = 1,
        name: Optional[str] = None,
        *,
        kernel_initializer: InitializerLike = "trainable_normal",
        kernel_regularizer: RegularizerLike = "normal_kl_divergence",
        bias_initializer: InitializerLike = "trainable_deterministic",
        bias_regularizer: RegularizerLike = None,
    ):
        """Constructs the layer; the arguments before ``*`` are ``hk.Conv{1,2,3}D``'s.

        Args:
          output_channels: number of output channels.
          kernel_shape: kernel shape, an int or a sequence of one per spatial dimension.
          stride: stride, an int or a sequence.
          rate: kernel dilation rate, an int or a sequence.
          padding: ``"SAME"``, ``"VALID"``, ``(low, high)`` pairs or ``hk.pad`` functions.
          with_bias: whether to add a bias.
          w_init: initializer of the kernel's posterior *mean*. ``None``: the kernel
            initializer's own, or else Haiku's default, truncated normal with stddev
            ``1 / sqrt(fan_in)``.
          b_init: initializer of the bias's posterior mean (``None``: zeros).
          data_format: ``None`` is Haiku's default for the dimensionality (``"NWC"``,
            ``"NHWC"``, ``"NDHWC"``); channels first (``"NCW"``, ...) also works.
          mask: optional mask multiplied into every kernel draw.
          feature_group_count: number of groups in a group convolution.
          name: module name.
          kernel_initializer: the kernel's posterior; default mean-field normal.
          kernel_regularizer: the kernel's penalty; default ``KL(q || N(0, 1))``.
          bias_initializer: the bias's posterior; default a point mass, as in Edward2.
          bias_regularizer: the bias's penalty; default none.
        """
        n = self._num_spatial_dims
        super().__init__(
            n, output_channels, kernel_shape, stride, with_bias, w_init, b_init,
            self._default_data_format if data_format is None else data_format, mask, name,
            kernel_initializer, kernel_regularizer, bias_initializer, bias_regularizer)
        self.kernel_dilation = _replicate(rate, n, "rate")
        self.feature_group_count = feature_group_count
        self.dimension_numbers = hk_conv.to_dimension_numbers(
            n, channels_last=(self.channel_index == -1), transpose=False)
        if isinstance(padding, str):
            self.padding = padding.upper()
        elif hk.pad.is_padfn(padding):
            self.padding = hk.pad.create_from_padfn(
                padding=padding, kernel=self.kernel_shape, rate=self.kernel_dilation, n=n)
        else:
            self.padding = hk.pad.create_from_tuple(padding, n)

    def _kernel_shape(self, input_channels: int) -> Tuple[int, ...]:
        if input_channels % self.feature_group_count:
            raise ValueError(f"{type(self).__name__}: input channels {input_channels} must be a "
                             f"multiple of feature_group_count {self.feature_group_count}.")
        return self.kernel_shape + (input_channels // self.feature_group_count,
                                    self.output_channels)

    def _default_w_init(self, kernel_shape: Tuple[int, ...]) -> Initializer:
        return fan_in_truncated_normal(kernel_shape)

    def _apply(self, inputs: jax.Array, kernel: jax.Array,
               precision: Optional[lax.Precision]) -> jax.Array:
        return lax.conv_general_dilated(
            inputs, kernel, window_strides=self.stride, padding=self.padding,
            rhs_dilation=self.kernel_dilation, dimension_numbers=self.dimension_numbers,
            feature_group_count=self.feature_group_count, precision=precision)


class _BayesianConvTranspose(_BayesianConvND):
    """``hk.ConvNDTranspose``'s transposed convolution; the constructor is
    ``hk.Conv{1,2,3}DTranspose``'s, with the dimensionality fixed by the class."""

    _num_spatial_dims: int
    _default_data_format: str

    def __init__(
        self,
        output_channels: int,
        kernel_shape: Union[int, Sequence[int]],
        stride: Union[int, Sequence[int]] = 1,
        output_shape: Optional[Union[int, Sequence[int]]] = None,
        padding: Union[str, Sequence[Tuple[int, int]]] = "SAME",
        with_bias: bool = True,
        w_init: Optional[Initializer] = None,
        b_init: Optional[Initializer] = None,
        data_format: Optional[str] = None,
        mask: Optional[jax.Array] = None,
        name: Optional[str] = None,
        *,
        kernel_initializer: InitializerLike = "trainable_normal",
        kernel_regularizer: RegularizerLike = "normal_kl_divergence",
        bias_initializer: InitializerLike = "trainable_deterministic",
        bias_regularizer: RegularizerLike = None,
    ):
        """Constructs the layer; the arguments before ``*`` are ``hk.Conv2DTranspose``'s.

        Args:
          output_channels: number of output channels.
          kernel_shape: kernel shape, an int or a sequence of one per spatial dimension.
          stride: stride, an int or a sequence.
          output_shape: spatial output shape (``None``: Haiku's default for the padding).
          padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs (a string with
            ``output_shape``).
          with_bias: whether to add a bias.
          w_init: initializer of the kernel's posterior *mean*. ``None``: the kernel
            initializer's own, or else Haiku's default, truncated normal with stddev
            ``1 / sqrt(prod(kernel_shape) * input_channels)``.
          b_init: initializer of the bias's posterior mean (``None``: zeros).
          data_format: ``None`` is Haiku's default (``"NHWC"`` in 2-D); channels first works.
          mask: optional mask multiplied into every kernel draw.
          name: module name.
          kernel_initializer, kernel_regularizer, bias_initializer, bias_regularizer: as for
            the convolutions.

        Raises:
          ValueError: for ``output_shape`` with a non-string ``padding``.
        """
        n = self._num_spatial_dims
        super().__init__(
            n, output_channels, kernel_shape, stride, with_bias, w_init, b_init,
            self._default_data_format if data_format is None else data_format, mask, name,
            kernel_initializer, kernel_regularizer, bias_initializer, bias_regularizer)
        self.output_shape = (None if output_shape is None
                             else _replicate(output_shape, n, "output_shape"))
        if self.output_shape is not None and not isinstance(padding, str):
            raise ValueError(f"{type(self).__name__}: with output_shape, padding must be 'VALID' "
                             f"or 'SAME', got {padding!r}.")
        self.padding = padding
        self.dimension_numbers = hk_conv.to_dimension_numbers(
            n, channels_last=(self.channel_index == -1), transpose=True)

    def _kernel_shape(self, input_channels: int) -> Tuple[int, ...]:
        return self.kernel_shape + (self.output_channels, input_channels)

    def _default_w_init(self, kernel_shape: Tuple[int, ...]) -> Initializer:
        fan_in = np.prod(self.kernel_shape) * kernel_shape[-1]
        return hk.initializers.TruncatedNormal(stddev=1. / np.sqrt(fan_in))

    def _apply(self, inputs: jax.Array, kernel: jax.Array,
               precision: Optional[lax.Precision]) -> jax.Array:
        padding = self.padding
        if self.output_shape is not None:
            spatial = inputs.shape[2:] if self.channel_index == 1 else inputs.shape[1:-1]
            padding = tuple(
                hk_conv.compute_adjusted_padding(i, o, k, s, self.padding)
                for i, o, k, s in zip(spatial, self.output_shape, self.kernel_shape,
                                      self.stride))
        return lax.conv_transpose(inputs, kernel, strides=self.stride, padding=padding,
                                  dimension_numbers=self.dimension_numbers, precision=precision)


_REPARAMETERIZATION_DOC = """``hk.{haiku}`` with a distribution over its kernel, one draw per call.

    The draw comes from ``hk.next_rng_key()`` and is shared by the batch: the same key gives
    the same function. Parameters (default posterior): ``w_loc``, ``w_raw_scale`` of
    ``hk.{haiku}``'s kernel shape ``{kernel}`` and ``b``. ``bl.losses()`` gets
    ``KL(q(W) || N(0, 1))``. Inside ``bl.estimator("flipout")`` it computes exactly what
    :class:`{other}` does with the same parameters.
    """

_FLIPOUT_DOC = """``hk.{haiku}`` with a distribution over its kernel, Flipout estimator.

    Each example sees its own pseudo-independent kernel ``mean(W) + dW * outer(s_in, s_out)``
    (random signs per example and channel) at the cost of two convolutions. Same constructor,
    parameters and penalties as :class:`{other}`; inside ``bl.estimator("reparameterization")``
    it computes exactly what that class does (a key is one function).
    """


def _doc(template: str, haiku: str, kernel: str, other: str) -> str:
    return template.format(haiku=haiku, kernel=kernel, other=other)


class Conv1DReparameterization(_BayesianConv):
    __doc__ = _doc(_REPARAMETERIZATION_DOC, "Conv1D", "[kw, C_in / groups, C_out]",
                   "Conv1DFlipout")
    _num_spatial_dims, _default_data_format = 1, "NWC"
    _default_estimator = "reparameterization"


class Conv1DFlipout(_BayesianConv):
    __doc__ = _doc(_FLIPOUT_DOC, "Conv1D", "", "Conv1DReparameterization")
    _num_spatial_dims, _default_data_format = 1, "NWC"
    _default_estimator = "flipout"


class Conv2DReparameterization(_BayesianConv):
    __doc__ = _doc(_REPARAMETERIZATION_DOC, "Conv2D", "[kh, kw, C_in / groups, C_out]",
                   "Conv2DFlipout")
    _num_spatial_dims, _default_data_format = 2, "NHWC"
    _default_estimator = "reparameterization"


class Conv2DFlipout(_BayesianConv):
    __doc__ = _doc(_FLIPOUT_DOC, "Conv2D", "", "Conv2DReparameterization")
    _num_spatial_dims, _default_data_format = 2, "NHWC"
    _default_estimator = "flipout"


class Conv3DReparameterization(_BayesianConv):
    __doc__ = _doc(_REPARAMETERIZATION_DOC, "Conv3D", "[kd, kh, kw, C_in / groups, C_out]",
                   "Conv3DFlipout")
    _num_spatial_dims, _default_data_format = 3, "NDHWC"
    _default_estimator = "reparameterization"


class Conv3DFlipout(_BayesianConv):
    __doc__ = _doc(_FLIPOUT_DOC, "Conv3D", "", "Conv3DReparameterization")
    _num_spatial_dims, _default_data_format = 3, "NDHWC"
    _default_estimator = "flipout"


class Conv2DTransposeReparameterization(_BayesianConvTranspose):
    __doc__ = _doc(_REPARAMETERIZATION_DOC, "Conv2DTranspose", "[kh, kw, C_out, C_in]",
                   "Conv2DTransposeFlipout")
    _num_spatial_dims, _default_data_format = 2, "NHWC"
    _default_estimator = "reparameterization"


class Conv2DTransposeFlipout(_BayesianConvTranspose):
    __doc__ = _doc(_FLIPOUT_DOC, "Conv2DTranspose", "", "Conv2DTransposeReparameterization")
    _num_spatial_dims, _default_data_format = 2, "NHWC"
    _default_estimator = "flipout"
