"""``bayesian(fn)``: any Haiku function made Bayesian in one call.

Haiku's custom creators and getters intercept the parameters ``fn`` asks for. A *chosen*
parameter (by default every weight matrix and kernel: at least two dimensions) is not stored;
in its place a trainable initializer (default: mean-field normal) stores its posterior's
parameters in the same module, under the names the Bayesian layers use (``w_loc``,
``w_raw_scale``), and every read of it returns one draw from that posterior. The posterior
mean starts at the value the original initializer gives the parameter, so the Bayesian net
starts where the deterministic one would.

A function sample is a key, as for the hand-written layers: one key is taken from
``hk.next_rng_key()`` per transformed call, and each parameter's draw is keyed by
``fold_in(key, crc32(full name))``. A module applied twice, or at every step of an
``hk.scan``, therefore uses the same weights within one call, and a parameter's draw does not
depend on the order in which parameters are read.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import threading
import zlib
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import haiku as hk
import jax
from haiku._src import base as hk_base  # the per-transform-call context has no public handle

from mbrl_bayes.layers import collection
from mbrl_bayes.layers.initializers import InitializerLike, TrainableInitializer, get_initializer
from mbrl_bayes.layers.modes import is_posterior_mean
from mbrl_bayes.layers.module import BayesianModule
from mbrl_bayes.layers.regularizers import RegularizerLike, get_regularizer

Predicate = Callable[[str, str, Tuple[int, ...]], bool]

def default_predicate(module_name: str, name: str, shape: Tuple[int, ...]) -> bool:
    """Chooses the weight matrices and kernels: every parameter with at least two dimensions
    (not biases, scales or offsets)."""
    del module_name, name
    return len(shape) >= 2


# Set while this module creates or reads a posterior's own parameters (``w_loc``, ...), which
# the interceptors must pass through untouched.
_BUILDING = contextvars.ContextVar("mbrl_bayes_layers_bayesian_building", default=False)


def _building_posterior(initializer: TrainableInitializer, name: str, shape: Tuple[int, ...],
                        dtype: Any, default_loc_init: Any):
    token = _BUILDING.set(True)
    try:
        return initializer(name, shape, dtype, default_loc_init)
    finally:
        _BUILDING.reset(token)


class _Scope(hk.Module):
    """Re-enters a parameter's module scope by name (``hk.experimental.force_name``)."""

    def penalty(self, record: collection.PenaltyRecord) -> jax.Array:
        posterior = _building_posterior(record.initializer, record.name, record.shape,
                                        record.dtype, record.default_loc_init)
        return record.regularizer(posterior, hk.maybe_next_rng_key())


@dataclasses.dataclass(frozen=True)
class _ParameterOwner:
    """Stands for the module that owns a chosen parameter in ``bl.losses()``'s records (which
    may be any Haiku module, or none): it recomputes the penalty in that module's scope."""

    module_name: str

    def penalty(self, record: collection.PenaltyRecord) -> jax.Array:
        return _Scope(name=hk.experimental.force_name(self.module_name)).penalty(record)


_local = threading.local()


def _keys_by_call() -> Dict[int, Tuple[Any, Optional[jax.Array]]]:
    if not hasattr(_local, "keys_by_call"):
        _local.keys_by_call = {}
    return _local.keys_by_call


def _call_key() -> Optional[jax.Array]:
    """The current transformed call's weight key (``None`` without an rng), taken from
    ``hk.maybe_next_rng_key()`` the first time it is asked for in the call."""
    context = hk_base.current_context()
    registry = _keys_by_call()
    entry = registry.get(id(context))
    if entry is None or entry[0] is not context:
        active = {id(c) for c in hk_base.context_stack}  # calls ended by an exception
        for ended in [i for i in registry if i not in active]:
            del registry[ended]
        entry = registry[id(context)] = (context, hk.maybe_next_rng_key())
        context.add_teardown_callback(lambda: registry.pop(id(context), None))
    return entry[1]


def _name_hash(full_name: str) -> int:
    return zlib.crc32(full_name.encode()) & 0x7FFFFFFF


def bayesian(
    fn: Callable[..., Any],
    *,
    predicate: Optional[Predicate] = None,
    initializer: InitializerLike = "trainable_normal",
    regularizer: RegularizerLike = "normal_kl_divergence",
) -> Callable[..., Any]:
    """Makes the Haiku function ``fn`` Bayesian: chosen parameters become distributions.

    Every parameter that ``fn`` (and the modules it calls) creates with ``hk.get_parameter``
    and that ``predicate`` chooses is replaced by a trainable posterior made by
    ``initializer`` in the same module (default mean-field normal: ``{name}_loc``, initialised
    by the parameter's own initializer, and ``{name}_raw_scale``, starting at stddev
    ``softplus(-3) ~= 0.049``). Each read of the parameter returns one draw (see below); its
    penalty ``regularizer(posterior)`` (default ``KL(q || N(0, 1))``) joins ``bl.losses()``,
    once per call however often the module runs. Under ``bl.posterior_mean()`` (and in
    ``init``, whose outputs are discarded) the parameter is its posterior mean and no key is
    drawn. Parameters of ``bl`` layers inside ``fn`` are left to those layers.

    A function sample is a key: one key per transformed call (the first time a wrapped
    function runs in it, from ``hk.next_rng_key()``), and parameter ``p``'s draw uses
    ``fold_in(key, crc32(full_name(p)))``. So a module applied twice, or inside ``hk.scan``,
    uses the same weights within a call, and ``jax.vmap(f.apply, (None, 0, 0))(params, keys,
    x)`` applies function ``i`` to ``x[i]``. Call the wrapped function outside ``hk.vmap`` /
    ``hk.scan`` (wrap the function that calls them), so that the key is taken once::

        def mlp(x):
            return hk.nets.MLP([64, 64, 1])(x)

        bnn = hk.transform(bl.bayesian(mlp))                    # all weight matrices
        last = bl.bayesian(mlp, predicate=lambda module, name, shape:
                           module.endswith("linear_2") and name == "w")    # last layer only

        def loss_fn(x, y):
            return nll(bl.bayesian(mlp)(x), y) + sum(bl.losses()) / dataset_size

    Args:
      fn: a function that is called inside ``hk.transform`` (any arguments and outputs).
      predicate: ``predicate(module_name, name, shape) -> bool`` chooses the parameters,
        e.g. ``("mlp/~/linear_2", "w", (64, 1))``; default :func:`default_predicate` (every
        parameter with two or more dimensions).
      initializer: the chosen parameters' posterior (a ``TrainableInitializer`` or its name);
        its ``loc_init``, when set, replaces the parameters' own initializers. Default
        ``TrainableNormal()``, whose constant raw-scale init takes no key: with the same key,
        ``init`` gives every posterior mean the value the deterministic net's ``init`` does.
      regularizer: the penalty of each chosen parameter (a ``Regularizer``, its name or
        ``None``); default ``KL(q || N(0, 1))``.

    Returns:
      A function with ``fn``'s signature and outputs.

    Raises:
      TypeError: when ``fn`` or ``predicate`` is not callable, or for a bad initializer or
        regularizer (ValueError for an unknown name).
    """
    if not callable(fn):
        raise TypeError(f"bl.bayesian needs a function, got {fn!r}.")
    predicate = default_predicate if predicate is None else predicate
    if not callable(predicate):
        raise TypeError(
            f"bl.bayesian's predicate must be a function of (module_name, name, shape), "
            f"got {predicate!r}.")
    posterior_init = get_initializer(initializer)
    penalty = get_regularizer(regularizer)

    def chosen(context: hk.GetterContext) -> bool:
        if _BUILDING.get() or isinstance(context.module, BayesianModule):
            return False
        return bool(predicate(context.module_name, context.name,
                              tuple(int(d) for d in context.original_shape)))

    def creator(next_creator, shape: Sequence[int], dtype: Any, init: Any,
                context: hk.GetterContext):
        if chosen(context):
            return hk.DO_NOT_STORE  # the getter stores the posterior's parameters instead
        return next_creator(shape, dtype, init)

    def getter(next_getter, value: Any, context: hk.GetterContext):
        if not chosen(context):
            return next_getter(value)
        shape = tuple(int(d) for d in context.original_shape)
        dtype = context.original_dtype
        posterior = _building_posterior(posterior_init, context.name, shape, dtype,
                                        context.original_init)
        if penalty is not None:
            collection.record_penalty(collection.PenaltyRecord(
                module=_ParameterOwner(context.module_name), name=context.name, shape=shape,
                dtype=dtype, initializer=posterior_init,
                default_loc_init=context.original_init, regularizer=penalty))
        if is_posterior_mean() or hk.running_init():
            return next_getter(posterior.mean())
        key = _call_key()
        if key is None:
            raise ValueError(
                f"bl.bayesian samples parameter {context.full_name!r} from hk.next_rng_key(), "
                f"but no rng was given: call apply(params, rng, ...), or evaluate at the "
                f"posterior mean with bl.posterior_mean().")
        return next_getter(posterior.sample(seed=jax.random.fold_in(
            key, _name_hash(context.full_name))))

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if not is_posterior_mean() and not hk.running_init():
            _call_key()  # taken here, outside any hk.scan / hk.vmap inside fn
        with hk.custom_creator(creator), hk.custom_getter(getter):
            return fn(*args, **kwargs)

    return wrapped
