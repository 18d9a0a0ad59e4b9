"""Agents and the model-based RL loop (floor 4: wires envs, models and planning)."""

from agents.agents import ModelBasedAgent, PETSAgent, RandomAgent, ThompsonAgent
from agents.config import ModelConfig, PlannerConfig, RunConfig, TrainConfig
from agents.episode import run_episode
from agents.factory import build_agent, build_model, build_optimizer, load_network
from agents.plotting import plot_returns
from agents.run import Run, evaluate, evaluate_episodes
from agents.run_folder import RunError, read_metrics

__all__ = [
    "ModelBasedAgent",
    "ModelConfig",
    "PETSAgent",
    "PlannerConfig",
    "RandomAgent",
    "Run",
    "RunConfig",
    "RunError",
    "ThompsonAgent",
    "TrainConfig",
    "build_agent",
    "build_model",
    "build_optimizer",
    "evaluate",
    "evaluate_episodes",
    "load_network",
    "plot_returns",
    "read_metrics",
    "run_episode",
]
