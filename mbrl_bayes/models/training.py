"""Optax training of a dynamics model on a replay buffer, with holdout and early stopping."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrl_bayes.compile import jit
from mbrl_bayes.data import ReplayBuffer
from mbrl_bayes.models.base import Params

_FIELDS = ("obs", "act", "next_obs", "reward")


def as_replay_buffer(data: Any) -> ReplayBuffer:
    """``data`` as a ``ReplayBuffer``: a buffer as it is, or a mapping of arrays (``obs`` [n, d],
    ``act`` [n, a], ``next_obs`` [n, d], optional ``reward`` [n]) stored in a new one."""
    if isinstance(data, ReplayBuffer):
        buffer = data
    elif isinstance(data, Mapping):
        missing = [f for f in ("obs", "act", "next_obs") if f not in data]
        if missing:
            raise ValueError(f"Training data lacks the fields {missing}.")
        obs, act = np.asarray(data["obs"]), np.asarray(data["act"])
        if obs.ndim != 2 or act.ndim != 2:
            raise ValueError(f"Training data: obs and act must be [n, d] and [n, a] arrays, got "
                             f"{obs.shape} and {act.shape}.")
        n = len(obs)
        buffer = ReplayBuffer(max(n, 1), obs.shape[1], act.shape[1])
        if n:
            no_flags = np.zeros(n, bool)
            buffer.add(obs, act, data["next_obs"], data.get("reward", np.zeros(n, np.float32)),
                       no_flags, no_flags)
    else:
        raise TypeError(
            f"Expected a ReplayBuffer or a dict of arrays, got {type(data).__name__}."
        )
    if len(buffer) == 0:
        raise ValueError("Cannot train on an empty buffer: collect some transitions first.")
    return buffer


def _split_params(params: Params) -> Tuple[Params, Params]:
    trainable = {k: v for k, v in params.items() if k != "stats"}
    return trainable, params["stats"]


def make_optimizer(
    learning_rate: float, weight_decay: float, max_grad_norm: Optional[float]
) -> optax.GradientTransformation:
    """Adam with decoupled weight decay on weight matrices only, after global-norm clipping."""

    def decay_mask(trainable: Params) -> Params:
        return jax.tree_util.tree_map(lambda x: x.ndim >= 2, trainable)

    parts = []
    if max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    parts.append(optax.adamw(learning_rate, weight_decay=weight_decay, mask=decay_mask))
    return optax.chain(*parts)


class _Steps:
    """The model's jitted update and evaluation functions, cached per (model, optimizer)."""


    def __init__(self, model: Any, optimizer: optax.GradientTransformation):
        def loss_fn(trainable, stats, key, batch):
            return model.loss({**trainable, "stats": stats}, key, batch)

        def update(trainable, opt_state, stats, key, batch):
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                trainable, stats, key, batch
            )
            updates, opt_state = optimizer.update(grads, opt_state, trainable)
            trainable = optax.apply_updates(trainable, updates)
            return trainable, opt_state, {"loss": loss, "nll": aux["nll"], "mse": aux["mse"]}

        def evaluate(params, key, batch):
            return model.evaluate(params, key, batch)

        self.update = jit(update, donate_argnums=(0, 1))
        self.evaluate = jit(evaluate)
        self.optimizer = optimizer

    @classmethod
    def get(cls, model: Any, opt_config: Tuple) -> "_Steps":
        """Compiled once per model object and optimizer settings (kept on the model, so they
        live exactly as long as it does)."""
        cache = model.__dict__.setdefault("_train_steps", {})
        if opt_config not in cache:
            cache[opt_config] = cls(model, make_optimizer(*opt_config))
        return cache[opt_config]


# ``train(early_stopping=...)`` -> the ``model.evaluate`` entry it stops (and picks elites) on.
EARLY_STOPPING_SCORES = {"mse": "score", "nll": "nll_score"}


def train(
    model: Any,
    params: Params,
    buffer: Any,
    key: jax.Array,
    *,
    batch_size: int = 256,
    max_epochs: int = 50,
    patience: int = 5,
    learning_rate: float = 1e-3,
    weight_decay: float = 5e-5,
    max_grad_norm: Optional[float] = 10.0,
    holdout_fraction: float = 0.1,
    max_holdout: int = 5000,
    bootstrap: bool = True,
    refit_stats: bool = True,
    improvement_threshold: float = 0.01,
    early_stopping: str = "mse",
    callback: Optional[Callable[[Dict[str, float]], None]] = None,
) -> Tuple[Params, Dict[str, List[float]]]:
    """Trains ``model`` on the transitions in ``buffer``; returns ``(params, history)``.

    ``buffer`` is a ``ReplayBuffer`` or, except for sequence models, a dict of arrays (see
    :func:`as_replay_buffer`); the data go through the buffer's sampling. ``split`` holds out
    a random ``holdout_fraction`` (at most ``max_holdout`` units, at least one), where a unit
    is a transition or, for sequence models (with a ``sequence_length``), a window of that
    many steps within one episode; ``bootstrap_indices`` gives each ensemble member
    (``model.num_members > 1``) its own resample of the training units (``bootstrap=True``),
    and all members train in one jitted update step on a [members, batch_size, ...] batch.
    Training stops after ``max_epochs`` or when the holdout score has not improved by a
    relative ``improvement_threshold`` for ``patience`` epochs; each member keeps its weights
    from its best holdout epoch. Ensembles then keep their ``num_elites`` best members for
    planning.
    The holdout score is each member's MSE (``early_stopping='mse'``, as in PETS/mbrl-lib) or
    its NLL (``'nll'``): with little data a probabilistic head keeps lowering the MSE long
    after its variances have become overconfident (on 1000 HalfCheetah transitions the holdout
    NLL is lowest near epoch 35, 14 nats per transition, and 109 by epoch 200, while the MSE
    still falls), and the NLL score stops there.

    ``history`` maps ``epoch``, ``train_loss`` (the model's objective), ``train_nll``,
    ``train_mse``, ``holdout_mse``, ``holdout_nll``, ``holdout_score`` and ``seconds`` to
    per-epoch lists, plus one-element lists ``best_epoch``, ``num_train``/``num_holdout``
    (units) and ``final_holdout_mse``/``final_holdout_nll`` (the returned params on the
    holdout). MSEs and NLLs are in standardized target units; NLLs in nats per transition
    (:mod:`~mbrl_bayes.models.likelihood`), comparable across model families.
    """
    score_name = _check_train_args(batch_size, max_epochs, patience, holdout_fraction,
                                   early_stopping)
    window = getattr(model, "sequence_length", None) or None
    buffer = _training_buffer(model, buffer, window)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1].item())
    train_idx, holdout_idx = buffer.split(rng, holdout_fraction, max_holdout, window)
    data = {f: np.asarray(x, np.float32) for f, x in buffer.as_dict().items() if f in _FIELDS}
    rows = _Rows(window)
    if refit_stats:
        params = _fit_stats(model, params, data, train_idx, rows)
    num_members = int(getattr(model, "num_members", 1))
    member_idx = _member_indices(buffer, rng, num_members, train_idx, bootstrap)
    batch = min(batch_size, len(train_idx))

    steps = _Steps.get(model, (learning_rate, weight_decay, max_grad_norm))
    trainable, stats = _split_params(params)
    # The update step donates its inputs; copy, so that the caller's params stay usable.
    trainable = jax.tree_util.tree_map(jnp.copy, trainable)
    opt_state = steps.optimizer.init(trainable)
    data_jax = jax.tree_util.tree_map(jnp.asarray, data)
    holdout_jax = _take(data_jax, rows(holdout_idx if len(holdout_idx) else train_idx))

    def evaluate(trainable: Params, key: jax.Array) -> dict:
        return steps.evaluate({**trainable, "stats": stats}, key, holdout_jax)

    key, eval_key = jax.random.split(key)
    stopper = _EarlyStopping(np.asarray(evaluate(trainable, eval_key)[score_name]), trainable,
                             num_members, improvement_threshold)
    history: Dict[str, List[float]] = {k: [] for k in _EPOCH_COLUMNS}
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        trainable, opt_state, key, train_metrics = _run_epoch(
            steps, trainable, opt_state, stats, key, data_jax, rows,
            _epoch_batches(rng, member_idx, batch))
        key, eval_key = jax.random.split(key)
        holdout = evaluate(trainable, eval_key)
        score = np.asarray(holdout[score_name])
        if not np.all(np.isfinite(score)):
            raise FloatingPointError(
                f"Holdout loss became non-finite at epoch {epoch}; lower the learning rate."
            )
        stopper.update(epoch, score, trainable)
        _record(history, epoch, train_metrics, holdout, score, time.perf_counter() - start)
        if callback is not None:
            callback({k: v[-1] for k, v in history.items()})
        if stopper.epochs_since_improvement >= patience:
            break

    params = {**stopper.best_trainable, "stats": stats}
    # The returned params mix each member's best epoch, so evaluate them as returned.
    key, eval_key = jax.random.split(key)
    final = evaluate(stopper.best_trainable, eval_key)
    history["final_holdout_mse"] = [float(final["mse"])]
    history["final_holdout_nll"] = [float(final["nll"])]
    if hasattr(model, "with_elites"):
        params = model.with_elites(params, jnp.asarray(stopper.best))
    history["best_epoch"] = [stopper.best_epoch]
    history["num_train"] = [len(train_idx)]
    history["num_holdout"] = [len(holdout_idx)]
    return params, history


_EPOCH_COLUMNS = ("epoch", "train_loss", "train_nll", "train_mse", "holdout_mse", "holdout_nll",
                  "holdout_score", "seconds")


def _check_train_args(batch_size: int, max_epochs: int, patience: int, holdout_fraction: float,
                      early_stopping: str) -> str:
    """One-line ValueErrors for unusable settings; returns the ``evaluate`` entry to stop on."""
    if batch_size <= 0 or max_epochs <= 0 or patience <= 0:
        raise ValueError("batch_size, max_epochs and patience must be positive.")
    if early_stopping not in EARLY_STOPPING_SCORES:
        raise ValueError(f"early_stopping must be 'mse' or 'nll', got {early_stopping!r}.")
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}.")
    return EARLY_STOPPING_SCORES[early_stopping]


def _training_buffer(model: Any, data: Any, window: Optional[int]) -> ReplayBuffer:
    """The ``ReplayBuffer`` that ``train`` reads (see :func:`as_replay_buffer`)."""
    if window and not isinstance(data, ReplayBuffer):
        raise TypeError("Sequence models train on a ReplayBuffer (it knows episode boundaries).")
    if getattr(model, "learns_reward", False) and isinstance(data, Mapping) \
            and "reward" not in data:
        raise ValueError("Training data lacks the field 'reward' that the model learns.")
    return as_replay_buffer(data)


class _Rows:
    """Unit indices -> row indices: a transition is its own row; a window of ``length`` steps
    starting at ``t`` is rows ``t .. t + length - 1`` (``ReplayBuffer.window_indices``)."""

    def __init__(self, length: Optional[int]):
        self.length = length

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return idx if self.length is None else ReplayBuffer.window_indices(idx, self.length)


def _take(data: Dict[str, Any], idx: np.ndarray) -> Dict[str, Any]:
    return {k: v[idx] for k, v in data.items()}


def _fit_stats(model: Any, params: Params, data: Dict[str, np.ndarray], train_idx: np.ndarray,
               rows: _Rows) -> Params:
    """Refits the model's standardization on the training transitions (sequence models: on
    every stored transition, since their training windows overlap the holdout's)."""
    fit_data = data if rows.length is not None else _take(data, train_idx)
    return model.fit_stats(params, fit_data)


def _member_indices(buffer: ReplayBuffer, rng: np.random.Generator, num_members: int,
                    train_idx: np.ndarray, bootstrap: bool) -> np.ndarray:
    """Each member's training units [num_members, n_train]: a bootstrap resample of
    ``train_idx`` per member for ensembles (with ``bootstrap``), else ``train_idx`` itself."""
    if num_members > 1 and bootstrap:
        return buffer.bootstrap_indices(rng, num_members, indices=train_idx)
    return np.tile(train_idx, (num_members, 1))


def _epoch_batches(rng: np.random.Generator, member_idx: np.ndarray, batch: int) -> np.ndarray:
    """One epoch's minibatches of units [num_batches, num_members, batch]: each member's units
    reshuffled, the remainder that does not fill a batch dropped."""
    num_batches = max(1, member_idx.shape[1] // batch)
    order = rng.permuted(member_idx, axis=1)[:, : num_batches * batch]
    return order.reshape(order.shape[0], num_batches, batch).swapaxes(0, 1)


def _run_epoch(steps: _Steps, trainable: Params, opt_state: Any, stats: Params, key: jax.Array,
               data: Dict[str, jax.Array], rows: _Rows, batches: np.ndarray):
    """One update step per minibatch (ensembles: [members, batch, ...] batches; other models:
    [batch, ...]), each with its own key split off ``key``; returns the new ``trainable``,
    ``opt_state``, ``key`` and the epoch's mean loss, NLL and MSE."""
    per_member = batches.shape[1] > 1
    metrics = []
    for idx in batches:
        key, step_key = jax.random.split(key)
        minibatch = _take(data, rows(idx if per_member else idx[0]))
        trainable, opt_state, step_metrics = steps.update(
            trainable, opt_state, stats, step_key, minibatch
        )
        metrics.append(step_metrics)
    means = {k: float(np.mean(v)) for k, v in jax.device_get(_stack(metrics)).items()}
    return trainable, opt_state, key, means


def _stack(metrics: List[Dict[str, jax.Array]]) -> Dict[str, jax.Array]:
    return {k: jnp.stack([m[k] for m in metrics]) for k in metrics[0]}


class _EarlyStopping:
    """The best holdout score of each member, the weights that reached it, and the patience
    count (relative improvements above ``threshold`` count)."""

    def __init__(self, score: np.ndarray, trainable: Params, num_members: int, threshold: float):
        self.best = score
        self.best_trainable = jax.tree_util.tree_map(jnp.copy, trainable)
        self.num_members = num_members
        self.threshold = threshold
        self.best_epoch = 0
        self.epochs_since_improvement = 0

    def update(self, epoch: int, score: np.ndarray, trainable: Params) -> None:
        improved = (self.best - score) / np.maximum(np.abs(self.best), 1e-12) > self.threshold
        if improved.any():
            self.best_trainable = _keep_improved(self.best_trainable, trainable, improved,
                                                 self.num_members)
            self.best = np.where(improved, score, self.best)
            self.best_epoch, self.epochs_since_improvement = epoch, 0
        else:
            self.epochs_since_improvement += 1


def _record(history: Dict[str, List[float]], epoch: int, train_metrics: Dict[str, float],
            holdout: dict, score: np.ndarray, seconds: float) -> None:
    history["epoch"].append(epoch)
    history["train_loss"].append(train_metrics["loss"])
    history["train_nll"].append(train_metrics["nll"])
    history["train_mse"].append(train_metrics["mse"])
    history["holdout_mse"].append(float(holdout["mse"]))
    history["holdout_nll"].append(float(holdout["nll"]))
    history["holdout_score"].append(float(score.mean()))
    history["seconds"].append(seconds)


def _keep_improved(best: Params, new: Params, improved: np.ndarray, num_members: int) -> Params:
    """``new``, except that ensemble members (leading axis of the ``'net'`` leaves) that did not
    improve keep their ``best`` weights."""
    kept = jax.tree_util.tree_map(jnp.copy, new)
    if num_members > 1 and "net" in new:
        def pick(b, n):
            mask = jnp.asarray(improved).reshape((num_members,) + (1,) * (b.ndim - 1))
            return jnp.where(mask, n, b)

        kept["net"] = jax.tree_util.tree_map(pick, best["net"], new["net"])
    return kept
