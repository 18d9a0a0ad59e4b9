"""mbrl-bayes: Bayesian layers, Bayesian dynamics models and posterior-sampling planners in JAX."""

__version__ = "0.1.0"
