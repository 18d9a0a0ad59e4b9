"""Dynamics models as posteriors over transition functions (see ``base.DynamicsModel``)."""

from mbrl_bayes.models.base import DynamicsModel, Transition
from mbrl_bayes.models.dropout import MCDropoutMLP
from mbrl_bayes.models.ensemble import ProbabilisticEnsemble
from mbrl_bayes.models.fused_mlp import FusedMLPConfig
from mbrl_bayes.models.gaussian import GaussianDynamics
from mbrl_bayes.models.gp import GaussianProcessDynamics
from mbrl_bayes.models.normalization import Normalizer
from mbrl_bayes.models.recurrent import VariationalLSTM
from mbrl_bayes.models.training import train
from mbrl_bayes.models.variational import VariationalMLP

__all__ = [
    "DynamicsModel",
    "FusedMLPConfig",
    "GaussianDynamics",
    "GaussianProcessDynamics",
    "MCDropoutMLP",
    "Normalizer",
    "ProbabilisticEnsemble",
    "Transition",
    "VariationalLSTM",
    "VariationalMLP",
    "train",
]
