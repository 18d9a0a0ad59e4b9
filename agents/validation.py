"""The one validation of a ``RunConfig``: types, ranges, finiteness and cross-field rules.

``validate_config`` runs on the config a run will use (a ``--config`` file merged with the
command line's flags) before anything is built; ``check_fields`` checks each field on its own,
so that a bad value in a file is reported even where a flag would replace it. Nothing is ever
rewritten: every violation is reported as one line naming the field (``planner.elites``), all
of them joined into one ValueError message. ``FIELDS`` holds each field's meaning and rule
(shown by ``mbrl-bayes config --help``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from agents import config as cfg

# A rule takes the field's value (already of the right type) and returns what is wrong, or None.
Rule = Callable[[Any], Optional[str]]


def _positive(value: Any) -> Optional[str]:
    return None if value > 0 else f"must be a positive number, got {value!r}"


def _non_negative(value: Any) -> Optional[str]:
    return None if value >= 0 else f"must be >= 0, got {value!r}"


def _in_unit(low_open: bool) -> Rule:
    def rule(value: Any) -> Optional[str]:
        ok = (0 < value < 1) if low_open else (0 <= value < 1)
        return None if ok else f"must be in {'(' if low_open else '['}0, 1), got {value!r}"
    return rule


def _choice(what: str, choices: Callable[[], Tuple[str, ...]]) -> Rule:
    def rule(value: Any) -> Optional[str]:
        known = tuple(choices())
        if value in known:
            return None
        return f"Unknown {what} {value!r}; known: {', '.join(known)}"
    return rule


def _optional(rule: Rule) -> Rule:
    return lambda value: None if value is None else rule(value)


def _all_positive(values: Any) -> Optional[str]:
    if all(v > 0 for v in values):
        return None
    return f"must hold positive numbers, got {list(values)}"


def _at_least_two(value: Any) -> Optional[str]:
    return None if value >= 2 else f"must be >= 2, got {value!r}"


def _seed(value: int) -> Optional[str]:
    return None if 0 <= value < 2**63 else f"must be in [0, 2**63), got {value}"


def _fused_kernel(value: Any) -> Optional[str]:
    try:
        cfg.fused_kernel_kind(cfg.ModelConfig(fused_kernel=value))
    except ValueError as e:
        return str(e).rstrip(".").removeprefix("fused_kernel ")
    return None


def _envs() -> Tuple[str, ...]:
    import envs  # registry lookups only

    return tuple(envs.names())


def _envs_module():
    import envs

    return envs


def _activations() -> Tuple[str, ...]:
    from mbrl_bayes.models.gaussian import ACTIVATIONS

    return tuple(ACTIVATIONS)


def _planning():
    from mbrl_bayes import planning

    return planning


def _estimators() -> Tuple[str, ...]:
    from mbrl_bayes.models.variational import ESTIMATORS

    return tuple(ESTIMATORS)


def _early_stopping() -> Tuple[str, ...]:
    from mbrl_bayes.models.training import EARLY_STOPPING_SCORES

    return tuple(EARLY_STOPPING_SCORES)


# path -> (meaning, rule); every field of RunConfig and its sections has an entry.
FIELDS: Dict[str, Tuple[str, Optional[Rule]]] = {
    "env": ("task name (`envs.names()`)", _choice("env", _envs)),
    "agent": ("pets (model + MPC), thompson (one posterior draw per episode) or random",
              _choice("agent", lambda: cfg.AGENT_NAMES)),
    "seed": ("random seed of the whole run, >= 0", _seed),
    "trials": ("number of MPC trials (episodes after the seed data), > 0", _positive),
    "seed_steps": ("random-action steps collected before the first trial, >= 0", _non_negative),
    "episode_length": ("steps per trial; null: the task's own horizon", _optional(_positive)),
    "action_repeat": ("env steps per agent step (each action held that long; tasks with a "
                      "closed-form block reward only, e.g. mountaincar), >= 1", _positive),
    "eval_calibration": ("score the model's calibration on each trial's episode (true/false)",
                         None),
    "model.name": ("dynamics model: pe, de, p, d (PETS ensembles), vmlp (variational MLP), "
                   "vlstm (variational LSTM), dropout (MC dropout), network (your own, with "
                   "--network), gp (sparse variational GP), dgp (deep GP)",
                   _choice("model", lambda: cfg.MODEL_NAMES)),
    "model.hidden_sizes": ("hidden layer widths, e.g. [200, 200, 200]", _all_positive),
    "model.ensemble_size": ("members of pe/de ensembles (p/d use 1), > 0", _positive),
    "model.num_elites": ("members of pe/de used for planning (best on the holdout); "
                         "null: all", _optional(_positive)),
    "model.learn_reward": ("also learn the reward (planning still uses the task's reward)",
                           None),
    "model.activation": ("hidden activation", _choice("activation", _activations)),
    "model.dropout_rate": ("dropout probability of the dropout model, in (0, 1)",
                           _in_unit(low_open=True)),
    "model.estimator": ("gradient estimator of vmlp: flipout or reparameterization",
                        _choice("estimator", _estimators)),
    "model.prior_stddev": ("stddev of the N(0, s^2) weight prior of vmlp/vlstm, > 0", _positive),
    "model.lstm_size": ("LSTM hidden size of vlstm, > 0", _positive),
    "model.sequence_length": ("training window (steps) of vlstm, > 0", _positive),
    "model.fused_kernel": ("pe/de/p/d on a GPU: plan through the Pallas kernels of "
                           "mbrl_bayes.kernels, triton or mosaic (Hopper+); null: XLA",
                           _fused_kernel),
    "model.network": ("model network only: the user's network, 'path/to/file.py:function' or "
                      "'package.module:function' (recorded; imported only from --network)",
                      None),
    "model.num_inducing": ("inducing points per output of gp/dgp, > 0", _positive),
    "model.dgp_depth": ("GP layers of dgp, >= 2", _at_least_two),
    "train.batch_size": ("minibatch size, > 0", _positive),
    "train.max_epochs": ("epochs per training, > 0", _positive),
    "train.patience": ("epochs without holdout improvement before stopping, > 0", _positive),
    "train.learning_rate": ("Adam learning rate, > 0", _positive),
    "train.weight_decay": ("decoupled weight decay of the weight matrices, >= 0", _non_negative),
    "train.holdout_fraction": ("share of the data held out for early stopping, in [0, 1)",
                               _in_unit(low_open=False)),
    "train.early_stopping": ("holdout score that stops training and picks elites: mse or nll",
                             _choice("early_stopping", _early_stopping)),
    "planner.optimizer": ("trajectory optimizer: cem, icem, mppi or random_shooting",
                          _choice("optimizer", lambda: tuple(_planning().OPTIMIZERS))),
    "planner.horizon": ("planning horizon (steps), > 0", _positive),
    "planner.population": ("candidate action sequences per iteration, > 0", _positive),
    "planner.elites": ("candidates refitting cem/icem's distribution, <= population",
                       _positive),
    "planner.iterations": ("optimizer iterations per action, > 0", _positive),
    "planner.alpha": ("cem/icem smoothing of the refit (weight of the old mean), in [0, 1)",
                      _in_unit(low_open=False)),
    "planner.num_particles": ("particles per candidate, > 0", _positive),
    "planner.propagation": ("how particles use function draws: ts1, ts_inf, mean, thompson, "
                            "optimistic or hucrl (optimism by hallucinated control)",
                            _choice("propagation", lambda: _planning().PROPAGATIONS)),
    "planner.beta": ("optimism weight of optimistic (mean + beta * spread) and hucrl "
                     "(mean + beta * std * eta)",
                     None),
    "planner.noise_beta": ("icem colored-noise exponent, >= 0", _non_negative),
    "planner.temperature": ("mppi temperature, > 0", _positive),
    "planner.bonus": ("exploration bonus added to the planned return: disagreement (the "
                      "spread of the function draws' predictions; with mean or hucrl) or null",
                      _optional(_choice("bonus", lambda: tuple(_planning().BONUSES)))),
    "planner.bonus_scale": ("weight of the exploration bonus per step, >= 0", _non_negative),
}


# Fields whose rule checks the type too: ``fused_kernel`` also takes ``false`` and ``""`` (XLA),
# as written by run configs before the kernels had names (``config.fused_kernel_kind``).
_OWN_TYPE_CHECK = frozenset({"model.fused_kernel"})


# --------------------------------------------------------------------------- types
def _type_problem(value: Any, hint: Any) -> Optional[str]:
    """What is wrong with the type of ``value`` for annotation ``hint`` (None: nothing)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value is None:
            return None
        options = [a for a in args if a is not type(None)]
        problems = [_type_problem(value, a) for a in options]
        if any(p is None for p in problems):
            return None
        wanted = " or ".join(_describe(a) for a in options)
        return f"must be {wanted}{' or null' if type(None) in args else ''}, got {value!r}"
    if origin in (tuple, list):
        inner = args[0] if args else Any
        if not isinstance(value, (tuple, list)) or any(
                _type_problem(v, inner) for v in value):
            return f"must be a list of {_describe(inner, plural=True)}, got {value!r}"
        return None
    checks = {  # numpy scalars (from a search's samplers) count as numbers
        bool: lambda v: isinstance(v, (bool, np.bool_)),
        int: lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }
    if hint in checks and not checks[hint](value):
        return f"must be {_describe(hint)}, got {value!r}"
    if hint is float and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return None


def _describe(hint: Any, plural: bool = False) -> str:
    if plural:
        return {int: "whole numbers", float: "numbers", str: "strings"}.get(hint, str(hint))
    return {bool: "true or false", int: "a whole number", float: "a number",
            str: "a string"}.get(hint, str(hint))


def _fields(obj: Any, prefix: str = ""):
    """(path, value, annotation) of every leaf field of dataclass ``obj``; a section (a nested
    dataclass field) that holds something else comes with the annotation ``None``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, path = getattr(obj, f.name), f"{prefix}{f.name}"
        section = f.default_factory is not dataclasses.MISSING and \
            dataclasses.is_dataclass(f.default_factory)
        if section and dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _fields(value, f"{path}.")
        else:
            yield path, value, None if section else hints[f.name]


# --------------------------------------------------------------------------- checks
def check_fields(config: "cfg.RunConfig") -> List[str]:
    """One line per field whose value has the wrong type, is not finite or is out of range."""
    problems = []
    for path, value, hint in _fields(config):
        if hint is None:
            problems.append(f"{path} must be a JSON object, got {value!r}")
            continue
        problem = None if path in _OWN_TYPE_CHECK else _type_problem(value, hint)
        if problem is None:
            rule = FIELDS.get(path, ("", None))[1]
            problem = rule(value) if rule is not None else None
        if problem is not None:  # "Unknown <name> ..." already names the field
            problems.append(problem if problem.startswith("Unknown ") else f"{path} {problem}")
    return problems


_SHARED_DATA_ENSEMBLES = ("pe", "de")  # agents.factory builds p and d with one member


def _uses_elites(optimizer: str) -> bool:
    """Whether ``planning.OPTIMIZERS[optimizer]`` takes ``num_elites`` (the factory passes
    ``planner.elites`` to the optimizers whose constructor takes it)."""
    return "num_elites" in inspect.signature(_planning().OPTIMIZERS[optimizer]).parameters


def _num_functions(config: "cfg.RunConfig") -> Tuple[int, str]:
    """Function draws per action that MPC will use, and the field that sets them."""
    model, planner = config.model, config.planner
    if config.agent == "thompson" or planner.propagation == "thompson":
        return 1, "propagation thompson"
    if model.name in _SHARED_DATA_ENSEMBLES:
        if model.num_elites is not None:
            return model.num_elites, "model.num_elites"
        return model.ensemble_size, "model.ensemble_size"
    if model.name in ("p", "d"):
        return 1, f"model {model.name}"
    return planner.num_particles, "planner.num_particles"


def check_cross_fields(config: "cfg.RunConfig") -> List[str]:
    """One line per violated rule between fields (run on well-typed fields only)."""
    model, planner = config.model, config.planner
    problems = []
    if model.name in _SHARED_DATA_ENSEMBLES and model.num_elites is not None \
            and model.num_elites > model.ensemble_size:
        problems.append(f"model.num_elites must be <= model.ensemble_size "
                        f"({model.ensemble_size}), got {model.num_elites}")
    if _uses_elites(planner.optimizer) and planner.elites > planner.population:
        problems.append(f"planner.elites must be <= planner.population ({planner.population}), "
                        f"got {planner.elites}")
    if config.agent != "random":
        k, source = _num_functions(config)
        mode = "thompson" if config.agent == "thompson" else planner.propagation
        if mode in ("ts1", "ts_inf", "optimistic") and planner.num_particles % k:
            problems.append(f"planner.num_particles ({planner.num_particles}) must be divisible "
                            f"by the {k} function draws of {source} (propagation {mode!r})")
        if mode == "optimistic" and k < 2:
            problems.append(f"propagation 'optimistic' needs >= 2 function draws, {source} "
                            f"gives {k}")
    checks = [lambda: cfg.check_fused_kernel(model), lambda: cfg.check_network(model),
              lambda: _envs_module().task(config.env, action_repeat=config.action_repeat)]
    if config.agent != "random":
        mode = "thompson" if config.agent == "thompson" else planner.propagation
        from mbrl_bayes.planning.rollout import check_bonus

        checks.append(lambda: check_bonus(planner.bonus, mode, planner.bonus_scale))
    for check in checks:
        try:
            check()
        except ValueError as e:
            problems.append(str(e).rstrip("."))
    return problems


def validate_config(config: "cfg.RunConfig", fields_only: bool = False) -> "cfg.RunConfig":
    """Returns ``config`` unchanged, or raises a ValueError listing every violation on one
    line. ``fields_only``: skip the cross-field rules (for a file that flags will complete)."""
    problems = check_fields(config)
    if not problems and not fields_only:
        problems = check_cross_fields(config)
    if problems:
        raise ValueError("; ".join(problems) + ".")
    return config


def describe_fields() -> str:
    """``FIELDS`` as lines ``path: meaning`` (the config schema, for ``--help``)."""
    width = max(len(p) for p in FIELDS)
    return "\n".join(f"  {path:<{width}}  {meaning}" for path, (meaning, _) in FIELDS.items())
