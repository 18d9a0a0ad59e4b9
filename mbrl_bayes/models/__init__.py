"""Dynamics models as posteriors over transition functions (see ``base.DynamicsModel``)."""

from mbrl_bayes.models.base import DynamicsModel, Transition
from mbrl_bayes.models.checks import check_model
from mbrl_bayes.models.dropout import MCDropoutMLP
from mbrl_bayes.models.ensemble import ProbabilisticEnsemble
from mbrl_bayes.models.gaussian import GaussianDynamics
from mbrl_bayes.models.gp import GaussianProcessDynamics
from mbrl_bayes.models.likelihood import gaussian_nll, mixture_nll
from mbrl_bayes.models.network import NetworkDynamics
from mbrl_bayes.models.normalization import Normalizer
from mbrl_bayes.models.recurrent import VariationalLSTM
from mbrl_bayes.models.training import train
from mbrl_bayes.models.variational import VariationalMLP

__all__ = [
    "DynamicsModel",
    "GaussianDynamics",
    "GaussianProcessDynamics",
    "MCDropoutMLP",
    "NetworkDynamics",
    "Normalizer",
    "ProbabilisticEnsemble",
    "Transition",
    "VariationalLSTM",
    "VariationalMLP",
    "check_model",
    "gaussian_nll",
    "mixture_nll",
    "train",
]
