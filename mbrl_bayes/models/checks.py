"""Input checks at the models' public entry points, and ``check_model`` for model authors.

Shape checks read only shapes, so they run at trace time (inside ``jit``, ``vmap`` and
``lax.scan`` as well) and cost nothing in compiled code; each failure is one ``ValueError``
line that states the shapes expected. Finiteness checks need values: ``check_finite`` looks at
concrete arrays only (a no-op on tracers), so it belongs where data enters (``init``,
``predict``, ``MPC.act``, training data), never inside a planner's jitted loop.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_obs_act(obs: Any, act: Any, obs_dim: int, act_dim: int, where: str,
                  axes: Optional[Sequence[str]] = None) -> None:
    """Raises a one-line ValueError unless ``obs`` [..., obs_dim] and ``act`` [..., act_dim]
    share their leading dimensions; with ``axes`` (e.g. ``("n",)``: [n, d]) exactly those."""
    obs_shape, act_shape = np.shape(obs), np.shape(act)
    lead = "..." if axes is None else ", ".join(axes)
    ndim = None if axes is None else len(axes) + 1
    if len(obs_shape) < 1 or obs_shape[-1] != obs_dim or (ndim and len(obs_shape) != ndim):
        raise ValueError(f"{where}: obs must have shape [{lead}, {obs_dim}], got {obs_shape}.")
    if len(act_shape) < 1 or act_shape[-1] != act_dim or (ndim and len(act_shape) != ndim):
        raise ValueError(f"{where}: act must have shape [{lead}, {act_dim}], got {act_shape}.")
    if obs_shape[:-1] != act_shape[:-1]:
        raise ValueError(
            f"{where}: obs {obs_shape} and act {act_shape} must share their leading dimensions."
        )


def check_finite(name: str, x: Any) -> None:
    """Raises a one-line ValueError if concrete array ``x`` holds NaN or inf (no-op on tracers)."""
    if isinstance(x, jax.core.Tracer):
        return
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf values.")


def check_training_draws(training_draws: Any) -> int:
    """``training_draws`` (the noise draws per minibatch in a loss) as an int; ValueError
    unless it is a positive whole number."""
    if int(training_draws) != training_draws or training_draws < 1:
        raise ValueError(f"training_draws must be a positive integer, got {training_draws}.")
    return int(training_draws)


def num_draws(fns: Any, where: str) -> int:
    """The number ``k`` of function draws in ``fns``: the leading axis shared by its array
    leaves (one-line ValueError if there is none, or they disagree)."""
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(fns)]
    leading = {s[0] for s in shapes if len(s) >= 1}
    if len(leading) != 1:
        found = "no array leaves" if not leading else f"leading axes {sorted(leading)}"
        raise ValueError(f"{where}: fns must be k function draws from sample_functions (every "
                         f"leaf with leading axis k), got {found}.")
    return leading.pop()


def check_draw_inputs(fns: Any, obs: Any, act: Any, obs_dim: int, act_dim: int, where: str,
                      carry: Any = None) -> None:
    """Raises a one-line ValueError unless ``obs`` [k, m, d] and ``act`` [k, m, a] match the
    ``k`` draws in ``fns`` (and a recurrent ``carry``'s leaves start with [k, m])."""
    check_obs_act(obs, act, obs_dim, act_dim, where, axes=("k", "m"))
    k = num_draws(fns, where)
    if np.shape(obs)[0] != k:
        raise ValueError(f"{where}: obs {np.shape(obs)} must have one row block per function "
                         f"draw, [k={k}, m, {obs_dim}] (function axis first).")
    lead = tuple(np.shape(obs)[:2])
    for leaf in jax.tree_util.tree_leaves(carry):
        if tuple(np.shape(leaf)[:2]) != lead:
            raise ValueError(f"{where}: carry leaves must be [k, m, ...] = {list(lead)}, got "
                             f"{np.shape(leaf)}.")


def checks_draw_inputs(method: Callable) -> Callable:
    """Decorates ``transition``/``step(self, params, fns, key, obs, act, ...)`` with
    :func:`check_draw_inputs` (at trace time)."""
    names = ("params", "fns", "key", "obs", "act", "sample_noise", "carry")

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        given = dict(zip(names, args), **kwargs)
        where = f"{type(self).__name__}.{method.__name__}"
        if "fns" in given and "obs" in given and "act" in given:
            check_draw_inputs(given["fns"], given["obs"], given["act"], self.obs_dim,
                              self.act_dim, where, given.get("carry"))
        return method(self, *args, **kwargs)

    return checked


def checks_num_draws(method: Callable) -> Callable:
    """Decorates ``sample_functions(self, params, key, k)``: ``k`` must be an int >= 1."""

    @functools.wraps(method)
    def checked(self, params, key, k, *args, **kwargs):
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{type(self).__name__}.sample_functions: k must be an int >= 1 "
                             f"(a static number of draws), got {k!r}.")
        return method(self, params, key, int(k), *args, **kwargs)

    return checked


# --------------------------------------------------------------------------- model authors
_CORE = ("init", "loss", "sample_functions", "transition", "step", "predict")
_TRAIN = ("fit_stats", "evaluate")
_EVALUATE_KEYS = ("score", "nll_score", "mse", "nll")


def check_model(model: Any, key: Optional[jax.Array] = None) -> List[str]:
    """What ``model`` lacks of the ``DynamicsModel`` contract (see ``models.base``): one line per
    missing piece; an empty list when nothing is missing.

    Without ``key`` only the attributes and methods are looked for. With ``key`` the model is
    also run once on a few zero transitions (``init``, ``fit_stats``, ``loss``, ``evaluate``,
    ``sample_functions``, ``transition``, ``predict``) and their outputs are checked against
    what ``train``, ``MPC`` and the calibration metrics read.
    """
    name = type(model).__name__
    problems = []
    for attr, kind in (("obs_dim", "a positive int"), ("act_dim", "a positive int")):
        value = getattr(model, attr, None)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            problems.append(f"{name}.{attr} must be {kind} (the {attr[:3]} size), got {value!r}.")
    if not hasattr(model, "num_functions"):
        problems.append(f"{name}.num_functions is missing: the number of distinct function "
                        "draws (int), or None when draws are unlimited (MPC reads it).")
    if not hasattr(model, "rollout_states"):
        problems.append(f"{name}.rollout_states is missing: None (the planner steps "
                        "transition), or a whole-horizon rollout (see DynamicsModel).")
    elif model.rollout_states is not None and not callable(model.rollout_states):
        problems.append(f"{name}.rollout_states must be None or callable, got "
                        f"{model.rollout_states!r}.")
    if not isinstance(getattr(model, "learns_reward", None), bool):
        problems.append(f"{name}.learns_reward is missing: a bool (MPC needs a reward_fn "
                        "when it is False).")
    for method in _CORE:
        if not callable(getattr(model, method, None)):
            problems.append(f"{name}.{method}() is missing (the DynamicsModel contract).")
    for method in _TRAIN:
        if not callable(getattr(model, method, None)):
            problems.append(f"{name}.{method}() is missing (models.train calls it).")
    if getattr(model, "sequence_length", None) and not callable(
            getattr(model, "initial_carry", None)):
        problems.append(f"{name}.initial_carry() is missing: a sequence model "
                        "(sequence_length) must give its zero history state (MPC calls it).")
    if problems or key is None:
        return problems
    return _run_model(model, key)


def _run_model(model: Any, key: jax.Array) -> List[str]:
    """``check_model``'s dynamic part: every entry point run once on a few zero rows; ``init``
    and ``fit_stats`` on the host (as ``models.train`` runs them), the others abstractly
    (``jax.eval_shape``: shapes and structure, nothing computed or compiled)."""
    name, d, a, n = type(model).__name__, int(model.obs_dim), int(model.act_dim), 4
    window = getattr(model, "sequence_length", None)
    lead = (n, int(window)) if window else (n,)
    batch = {"obs": np.zeros(lead + (d,), np.float32), "act": np.zeros(lead + (a,), np.float32),
             "next_obs": np.zeros(lead + (d,), np.float32),
             "reward": np.zeros(lead, np.float32)}
    flat = {k: v.reshape((-1,) + v.shape[len(lead):]) for k, v in batch.items()}
    problems: List[str] = []

    def attempt(what: str, fn: Callable[..., Any], *args: Any, concrete: bool = False) -> Any:
        try:
            return fn(*args) if concrete else jax.eval_shape(fn, *args)
        except Exception as e:  # report, and go on with what does not depend on it
            message = str(e).strip().splitlines()[0] if str(e).strip() else ""
            problems.append(f"{name}.{what} failed: {type(e).__name__}: {message}")
            return None

    # init and fit_stats run on the host, as models.train runs them (fit_stats may read values,
    # e.g. a GP places its inducing points on data rows); the rest is traced abstractly.
    params = attempt("init(key, obs [n, d], act [n, a])",
                     lambda: model.init(key, flat["obs"], flat["act"]), concrete=True)
    if params is None:
        return problems
    if not isinstance(params, dict) or "stats" not in params:
        problems.append(f"{name}.init must return a dict of params with a 'stats' entry "
                        "(models.train fits it with fit_stats and never trains it).")
        return problems
    fitted = attempt("fit_stats(params, data)", lambda p: model.fit_stats(p, flat), params,
                     concrete=True)
    if fitted is not None and (not isinstance(fitted, dict) or "stats" not in fitted):
        problems.append(f"{name}.fit_stats must return the params with their 'stats' entry.")
    out = attempt("loss(params, key, batch)", lambda p: model.loss(p, key, batch), params)
    if out is not None and not (isinstance(out, tuple) and len(out) == 2
                                and isinstance(out[1], dict) and "mse" in out[1]
                                and np.shape(out[0]) == ()):
        problems.append(f"{name}.loss must return (scalar loss, metrics dict with 'mse'); "
                        "models.train logs metrics['mse'].")
    metrics = attempt("evaluate(params, key, batch)", lambda p: model.evaluate(p, key, batch),
                      params)
    if metrics is not None:
        missing = [k for k in _EVALUATE_KEYS if not isinstance(metrics, dict) or k not in metrics]
        if missing:
            problems.append(f"{name}.evaluate must return a dict with {list(_EVALUATE_KEYS)} "
                            f"(models.train stops early on them); missing {missing}.")
    obs, act = np.zeros((2, 3, d), np.float32), np.zeros((2, 3, a), np.float32)
    tr = attempt("transition(params, sample_functions(params, key, 2), key, obs [k, m, d], "
                 "act [k, m, a])",
                 lambda p: model.transition(p, model.sample_functions(p, key, 2), key, obs,
                                            act), params)
    if tr is not None:
        next_obs = getattr(tr, "next_obs", None)
        if np.shape(next_obs) != (2, 3, d):
            problems.append(f"{name}.transition must return a Transition with next_obs "
                            f"[k, m, d] = [2, 3, {d}], got {np.shape(next_obs)}.")
        reward = getattr(tr, "reward", None)
        if model.learns_reward and np.shape(reward) != (2, 3):
            problems.append(f"{name}.transition must return reward [k, m] when "
                            f"learns_reward, got {np.shape(reward)}.")

    def predicted_shapes(params):
        dist = model.predict(params, key, flat["obs"], flat["act"])
        if not callable(getattr(dist, "log_prob", None)):
            return None
        return (jnp.zeros(tuple(dist.batch_shape)), jnp.zeros(tuple(dist.event_shape)),
                dist.log_prob(flat["next_obs"]))

    shapes = attempt("predict(params, key, obs [n, d], act [n, a])", predicted_shapes, params)
    rows = len(flat["obs"])
    if shapes is None or shapes[0].shape != (rows,) or shapes[1].shape != (d,) \
            or shapes[2].shape != (rows,):
        if not any(p.startswith(f"{name}.predict(") for p in problems):
            got = "no distribution" if shapes is None else \
                f"batch {list(shapes[0].shape)}, event {list(shapes[1].shape)}"
            problems.append(f"{name}.predict must return a distrax distribution with batch "
                            f"shape [n] and event shape [d] (the calibration metrics read it), "
                            f"got {got}.")
    return problems
