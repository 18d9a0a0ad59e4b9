"""Bayesian drop-in replacements for ``hk.LSTM``: one weight draw per sequence."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import haiku as hk
import jax
import jax.numpy as jnp

from mbrl_bayes.layers.dense import flipout_linear, reparameterized_linear
from mbrl_bayes.layers.initializers import (
    InitializerLike,
    TrainableInitializer,
    fan_in_truncated_normal,
    get_initializer,
)
from mbrl_bayes.layers.modes import is_posterior_mean
from mbrl_bayes.layers.module import BayesianModule, check_floating
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


class _BayesianLSTMCell(hk.RNNCore, BayesianModule):
    """An LSTM cell (``hk.LSTM``'s equations) whose gate weights are a distribution.

    ``_estimator`` (a class attribute) computes ``[x, h] @ W + b`` from the weight distributions
    and a key: reparameterization or Flipout.
    """

    _estimator = staticmethod(reparameterized_linear)

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
        zeros = jnp.zeros([self.hidden_size])
        hidden = cell = zeros if batch_size is None else jnp.broadcast_to(
            zeros, (batch_size, self.hidden_size))
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
        layer = type(self).__name__
        inputs = jnp.asarray(inputs)
        if inputs.ndim not in (1, 2):
            raise ValueError(f"{layer} input must be rank 1 [n_in] or rank 2 [B, n_in], got "
                             f"shape {inputs.shape}.")
        check_floating(inputs, layer)
        weight_key = self._weight_key(prev_state)
        self.check_feature_size("input_size", inputs.shape[-1], "input features")
        x_and_h = jnp.concatenate([inputs, prev_state.hidden], axis=-1)
        kernel_shape = (x_and_h.shape[-1], 4 * self.hidden_size)
        kernel = self.weight_distribution(
            "w", kernel_shape, inputs.dtype, self.kernel_initializer, self.kernel_regularizer,
            fan_in_truncated_normal(kernel_shape))
        bias = self.weight_distribution(
            "b", (4 * self.hidden_size,), inputs.dtype, self.bias_initializer,
            self.bias_regularizer, jnp.zeros)
        gated = type(self)._estimator(x_and_h, kernel, bias, weight_key)
        # Gate order and forget-gate bias exactly as hk.LSTM.
        i, g, f, o = jnp.split(gated, indices_or_sections=4, axis=-1)
        f = jax.nn.sigmoid(f + 1)
        c = f * prev_state.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, BayesianLSTMState(h, c, weight_key)

    def _weight_key(self, state) -> Optional[jax.Array]:
        layer = type(self).__name__
        if is_posterior_mean():
            return state.weight_key if isinstance(state, BayesianLSTMState) else None
        if not isinstance(state, BayesianLSTMState):
            raise TypeError(
                f"{layer} needs the state made by its initial_state(), which carries the "
                f"sequence's weight key; got {type(state).__name__}. To start from your own "
                f"hidden/cell use cell.initial_state(batch_size)._replace(hidden=h, cell=c).")
        if hk.running_init():
            return None  # init creates parameters at the mean (see next_weight_key)
        if state.weight_key is None:
            raise ValueError(
                f"{layer}: this state was made at the posterior mean and carries no weight "
                f"key; make it with initial_state() outside bl.posterior_mean() to sample.")
        return state.weight_key


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

    _estimator = staticmethod(reparameterized_linear)


class LSTMCellFlipout(_BayesianLSTMCell):
    """``hk.LSTM`` with a distribution over its weights, Flipout estimator.

    As :class:`LSTMCellReparameterization`, but each sequence of the batch sees its own
    pseudo-independent weights: the perturbation and the Flipout signs all derive from the
    state's key, so each sequence keeps its weights at every step.
    """

    _estimator = staticmethod(flipout_linear)
