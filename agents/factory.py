"""Builds models, optimizers and agents from a ``RunConfig``."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence

import envs
from agents.agents import ModelBasedAgent, PETSAgent, RandomAgent, ThompsonAgent
from agents.config import (
    AGENT_NAMES,
    MODEL_NAMES,
    ModelConfig,
    PlannerConfig,
    RunConfig,
    check_fused_kernel,
    fused_kernel_kind,
)
from mbrl_bayes import models, planning


def kernel_config(cfg: ModelConfig):
    """The ``mbrl_bayes.kernels.KernelConfig`` that ``cfg.fused_kernel`` names, or None (XLA).
    The one place that selects a kernel; the kernels package is imported only here."""
    kind = fused_kernel_kind(cfg)
    if kind is None:
        return None
    from mbrl_bayes import kernels

    return kernels.KernelConfig(backend=kind)


# name -> (ensemble, probabilistic) of the PETS variants (Chua et al. 2018).
_ENSEMBLE_VARIANTS = {"pe": (True, True), "de": (True, False), "p": (False, True),
                      "d": (False, False)}


def _ensemble(cfg: ModelConfig, common: dict) -> Any:
    ensemble, probabilistic = _ENSEMBLE_VARIANTS[cfg.name]
    check_fused_kernel(cfg)
    kwargs = dict(common, ensemble_size=cfg.ensemble_size if ensemble else 1,
                  probabilistic=probabilistic, num_elites=cfg.num_elites if ensemble else None)
    kernel = kernel_config(cfg)
    if kernel is None:
        return models.ProbabilisticEnsemble(**kwargs)
    from mbrl_bayes.kernels import KernelEnsemble

    return KernelEnsemble(**kwargs, kernel=kernel)


def _dropout(cfg: ModelConfig, common: dict) -> Any:
    return models.MCDropoutMLP(**common, dropout_rate=cfg.dropout_rate)


def _variational_lstm(cfg: ModelConfig, common: dict) -> Any:
    return models.VariationalLSTM(**common, lstm_size=cfg.lstm_size,
                                  sequence_length=cfg.sequence_length,
                                  prior_stddev=cfg.prior_stddev)


def _variational_mlp(cfg: ModelConfig, common: dict) -> Any:
    return models.VariationalMLP(**common, estimator=cfg.estimator,
                                 prior_stddev=cfg.prior_stddev)


def _network(cfg: ModelConfig, common: dict) -> Any:
    network = common.get("network")
    if network is None:
        raise ValueError(f"This run's model is the network {cfg.network!r}, and a run folder "
                         f"never imports code by itself: give --network {cfg.network} again.")
    return models.NetworkDynamics(network, obs_dim=common["obs_dim"],
                                  act_dim=common["act_dim"], learn_reward=cfg.learn_reward,
                                  ignored_obs_dims=common["ignored_obs_dims"])


def _gaussian_process(cfg: ModelConfig, common: dict) -> Any:
    return models.GaussianProcessDynamics(
        obs_dim=common["obs_dim"], act_dim=common["act_dim"], num_inducing=cfg.num_inducing,
        depth=1 if cfg.name == "gp" else cfg.dgp_depth, learn_reward=cfg.learn_reward,
        ignored_obs_dims=common["ignored_obs_dims"])


def load_network(spec: str) -> Any:
    """Imports the network named by ``spec``: ``"path/to/file.py:name"`` (a file, run as a
    module) or ``"package.module:name"`` (``name`` may be dotted); the object is what
    ``models.NetworkDynamics`` takes (a Haiku function or an ``(init, apply)`` pair).

    Raises:
      ValueError: one line, for a malformed spec, a file or module that cannot be imported,
        a missing name, or an object that is not a function or a pair of functions.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"--network needs 'path/to/file.py:function' or "
                         f"'package.module:function', got {spec!r}.")
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ValueError(f"--network {spec!r} lacks the module or the function name.")
    try:
        if where.endswith(".py") or os.sep in where:
            if not os.path.isfile(where):
                raise ValueError(f"--network {spec!r}: file {where} does not exist.")
            module_name = f"_mbrl_bayes_network_{os.path.splitext(os.path.basename(where))[0]}"
            module_spec = importlib.util.spec_from_file_location(module_name, where)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except Exception as e:  # the user's code: whatever it raises, one line
        raise ValueError(f"--network {spec!r}: importing {where} failed: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         ) from e
    network: Any = module
    for attr in name.split("."):
        if not hasattr(network, attr):
            raise ValueError(f"--network {spec!r}: {where} has no {name!r}.")
        network = getattr(network, attr)
    pair = isinstance(network, (tuple, list)) and len(network) == 2 and all(
        callable(f) for f in network)
    if not (callable(network) or pair):
        raise ValueError(f"--network {spec!r} is neither a function nor an (init, apply) pair.")
    return network


# Keyed by ``MODEL_NAMES``, in its order (tests/test_cli.py checks they are the same).
MODEL_BUILDERS: Dict[str, Callable[[ModelConfig, dict], Any]] = {
    **{name: _ensemble for name in _ENSEMBLE_VARIANTS},
    "vmlp": _variational_mlp,
    "vlstm": _variational_lstm,
    "dropout": _dropout,
    "network": _network,
    "gp": _gaussian_process,
    "dgp": _gaussian_process,
}


def build_model(cfg: ModelConfig, obs_dim: int, act_dim: int,
                network: Optional[Any] = None, ignored_obs_dims: Sequence[int] = ()) -> Any:
    """The dynamics model named by ``cfg.name`` (one of ``MODEL_NAMES``); for ``network``,
    ``models.NetworkDynamics`` of ``network`` (the object ``cfg.network`` names: the caller
    imports it, e.g. with :func:`load_network`, since a run folder never imports code).
    ``ignored_obs_dims``: obs entries the model's network does not see (``build_agent`` passes
    the task's ``absolute_position_dims``)."""
    if cfg.name not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model {cfg.name!r}; known: {', '.join(MODEL_NAMES)}.")
    common = dict(obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=tuple(cfg.hidden_sizes),
                  learn_reward=cfg.learn_reward, activation=cfg.activation,
                  ignored_obs_dims=tuple(ignored_obs_dims))
    if cfg.name == "network":
        common["network"] = network
    return MODEL_BUILDERS[cfg.name](cfg, common)


# Constructor argument of a trajectory optimizer -> the PlannerConfig field that sets it; each
# optimizer gets the ones its constructor takes.
_OPTIMIZER_ARGS = {"population_size": "population", "num_elites": "elites",
                   "num_iterations": "iterations", "alpha": "alpha", "noise_beta": "noise_beta",
                   "temperature": "temperature"}


def build_optimizer(cfg: PlannerConfig) -> Any:
    """The trajectory optimizer named by ``cfg.optimizer`` (a key of ``planning.OPTIMIZERS``)."""
    if cfg.optimizer not in planning.OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; known: "
                         f"{', '.join(planning.OPTIMIZERS)}.")
    cls = planning.OPTIMIZERS[cfg.optimizer]
    accepted = inspect.signature(cls).parameters
    return cls(**{arg: getattr(cfg, field) for arg, field in _OPTIMIZER_ARGS.items()
                  if arg in accepted})


def train_kwargs(config: RunConfig) -> dict:
    return dataclasses.asdict(config.train)


# Keyed by ``AGENT_NAMES``, in its order (tests/test_cli.py checks they are the same).
AGENT_CLASSES: Dict[str, type] = {"pets": PETSAgent, "thompson": ThompsonAgent,
                                  "random": RandomAgent}


def build_agent(config: RunConfig, network: Optional[Any] = None) -> Any:
    """The agent of ``config`` for its env (a ``RandomAgent`` or a model-based agent);
    ``network``: the network of model ``network`` (see :func:`build_model`)."""
    if config.agent not in AGENT_CLASSES:
        raise ValueError(f"Unknown agent {config.agent!r}; known: {', '.join(AGENT_NAMES)}.")
    cls = AGENT_CLASSES[config.agent]
    spec = envs.task(config.env, action_repeat=config.action_repeat)
    if not issubclass(cls, ModelBasedAgent):
        return cls(spec.action_low, spec.action_high)
    # As PETS's models: an unbounded absolute position (the cheetah's x), kept in the
    # observation for the reward only, is no input of the dynamics (its change is predicted).
    model = build_model(config.model, spec.obs_dim, spec.act_dim, network,
                        ignored_obs_dims=spec.absolute_position_dims)
    thompson = issubclass(cls, ThompsonAgent)
    propagation = "thompson" if thompson else config.planner.propagation
    mpc = planning.MPC(
        model, build_optimizer(config.planner), spec.reward_fn, spec.termination_fn,
        horizon=config.planner.horizon, action_low=spec.action_low,
        action_high=spec.action_high, num_particles=config.planner.num_particles,
        propagation=propagation, beta=config.planner.beta, bonus=config.planner.bonus,
        bonus_scale=config.planner.bonus_scale,
    )
    return cls(model, mpc, train_kwargs(config))
