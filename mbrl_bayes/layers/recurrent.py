"""Bayesian drop-in replacements for ``hk.LSTM`` and ``hk.GRU``: one weight draw per sequence."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import haiku as hk
import jax
import jax.numpy as jnp

from mbrl_bayes.layers.dense import LINEAR_DRAWS, LINEAR_ESTIMATORS
from mbrl_bayes.layers.initializers import (
    Initializer,
    InitializerLike,
    TrainableInitializer,
    fan_in_truncated_normal,
    get_initializer,
)
from mbrl_bayes.layers.modes import is_posterior_mean
from mbrl_bayes.layers.module import BayesianModule, check_floating, sample_or_mean
from mbrl_bayes.layers.regularizers import RegularizerLike, get_regularizer


class BayesianLSTMState(NamedTuple):
    """``hk.LSTMState`` plus the key of the sequence's weight draw.

    Attributes:
      hidden: ``[B, H]`` (``[H]`` unbatched), as in ``hk.LSTMState``.
      cell: ``[B, H]`` (``[H]`` unbatched), as in ``hk.LSTMState``.
      weight_key: the PRNG key the weights are drawn from at every step, drawn once by
        ``initial_state``; it has *no* batch axis (the whole batch shares one weight draw, as a
        dense layer's rows do) and is ``None`` at the posterior mean.
    """

    hidden: jax.Array
    cell: jax.Array
    weight_key: Optional[jax.Array]


class _SequenceWeights(hk.RNNCore, BayesianModule):
    """A recurrent core whose state carries the key of its sequence's weight draw.

    Subclasses set ``_state_type`` (a NamedTuple with a ``weight_key`` field) and
    ``_restart_hint`` (how to start from one's own state, for the error message).
    """

    _state_type: type
    _restart_hint: str

    def _weight_keys(self, state) -> Tuple[Optional[jax.Array], Optional[jax.Array]]:
        """``(key the weights are drawn from at this step, key carried to the next state)``.

        At the posterior mean (and in ``init``) nothing is drawn, but a state's key is carried
        along unchanged, so a sequence continued outside the context keeps its weights.
        """
        layer = type(self).__name__
        carried = state.weight_key if isinstance(state, self._state_type) else None
        if is_posterior_mean():
            return None, carried
        if not isinstance(state, self._state_type):
            raise TypeError(
                f"{layer} needs the state made by its initial_state(), which carries the "
                f"sequence's weight key; got {type(state).__name__}. {self._restart_hint}")
        if hk.running_init():
            return None, carried  # init creates parameters at the mean (see next_weight_key)
        if state.weight_key is None:
            raise ValueError(
                f"{layer}: this state was made at the posterior mean and carries no weight "
                f"key; make it with initial_state() outside bl.posterior_mean() to sample.")
        return state.weight_key, state.weight_key

    def _sequence_estimator(self) -> str:
        estimator = self.estimator()
        if estimator not in LINEAR_DRAWS:
            raise ValueError(
                f"{type(self).__name__} draws one weight sample per sequence, which the "
                f"{estimator!r} estimator cannot (it draws fresh output noise at every step); "
                f"use 'reparameterization' or 'flipout' for the recurrent cells.")
        return estimator

    def _check_inputs(self, inputs: jax.Array) -> jax.Array:
        layer = type(self).__name__
        inputs = jnp.asarray(inputs)
        if inputs.ndim not in (1, 2):
            raise ValueError(f"{layer} input must be rank 1 [n_in] or rank 2 [B, n_in], got "
                             f"shape {inputs.shape}.")
        check_floating(inputs, layer)
        self.check_feature_size("input_size", inputs.shape[-1], "input features")
        return inputs

    def _initial_hidden(self, batch_size: Optional[int]) -> jax.Array:
        zeros = jnp.zeros([self.hidden_size])
        if batch_size is None:
            return zeros
        return jnp.broadcast_to(zeros, (batch_size, self.hidden_size))


class _BayesianLSTMCell(_SequenceWeights):
    """An LSTM cell (``hk.LSTM``'s equations) whose gate weights are a distribution.

    ``[x, h] @ W + b`` is computed by the estimator :meth:`estimator` names (the class's, or the
    ``bl.estimator`` context's): reparameterization or Flipout.
    """

    _state_type = BayesianLSTMState
    _restart_hint = ("To start from your own hidden/cell use "
                     "cell.initial_state(batch_size)._replace(hidden=h, cell=c).")

    def __init__(
        self,
        hidden_size: int,
        name: Optional[str] = None,
        *,
        kernel_initializer: InitializerLike = "trainable_normal",
        kernel_regularizer: RegularizerLike = "normal_kl_divergence",
        bias_initializer: InitializerLike = "trainable_deterministic",
        bias_regularizer: RegularizerLike = None,
    ):
        """Constructs the cell; the arguments before ``*`` are ``hk.LSTM``'s.

        Args:
          hidden_size: hidden layer size ``H``.
          name: module name.
          kernel_initializer: posterior of the gate kernel ``[n_in + H, 4 H]`` (inputs and
            recurrent weights in one tensor, as ``hk.LSTM``'s linear); default mean-field normal
            with ``hk.Linear``'s mean init.
          kernel_regularizer: the kernel's penalty; default ``KL(q || N(0, 1))``.
          bias_initializer: posterior of the gate bias ``[4 H]``; default a point mass at zero
            (the forget gate gets ``+1``, as in ``hk.LSTM``).
          bias_regularizer: the bias's penalty; default none.
        """
        super().__init__(name=name)
        self.hidden_size = hidden_size
        self.input_size: Optional[int] = None
        self.kernel_initializer: TrainableInitializer = get_initializer(kernel_initializer)
        self.bias_initializer: TrainableInitializer = get_initializer(bias_initializer)
        self.kernel_regularizer = get_regularizer(kernel_regularizer)
        self.bias_regularizer = get_regularizer(bias_regularizer)

    def initial_state(self, batch_size: Optional[int]) -> BayesianLSTMState:
        """Zero ``hidden`` and ``cell`` (``[batch_size, H]``, or ``[H]`` for ``None``), as
        ``hk.LSTM``, and the sequence's weight key from ``hk.next_rng_key()``.

        Call it once per sequence (batch): every step that continues from this state uses the
        same weights, whether unrolled by ``hk.dynamic_unroll``, ``hk.static_unroll`` or a
        Python loop, and across separate ``apply`` calls that pass the state along.
        """
        hidden = cell = self._initial_hidden(batch_size)
        return BayesianLSTMState(hidden=hidden, cell=cell, weight_key=self.next_weight_key())

    def __call__(
        self,
        inputs: jax.Array,
        prev_state: Union[BayesianLSTMState, hk.LSTMState],
    ) -> Tuple[jax.Array, BayesianLSTMState]:
        """One step: ``(h, next_state)``, with ``h`` ``[B, H]`` (``[H]`` for rank-1 inputs).

        Args:
          inputs: ``[B, n_in]`` or ``[n_in]``, floating point.
          prev_state: a state from :meth:`initial_state` or a previous step (a plain
            ``hk.LSTMState`` is accepted only at the posterior mean, which needs no key).
        """
        inputs = self._check_inputs(inputs)
        draw_key, weight_key = self._weight_keys(prev_state)
        x_and_h = jnp.concatenate([inputs, prev_state.hidden], axis=-1)
        kernel_shape = (x_and_h.shape[-1], 4 * self.hidden_size)
        kernel = self.weight_distribution(
            "w", kernel_shape, inputs.dtype, self.kernel_initializer, self.kernel_regularizer,
            fan_in_truncated_normal(kernel_shape))
        bias = self.weight_distribution(
            "b", (4 * self.hidden_size,), inputs.dtype, self.bias_initializer,
            self.bias_regularizer, jnp.zeros)
        gated = LINEAR_ESTIMATORS[self._sequence_estimator()](x_and_h, kernel, bias, draw_key)
        # Gate order and forget-gate bias exactly as hk.LSTM.
        i, g, f, o = jnp.split(gated, indices_or_sections=4, axis=-1)
        f = jax.nn.sigmoid(f + 1)
        c = f * prev_state.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, BayesianLSTMState(h, c, weight_key)

class LSTMCellReparameterization(_BayesianLSTMCell):
    """``hk.LSTM`` with a distribution over its weights, one weight draw per sequence.

    ``initial_state`` draws the sequence's key from ``hk.next_rng_key()`` and carries it in
    ``BayesianLSTMState.weight_key``; every step draws the weights from that key, so a sequence
    of any length uses one weight sample (``W ~ q`` computed exactly as
    ``DenseReparameterization`` would with ``hk.next_rng_key()`` replaced by the state's key),
    and ``bl.losses()`` counts the KL once. Works with ``hk.dynamic_unroll``,
    ``hk.static_unroll`` and ``hk.DeepRNN``.

    Differences from ``hk.LSTM``: the state has a third field (see
    :class:`BayesianLSTMState`: ``state.hidden`` / ``state.cell`` read as before, but
    ``hidden, cell = state`` does not unpack), and ``hk.ResetCore`` does not apply, since the
    key has no batch axis. Parameters (default posterior): ``w_loc``, ``w_raw_scale``
    ``[n_in + H, 4 H]`` and ``b`` ``[4 H]``.
    """

    _default_estimator = "reparameterization"


class LSTMCellFlipout(_BayesianLSTMCell):
    """``hk.LSTM`` with a distribution over its weights, Flipout estimator.

    As :class:`LSTMCellReparameterization`, but each sequence of the batch sees its own
    pseudo-independent weights: the perturbation and the Flipout signs all derive from the
    state's key, so each sequence keeps its weights at every step.
    """

    _default_estimator = "flipout"


class BayesianGRUState(NamedTuple):
    """``hk.GRU``'s state (the hidden array) plus the key of the sequence's weight draw.

    Attributes:
      hidden: ``[B, H]`` (``[H]`` unbatched): what ``hk.GRU``'s state is.
      weight_key: as in :class:`BayesianLSTMState`: drawn once by ``initial_state``, no batch
        axis, ``None`` at the posterior mean.
    """

    hidden: jax.Array
    weight_key: Optional[jax.Array]


class _BayesianGRU(_SequenceWeights):
    """A GRU (``hk.GRU``'s equations, gate order and parameters) whose weights are
    distributions; the estimator is :meth:`estimator`'s."""

    _state_type = BayesianGRUState
    _restart_hint = ("To start from your own hidden use "
                     "cell.initial_state(batch_size)._replace(hidden=h).")

    def __init__(
        self,
        hidden_size: int,
        w_i_init: Optional[Initializer] = None,
        w_h_init: Optional[Initializer] = None,
        b_init: Optional[Initializer] = None,
        name: Optional[str] = None,
        *,
        kernel_initializer: InitializerLike = "trainable_normal",
        kernel_regularizer: RegularizerLike = "normal_kl_divergence",
        bias_initializer: InitializerLike = "trainable_deterministic",
        bias_regularizer: RegularizerLike = None,
    ):
        """Constructs the core; the arguments before ``*`` are ``hk.GRU``'s.

        Args:
          hidden_size: hidden layer size ``H``.
          w_i_init: initializer of the input kernel's posterior *mean* ``w_i_loc``
            ``[n_in, 3 H]``. ``None``: the kernel initializer's own, or else ``hk.GRU``'s
            default, ``VarianceScaling()`` (truncated normal, variance ``1 / fan_in``).
          w_h_init: the same for the recurrent kernel ``w_h_loc`` ``[H, 3 H]``.
          b_init: initializer of the bias's posterior mean ``[3 H]`` (``None``: zeros).
          name: module name.
          kernel_initializer: posterior of both kernels; default mean-field normal.
          kernel_regularizer: their penalty, one per kernel; default ``KL(q || N(0, 1))``.
          bias_initializer: the bias's posterior; default a point mass, as in Edward2.
          bias_regularizer: the bias's penalty; default none.
        """
        super().__init__(name=name)
        self.hidden_size = hidden_size
        self.input_size: Optional[int] = None
        kernel_initializer = get_initializer(kernel_initializer)
        self.input_kernel_initializer = kernel_initializer.with_loc_init(w_i_init)
        self.hidden_kernel_initializer = kernel_initializer.with_loc_init(w_h_init)
        self.bias_initializer = get_initializer(bias_initializer).with_loc_init(b_init)
        self.kernel_regularizer = get_regularizer(kernel_regularizer)
        self.bias_regularizer = get_regularizer(bias_regularizer)

    def initial_state(self, batch_size: Optional[int]) -> BayesianGRUState:
        """Zero ``hidden`` (``[batch_size, H]``, or ``[H]`` for ``None``), as ``hk.GRU``, and
        the sequence's weight key from ``hk.next_rng_key()`` (see
        ``LSTMCellReparameterization.initial_state``)."""
        return BayesianGRUState(self._initial_hidden(batch_size), self.next_weight_key())

    def __call__(
        self,
        inputs: jax.Array,
        prev_state: Union[BayesianGRUState, jax.Array],
    ) -> Tuple[jax.Array, BayesianGRUState]:
        """One step: ``(h, next_state)``, with ``h`` ``[B, H]`` (``[H]`` for rank-1 inputs).

        Args:
          inputs: ``[B, n_in]`` or ``[n_in]``, floating point.
          prev_state: a state from :meth:`initial_state` or a previous step (a plain hidden
            array, ``hk.GRU``'s state, is accepted only at the posterior mean).
        """
        inputs = self._check_inputs(inputs)
        draw_key, weight_key = self._weight_keys(prev_state)
        state = prev_state.hidden if isinstance(prev_state, BayesianGRUState) else prev_state
        state = jnp.asarray(state)
        hidden, dtype = self.hidden_size, inputs.dtype
        w_i = self.weight_distribution(
            "w_i", (inputs.shape[-1], 3 * hidden), dtype, self.input_kernel_initializer,
            self.kernel_regularizer, hk.initializers.VarianceScaling())
        w_h = self.weight_distribution(
            "w_h", (hidden, 3 * hidden), dtype, self.hidden_kernel_initializer,
            self.kernel_regularizer, hk.initializers.VarianceScaling())
        b = self.weight_distribution(
            "b", (3 * hidden,), dtype, self.bias_initializer, self.bias_regularizer, jnp.zeros)
        input_key, hidden_key, bias_key = (
            (None, None, None) if draw_key is None else jax.random.split(draw_key, 3))
        draw = LINEAR_DRAWS[self._sequence_estimator()]
        rows = inputs.shape[:-1]
        x_weights, _ = draw(w_i, input_key, rows)
        h_weights, _ = draw(w_h, hidden_key, rows)
        bias = sample_or_mean(b, bias_key)
        # hk.GRU's equations; w_h's columns [:2H] gate h, [2H:] gate r * h (one draw of w_h).
        gates_x = x_weights(inputs)
        zr = gates_x[..., :2 * hidden] + h_weights(state, slice(0, 2 * hidden)) + bias[:2 * hidden]
        z, r = jnp.split(jax.nn.sigmoid(zr), indices_or_sections=2, axis=-1)
        a = jnp.tanh(gates_x[..., 2 * hidden:] + h_weights(r * state, slice(2 * hidden, None))
                     + bias[2 * hidden:])
        next_hidden = (1 - z) * state + z * a
        return next_hidden, BayesianGRUState(next_hidden, weight_key)


class GRUReparameterization(_BayesianGRU):
    """``hk.GRU`` with a distribution over its weights, one weight draw per sequence.

    As :class:`LSTMCellReparameterization`: ``initial_state`` draws the sequence's key from
    ``hk.next_rng_key()`` into ``BayesianGRUState.weight_key``, every step draws ``w_i``,
    ``w_h``, ``b`` from that key (``split(key, 3)``, each as ``DenseReparameterization``
    draws its kernel), so a sequence of any length uses one weight sample, and ``bl.losses()``
    counts each kernel's KL once. Works with ``hk.dynamic_unroll``, ``hk.static_unroll`` and
    ``hk.DeepRNN``.

    Differences from ``hk.GRU``: the state is a :class:`BayesianGRUState`, not the hidden
    array (``state.hidden`` is it), and ``hk.ResetCore`` does not apply. Parameters (default
    posterior): ``w_i_loc``, ``w_i_raw_scale`` ``[n_in, 3 H]``, ``w_h_loc``, ``w_h_raw_scale``
    ``[H, 3 H]`` and ``b`` ``[3 H]``: ``hk.GRU``'s ``w_i``, ``w_h``, ``b`` as posteriors.
    """

    _default_estimator = "reparameterization"


class GRUFlipout(_BayesianGRU):
    """``hk.GRU`` with a distribution over its weights, Flipout estimator.

    As :class:`GRUReparameterization`, but each sequence of the batch sees its own
    pseudo-independent weights: perturbations and signs all derive from the state's key, so
    each sequence keeps its weights at every step. Same parameters.
    """

    _default_estimator = "flipout"
