"""Trace-time switches for every layer of a network: the posterior mean, the estimator."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Optional

import jax

_POSTERIOR_MEAN = contextvars.ContextVar("mbrl_bayes_layers_posterior_mean", default=False)


class _PosteriorMean(contextlib.ContextDecorator):
    """The context manager / decorator returned by :func:`posterior_mean`."""

    def __init__(self, enabled: bool):
        if isinstance(enabled, jax.core.Tracer):
            raise TypeError(
                "bl.posterior_mean(enabled) is decided at trace time and needs a Python bool, "
                "got a traced value: mark that argument static, e.g. "
                "jax.jit(apply, static_argnames='evaluate').")
        self._enabled = bool(enabled)
        self._token = None

    def _recreate_cm(self) -> "_PosteriorMean":
        # A decorated function may run concurrently or re-entrantly: one token per use.
        return _PosteriorMean(self._enabled)

    def __enter__(self) -> "_PosteriorMean":
        if self._token is not None:
            raise RuntimeError("A bl.posterior_mean() context is not re-entrant; create a new one.")
        self._token = _POSTERIOR_MEAN.set(self._enabled)
        return self

    def __exit__(self, *exc_info) -> None:
        _POSTERIOR_MEAN.reset(self._token)
        self._token = None


def posterior_mean(enabled: bool = True) -> _PosteriorMean:
    """Evaluates every Bayesian layer at its posterior mean instead of a weight sample.

    A context manager and a function decorator. The switch is read when a layer is *traced*,
    so enter it inside the function that ``jax.jit`` traces (or decorate that function), never
    around a call to an already-jitted function, whose cached trace would be reused::

        mean_apply = jax.jit(bl.posterior_mean()(model.apply))
        y = mean_apply(params, None, x)          # no rng needed: nothing is sampled

        def forward(x, evaluate: bool):          # or choose inside the model (evaluate static)
            with bl.posterior_mean(evaluate):
                return model(x)

    Inside the context layers draw no keys (so ``apply(params, None, ...)`` works), a Flipout
    layer computes ``x @ mean(W)``, ``bl.MCDropout`` is the identity, and an LSTM or GRU
    cell's ``initial_state`` carries no weight key (a state made outside the context is
    evaluated at the mean inside it, its key carried along unchanged).
    ``bl.losses()`` is unaffected: the KL depends on the posterior, not on a sample.

    Args:
      enabled: ``False`` restores sampling inside an enclosing ``posterior_mean()`` context.
    """
    return _PosteriorMean(enabled)


def is_posterior_mean() -> bool:
    """Whether layers traced now evaluate at the posterior mean (see :func:`posterior_mean`)."""
    return _POSTERIOR_MEAN.get()


ESTIMATORS = ("reparameterization", "flipout", "local_reparameterization")
PER_ROW_ESTIMATORS = ("flipout", "local_reparameterization")
_ESTIMATOR = contextvars.ContextVar("mbrl_bayes_layers_estimator", default=None)


class _Estimator(contextlib.ContextDecorator):
    """The context manager / decorator returned by :func:`estimator`."""

    def __init__(self, name: Optional[str]):
        if name is not None and name not in ESTIMATORS:
            raise ValueError(f"bl.estimator: unknown estimator {name!r}; known: "
                             f"{', '.join(map(repr, ESTIMATORS))} (or None).")
        self._name = name
        self._token = None

    def _recreate_cm(self) -> "_Estimator":
        return _Estimator(self._name)

    def __enter__(self) -> "_Estimator":
        if self._token is not None:
            raise RuntimeError("A bl.estimator() context is not re-entrant; create a new one.")
        self._token = _ESTIMATOR.set(self._name)
        return self

    def __exit__(self, *exc_info) -> None:
        _ESTIMATOR.reset(self._token)
        self._token = None


def estimator(name: Optional[str]) -> _Estimator:
    """Chooses the estimator of every Bayesian layer traced inside, whatever its class.

    One network, either estimator: the ``*Reparameterization`` and ``*Flipout`` variants of a
    layer have the same parameters (names, shapes, initialisation) and differ only in how a
    call turns them into outputs, so a network written once is trained with one estimator and
    planned with the other, on the same ``params``::

        net = hk.transform(lambda x: bl.DenseFlipout(1)(jax.nn.relu(bl.DenseFlipout(64)(x))))
        params = net.init(key, x)
        train_apply = net.apply                                # the classes' own: Flipout
        plan_apply = bl.estimator("reparameterization")(net.apply)  # a key is one function

    * ``"reparameterization"``: one weight draw per call, shared by every row: the same key
      gives the same function. This is what planning needs (a function draw is a key); an
      ``bl.MCDropout`` layer draws one mask per call, shared by every row.
    * ``"flipout"``: every row gets its own pseudo-independent weights (Flipout), and an
      ``bl.MCDropout`` layer its own mask. Per-row noise decorrelates the rows of a minibatch,
      so gradients have lower variance: for training, not for drawing functions.
    * ``"local_reparameterization"`` (Kingma et al. 2015): every row's *outputs* are drawn
      from their exact Gaussian, ``x @ loc + sqrt(x**2 @ scale**2) * eps`` (a convolution
      likewise): independent rows at the cost of two products, for mean-field normal
      posteriors (dense and convolution layers; dropout: a mask per row). Recurrent cells
      raise ``ValueError``: fresh output noise at every step is not one weight sample per
      sequence.
    * ``None``: each layer's own (its class's; ``bl.MCDropout``'s ``per_row``), restoring the
      default inside an enclosing context.

    As :func:`posterior_mean`, the choice is read when a layer is *traced*: enter it inside the
    function ``jax.jit`` traces (or decorate that function). ``bl.posterior_mean()`` wins over
    it (the mean needs no estimator); recurrent cells draw all noise from the key in their
    state, so each sequence keeps one function under either estimator. ``bl.bayesian``,
    ``bl.DenseBatchEnsemble`` and ``bl.DenseRank1`` have one estimator and ignore it.

    Args:
      name: ``"reparameterization"``, ``"flipout"``, ``"local_reparameterization"`` or
        ``None``.

    Raises:
      ValueError: for another name.
    """
    return _Estimator(name)


def current_estimator() -> Optional[str]:
    """The estimator chosen by the innermost :func:`estimator` context, or ``None``."""
    return _ESTIMATOR.get()
