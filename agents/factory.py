"""Builds models, optimizers and agents from a ``RunConfig``."""

from __future__ import annotations

import dataclasses
from typing import Any

import envs
from agents.agents import ModelBasedAgent, PETSAgent, RandomAgent, ThompsonAgent
from agents.config import (
    ModelConfig,
    PlannerConfig,
    RunConfig,
    check_fused_kernel,
    fused_kernel_kind,
)
from mbrl_bayes import models, planning


def fused_mlp_config(cfg: ModelConfig):
    """The ``FusedMLPConfig`` that ``cfg.fused_kernel`` names, or None (XLA's products)."""
    kind = fused_kernel_kind(cfg)
    if kind is None:
        return None
    if kind == "mosaic":
        return models.FusedMLPConfig(block_rows=128, dot_dtype="bfloat16", whole_horizon=True,
                                     backend="mosaic")
    return models.FusedMLPConfig(whole_horizon=kind == "horizon")


def build_model(cfg: ModelConfig, obs_dim: int, act_dim: int) -> Any:
    """The dynamics model named by ``cfg.name``."""
    common = dict(obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=tuple(cfg.hidden_sizes),
                  learn_reward=cfg.learn_reward, activation=cfg.activation)
    if cfg.name in ("pe", "de", "p", "d"):
        ensemble = cfg.name in ("pe", "de")
        check_fused_kernel(cfg)
        fused = fused_mlp_config(cfg)
        return models.ProbabilisticEnsemble(
            **common,
            ensemble_size=cfg.ensemble_size if ensemble else 1,
            probabilistic=cfg.name in ("pe", "p"),
            num_elites=cfg.num_elites if ensemble else None,
            fused_mlp=fused,
        )
    if cfg.name == "dropout":
        return models.MCDropoutMLP(**common, dropout_rate=cfg.dropout_rate)
    if cfg.name == "vlstm":
        return models.VariationalLSTM(**common, lstm_size=cfg.lstm_size,
                                      sequence_length=cfg.sequence_length,
                                      prior_stddev=cfg.prior_stddev)
    if cfg.name == "vmlp":
        return models.VariationalMLP(**common, estimator=cfg.estimator,
                                     prior_stddev=cfg.prior_stddev)
    if cfg.name in ("gp", "dgp"):
        return models.GaussianProcessDynamics(
            obs_dim=obs_dim, act_dim=act_dim, num_inducing=cfg.num_inducing,
            depth=1 if cfg.name == "gp" else cfg.dgp_depth, learn_reward=cfg.learn_reward)
    raise ValueError(f"Unknown model {cfg.name!r}.")


def build_optimizer(cfg: PlannerConfig) -> Any:
    """The trajectory optimizer named by ``cfg.optimizer``."""
    if cfg.optimizer == "cem":
        return planning.CEM(population_size=cfg.population, num_elites=cfg.elites,
                            num_iterations=cfg.iterations, alpha=cfg.alpha)
    if cfg.optimizer == "icem":
        return planning.ICEM(population_size=cfg.population, num_elites=cfg.elites,
                             num_iterations=cfg.iterations, alpha=cfg.alpha,
                             noise_beta=cfg.noise_beta)
    if cfg.optimizer == "mppi":
        return planning.MPPI(population_size=cfg.population, num_iterations=cfg.iterations,
                             temperature=cfg.temperature)
    if cfg.optimizer == "random_shooting":
        return planning.RandomShooting(population_size=cfg.population)
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r}.")


def train_kwargs(config: RunConfig) -> dict:
    return dataclasses.asdict(config.train)


def build_agent(config: RunConfig) -> Any:
    """The agent of ``config`` for its env (a ``RandomAgent`` or a model-based agent)."""
    spec = envs.task(config.env)
    if config.agent == "random":
        return RandomAgent(spec.action_low, spec.action_high)
    model = build_model(config.model, spec.obs_dim, spec.act_dim)
    propagation = "thompson" if config.agent == "thompson" else config.planner.propagation
    mpc = planning.MPC(
        model, build_optimizer(config.planner), spec.reward_fn, spec.termination_fn,
        horizon=config.planner.horizon, action_low=spec.action_low,
        action_high=spec.action_high, num_particles=config.planner.num_particles,
        propagation=propagation, beta=config.planner.beta,
    )
    cls: type[ModelBasedAgent] = ThompsonAgent if config.agent == "thompson" else PETSAgent
    return cls(model, mpc, train_kwargs(config))
