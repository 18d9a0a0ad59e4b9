"""Bayesian layers for Haiku: distributions over weights, drop-in for Haiku's layers.

``from mbrl_bayes import layers as bl``. Each layer takes the constructor arguments of the
Haiku module it replaces, in the same order, plus ``kernel_initializer``,
``kernel_regularizer``, ``bias_initializer`` and ``bias_regularizer``. ``w_init`` / ``b_init``
(default: the Haiku layer's own) initialise the posterior *mean* with the same keys as the Haiku
layer would its weights, so a network initialised with one key starts with the posterior means
equal to its Haiku counterpart's weights. A weight draw is ``loc + scale * jax.random.normal``
with a key from ``hk.next_rng_key()`` (a function sample is a key); ``bl.losses()`` returns the
KL penalties of the layers applied in the current transform call; ``bl.posterior_mean()``
evaluates every layer at its posterior mean and ``bl.estimator("flipout" |
"reparameterization")`` chooses every layer's estimator (both decided at trace time): one
network, its parameters shared by construction, trained with per-row noise (Flipout, per-row
dropout masks) and planned with functions (a key is one function). ``bl.MCDropout`` is MC
dropout as a layer.

Function axis first: ``jax.vmap(model.apply, in_axes=(None, 0, 0))(params, keys, x)`` with
``keys`` [k] and ``x`` [k, m, d] (or ``hk.vmap(..., split_rng=(not hk.running_init()))``
inside a model) applies each of the k weight draws to its m rows as one matrix product.
"""

from mbrl_bayes.layers.bayesian import bayesian
from mbrl_bayes.layers.collection import losses
from mbrl_bayes.layers.conv import (
    Conv1DFlipout,
    Conv1DReparameterization,
    Conv2DFlipout,
    Conv2DReparameterization,
    Conv2DTransposeFlipout,
    Conv2DTransposeReparameterization,
    Conv3DFlipout,
    Conv3DReparameterization,
)
from mbrl_bayes.layers.dense import DenseFlipout, DenseReparameterization
from mbrl_bayes.layers.dropout import MCDropout
from mbrl_bayes.layers.ensemble import (
    DenseBatchEnsemble,
    DenseRank1,
    current_member,
    ensemble_member,
)
from mbrl_bayes.layers.gp import (
    GPFunction,
    SparseGaussianProcess,
    SparseGPPosterior,
    SparseGPPredictive,
    TrainableMultivariateNormalTriL,
    WhitenedKLDivergence,
)
from mbrl_bayes.layers.initializers import (
    TrainableDeterministic,
    TrainableGlorotNormal,
    TrainableHeNormal,
    TrainableInitializer,
    TrainableNormal,
    TrainableNormalFixedStddev,
    get_initializer,
)
from mbrl_bayes.layers.modes import current_estimator, estimator, is_posterior_mean, posterior_mean
from mbrl_bayes.layers.recurrent import (
    BayesianGRUState,
    BayesianLSTMState,
    GRUFlipout,
    GRUReparameterization,
    LSTMCellFlipout,
    LSTMCellReparameterization,
)
from mbrl_bayes.layers.regularizers import (
    KLDivergence,
    LaplaceKLDivergence,
    NormalKLDivergence,
    Regularizer,
    get_regularizer,
)

__all__ = [
    "bayesian",
    "DenseReparameterization",
    "DenseFlipout",
    "DenseBatchEnsemble",
    "DenseRank1",
    "ensemble_member",
    "current_member",
    "LSTMCellReparameterization",
    "LSTMCellFlipout",
    "BayesianLSTMState",
    "GRUReparameterization",
    "GRUFlipout",
    "BayesianGRUState",
    "Conv1DReparameterization",
    "Conv1DFlipout",
    "Conv2DReparameterization",
    "Conv2DFlipout",
    "Conv3DReparameterization",
    "Conv3DFlipout",
    "Conv2DTransposeReparameterization",
    "Conv2DTransposeFlipout",
    "MCDropout",
    "SparseGaussianProcess",
    "SparseGPPredictive",
    "SparseGPPosterior",
    "GPFunction",
    "TrainableMultivariateNormalTriL",
    "WhitenedKLDivergence",
    "TrainableInitializer",
    "TrainableNormal",
    "TrainableHeNormal",
    "TrainableGlorotNormal",
    "TrainableNormalFixedStddev",
    "TrainableDeterministic",
    "get_initializer",
    "Regularizer",
    "KLDivergence",
    "NormalKLDivergence",
    "LaplaceKLDivergence",
    "get_regularizer",
    "losses",
    "posterior_mean",
    "is_posterior_mean",
    "estimator",
    "current_estimator",
]
