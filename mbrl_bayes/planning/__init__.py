"""Planning through posteriors over dynamics: vectorized rollouts, trajectory optimizers, MPC.

The planner sees a model only through :class:`~mbrl_bayes.models.base.DynamicsModel`.
"""

from mbrl_bayes.planning.mpc import MPC, MPCState, RecentSteps
from mbrl_bayes.planning.noise import colored_noise
from mbrl_bayes.planning.optimizers import (
    CEM,
    ICEM,
    MPPI,
    OPTIMIZERS,
    ICEMState,
    PlanState,
    RandomShooting,
    TrajectoryOptimizer,
)
from mbrl_bayes.planning.rollout import BONUSES, PROPAGATIONS, RolloutResult, rollout

__all__ = [
    "BONUSES",
    "CEM",
    "ICEM",
    "ICEMState",
    "MPC",
    "MPCState",
    "MPPI",
    "OPTIMIZERS",
    "PROPAGATIONS",
    "PlanState",
    "RandomShooting",
    "RecentSteps",
    "RolloutResult",
    "TrajectoryOptimizer",
    "colored_noise",
    "rollout",
]
