"""Evaluation at the posterior mean: a trace-time switch from sampled weights to their means."""

from __future__ import annotations

import contextlib
import contextvars

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
    layer computes ``x @ mean(W)``, and an LSTM cell's ``initial_state`` carries no weight key.
    ``bl.losses()`` is unaffected: the KL depends on the posterior, not on a sample.

    Args:
      enabled: ``False`` restores sampling inside an enclosing ``posterior_mean()`` context.
    """
    return _PosteriorMean(enabled)


def is_posterior_mean() -> bool:
    """Whether layers traced now evaluate at the posterior mean (see :func:`posterior_mean`)."""
    return _POSTERIOR_MEAN.get()
