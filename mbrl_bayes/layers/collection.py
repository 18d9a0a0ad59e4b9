"""``losses()``: the penalties of the Bayesian layers applied in the current transform call.

How it works. When a Bayesian layer is traced it *records* which weight it regularizes (its
module, the weight's name, shape, dtype, initializer and regularizer), never a computed array.
``losses()`` then re-enters each recorded module and rebuilds the posterior from the parameters
of the current call with ``hk.get_parameter``, so the KL is computed lazily in the caller's
scope: no tracer created under ``hk.vmap``, ``hk.remat``, ``hk.scan`` or ``jax.grad`` leaks out,
and a layer applied at many steps (or many times) is counted once.

Records are keyed to the current Haiku transform call (its ``HaikuContext``, which
``init``/``apply`` create afresh for each call and which ``hk.vmap``/``hk.remat``/``hk.scan``
share), live in thread-local storage and are dropped when the call ends.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Dict, List, Sequence, Tuple

import jax
from haiku._src import base as hk_base  # the per-transform-call context has no public handle

from mbrl_bayes.layers.initializers import Initializer, TrainableInitializer
from mbrl_bayes.layers.regularizers import Regularizer


@dataclasses.dataclass(frozen=True)
class PenaltyRecord:
    """Which weight of which module a penalty belongs to (no arrays: safe across scopes)."""

    module: Any  # a BayesianModule; Any avoids an import cycle
    name: str
    shape: Tuple[int, ...]
    dtype: Any
    initializer: TrainableInitializer
    default_loc_init: Initializer
    regularizer: Regularizer

    @property
    def key(self) -> Tuple[str, str]:
        return (self.module.module_name, self.name)


_local = threading.local()


def _records_by_call() -> Dict[int, Tuple[Any, Dict[Tuple[str, str], PenaltyRecord]]]:
    if not hasattr(_local, "records_by_call"):
        _local.records_by_call = {}
    return _local.records_by_call


def _current_call(caller: str) -> Any:
    if not hk_base.inside_transform():
        raise ValueError(
            f"{caller} must be called inside a function transformed by hk.transform or "
            f"hk.transform_with_state.")
    return hk_base.current_context()


def _drop_ended_calls(registry: Dict[int, Any]) -> None:
    # Calls that ended by an exception never ran their teardown callback.
    active = {id(context) for context in hk_base.context_stack}
    for ended in [i for i in registry if i not in active]:
        del registry[ended]


def record_penalty(record: PenaltyRecord) -> None:
    """Notes that ``record``'s weight was applied in the current transform call (once)."""
    context = _current_call("A Bayesian layer")
    registry = _records_by_call()
    entry = registry.get(id(context))
    if entry is None or entry[0] is not context:
        _drop_ended_calls(registry)
        entry = registry[id(context)] = (context, {})
        context.add_teardown_callback(lambda: registry.pop(id(context), None))
    entry[1].setdefault(record.key, record)


def recorded_penalties() -> Sequence[PenaltyRecord]:
    """The records of the current transform call, in order of first application."""
    context = _current_call("bl.losses()")
    entry = _records_by_call().get(id(context))
    if entry is None or entry[0] is not context:
        return ()
    return tuple(entry[1].values())


def losses() -> List[jax.Array]:
    """The penalties (KL terms) of the Bayesian layers applied so far in this transform call.

    One scalar per regularized weight (by default one per layer: the kernel's KL), in order of
    first application; each weight counts once however many times its layer ran (an LSTM
    unrolled over T steps, a layer called twice, or applied inside ``hk.vmap``). Monte Carlo
    penalties draw their keys from ``hk.maybe_next_rng_key()``. Use it inside the transformed
    function::

        def loss_fn(x, y):
            pred = model(x)
            return nll(pred, y) + sum(bl.losses()) / dataset_size

    Returns:
      A list of scalar arrays (empty when no regularized Bayesian layer ran yet).

    Raises:
      ValueError: outside ``hk.transform`` / ``hk.transform_with_state``.
    """
    return [record.module.penalty(record) for record in recorded_penalties()]
