"""Optax training of a dynamics model on a replay buffer, with holdout and early stopping."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrl_bayes.compile import jit
from mbrl_bayes.models.base import Params
from mbrl_bayes.models.gaussian import check_finite
from mbrl_bayes.models.recurrent import sequence_windows

_FIELDS = ("obs", "act", "next_obs", "reward")


def buffer_arrays(buffer: Any) -> Dict[str, np.ndarray]:
    """The transitions of ``buffer`` (a ``ReplayBuffer`` or a mapping of arrays) as numpy arrays."""
    if isinstance(buffer, Mapping):
        data = buffer
    elif hasattr(buffer, "as_dict"):
        data = buffer.as_dict()
    elif hasattr(buffer, "get_all"):
        data = buffer.get_all()
    else:
        raise TypeError(
            f"Expected a ReplayBuffer or a dict of arrays, got {type(buffer).__name__}."
        )
    missing = [f for f in ("obs", "act", "next_obs") if f not in data]
    if missing:
        raise ValueError(f"Training data lacks the fields {missing}.")
    arrays = {f: np.asarray(data[f], np.float32) for f in _FIELDS if f in data}
    n = len(arrays["obs"])
    if n == 0:
        raise ValueError("Cannot train on an empty buffer: collect some transitions first.")
    for name, x in arrays.items():
        if len(x) != n:
            raise ValueError(f"Field {name!r} has {len(x)} rows but obs has {n}.")
        check_finite(f"Training data field {name!r}", x)
    return arrays


def _take(data: Dict[str, np.ndarray], idx: np.ndarray) -> Dict[str, np.ndarray]:
    return {k: v[idx] for k, v in data.items()}


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
            return trainable, opt_state, {"loss": loss, "mse": aux["mse"]}

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

    A random ``holdout_fraction`` of the data (at most ``max_holdout`` rows, at least one) is
    held out (sequence models, with a ``sequence_length``, hold out and train on windows of
    that many steps within one episode; they need a ``ReplayBuffer``). Ensembles
    (``model.num_members > 1``) train each member on its own bootstrap resample of the rest
    (``bootstrap=True``), all members in one jitted update step on a
    [members, batch_size, ...] batch. Training stops after ``max_epochs`` or when the holdout
    score has not improved by a relative ``improvement_threshold`` for ``patience`` epochs; each
    member keeps its weights from its best holdout epoch. Ensembles then keep their
    ``num_elites`` best members for planning. The holdout score is each member's MSE
    (``early_stopping='mse'``, as in PETS/mbrl-lib) or its Gaussian NLL (``'nll'``): with little
    data a probabilistic head keeps lowering the MSE long after its variances have become
    overconfident (on 1000 HalfCheetah transitions the holdout NLL is lowest near epoch 35 and
    11 nats worse by epoch 200, while the MSE still falls), and the NLL score stops there.

    ``history`` maps ``epoch``, ``train_loss``, ``train_mse``, ``holdout_mse``, ``holdout_nll``,
    ``holdout_score`` and ``seconds`` to per-epoch lists (standardized target units), plus
    one-element lists ``best_epoch``, ``num_train``/``num_holdout`` and
    ``final_holdout_mse``/``final_holdout_nll`` (the returned params on the holdout).
    """
    if batch_size <= 0 or max_epochs <= 0 or patience <= 0:
        raise ValueError("batch_size, max_epochs and patience must be positive.")
    if early_stopping not in EARLY_STOPPING_SCORES:
        raise ValueError(f"early_stopping must be 'mse' or 'nll', got {early_stopping!r}.")
    score_name = EARLY_STOPPING_SCORES[early_stopping]
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}.")
    data = buffer_arrays(buffer)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1].item())
    window = getattr(model, "sequence_length", None)
    if window:  # sequence models: the units are windows of `window` steps within an episode
        units = sequence_windows(buffer, window)
        offsets = np.arange(window)
    else:
        units = np.arange(len(data["obs"]))
    n = len(units)
    perm = units[rng.permutation(n)]
    num_holdout = min(max_holdout, max(1, int(round(holdout_fraction * n)))) if n > 1 else 0
    if holdout_fraction == 0.0:
        num_holdout = 0
    holdout_idx, train_idx = perm[:num_holdout], perm[num_holdout:]
    if window:
        if refit_stats:
            params = model.fit_stats(params, data)
        train_idx = np.sort(train_idx)
        holdout_data = _take(data, (holdout_idx if num_holdout else train_idx)[:, None] + offsets)
        train_data = data  # minibatches gather windows [B, window] from it
    else:
        train_data = _take(data, train_idx)
        holdout_data = _take(data, holdout_idx) if num_holdout else train_data
        if refit_stats:
            params = model.fit_stats(params, train_data)
        train_idx = np.arange(len(train_idx))  # positions in train_data
    num_members = int(getattr(model, "num_members", 1))
    n_train = len(train_idx)
    if num_members > 1 and bootstrap:
        member_idx = train_idx[rng.integers(0, n_train, size=(num_members, n_train))]
    else:
        member_idx = np.tile(train_idx, (num_members, 1))
    batch = min(batch_size, n_train)
    num_batches = max(1, n_train // batch)

    steps = _Steps.get(model, (learning_rate, weight_decay, max_grad_norm))
    trainable, stats = _split_params(params)
    # The update step donates its inputs; copy, so that the caller's params stay usable.
    trainable = jax.tree_util.tree_map(jnp.copy, trainable)
    opt_state = steps.optimizer.init(trainable)
    holdout_jax = jax.tree_util.tree_map(jnp.asarray, holdout_data)
    train_jax = jax.tree_util.tree_map(jnp.asarray, train_data)

    key, eval_key = jax.random.split(key)
    best = steps.evaluate({**trainable, "stats": stats}, eval_key, holdout_jax)[score_name]
    best = np.asarray(best)
    best_trainable = jax.tree_util.tree_map(jnp.copy, trainable)
    history: Dict[str, List[float]] = {
        k: [] for k in ("epoch", "train_loss", "train_mse", "holdout_mse", "holdout_nll",
                        "holdout_score", "seconds")
    }
    best_epoch, epochs_since_improvement = 0, 0
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        order = rng.permuted(member_idx, axis=1)[:, : num_batches * batch]
        order = order.reshape(order.shape[0], num_batches, batch).swapaxes(0, 1)
        losses, mses = [], []
        for b in range(num_batches):
            idx = order[b] if num_members > 1 else order[b, 0]
            if window:
                idx = idx[..., None] + offsets
            minibatch = {name: x[idx] for name, x in train_jax.items()}
            key, step_key = jax.random.split(key)
            trainable, opt_state, metrics = steps.update(
                trainable, opt_state, stats, step_key, minibatch
            )
            losses.append(metrics["loss"])
            mses.append(metrics["mse"])
        key, eval_key = jax.random.split(key)
        holdout = steps.evaluate({**trainable, "stats": stats}, eval_key, holdout_jax)
        score = np.asarray(holdout[score_name])
        if not np.all(np.isfinite(score)):
            raise FloatingPointError(
                f"Holdout loss became non-finite at epoch {epoch}; lower the learning rate."
            )
        improved = (best - score) / np.maximum(np.abs(best), 1e-12) > improvement_threshold
        if improved.any():
            best_trainable = _keep_improved(best_trainable, trainable, improved, num_members)
            best = np.where(improved, score, best)
            best_epoch, epochs_since_improvement = epoch, 0
        else:
            epochs_since_improvement += 1
        history["epoch"].append(epoch)
        history["train_loss"].append(float(np.mean(jax.device_get(losses))))
        history["train_mse"].append(float(np.mean(jax.device_get(mses))))
        history["holdout_mse"].append(float(holdout["mse"]))
        history["holdout_nll"].append(float(holdout["nll"]))
        history["holdout_score"].append(float(score.mean()))
        history["seconds"].append(time.perf_counter() - start)
        if callback is not None:
            callback({k: v[-1] for k, v in history.items()})
        if epochs_since_improvement >= patience:
            break

    params = {**best_trainable, "stats": stats}
    # The returned params mix each member's best epoch, so evaluate them as returned.
    key, eval_key = jax.random.split(key)
    final = steps.evaluate(params, eval_key, holdout_jax)
    history["final_holdout_mse"] = [float(final["mse"])]
    history["final_holdout_nll"] = [float(final["nll"])]
    if hasattr(model, "with_elites"):
        params = model.with_elites(params, jnp.asarray(best))
    history["best_epoch"] = [best_epoch]
    history["num_train"] = [n_train]
    history["num_holdout"] = [num_holdout]
    return params, history


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
