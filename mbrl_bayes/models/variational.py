"""Variational dynamics built from ``mbrl_bayes.layers``: a function draw is a weight sample.

``VariationalMLP`` is ``NetworkDynamics`` given :func:`variational_mlp_network`, a stack of
Bayesian dense layers.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import haiku as hk
import jax
import numpy as np

from mbrl_bayes import layers as bl
from mbrl_bayes.models.gaussian import check_hidden_sizes, get_activation
from mbrl_bayes.models.network import NetworkDynamics

ESTIMATORS = {
    "reparameterization": bl.DenseReparameterization,
    "flipout": bl.DenseFlipout,
}


# The weight posteriors' initial stddev. Edward2's softplus(-3) ~= 0.049 is 40-70% of the
# weights' own init scale (1 / sqrt(fan_in) for fan-in 64-200): the network starts with a
# large epistemic spread that a few dozen epochs on a small buffer do not shrink, so 90%
# intervals covered 97-100% of held-out pendulum transitions. 0.01 covers 91% on
# pendulum_noisy but 98% on cartpole_swingup_noisy; 0.003, with the PAC^m loss of
# DEFAULT_TRAINING_DRAWS draws, covers 89% and 93% (3 seeds each,
# docs/results/variational_calibration). The variational LSTM's default too.
DEFAULT_POSTERIOR_STDDEV_INIT = 0.003
# Noise draws per minibatch in VariationalMLP's loss (NetworkDynamics's training_draws): each
# row scored by the mixture of 5 draws, so the variance head learns the noise, not the noise
# plus the spread of the draws (on cartpole_swingup_noisy the ELBO's learned 2x the true
# noise variance; the mixture 1.3x, as PE).
DEFAULT_TRAINING_DRAWS = 5


def posterior_init(stddev: float) -> bl.TrainableNormal:
    """Mean-field normal posterior whose stddevs all start at ``stddev`` (> 0)."""
    if not stddev > 0:
        raise ValueError(f"posterior_stddev_init must be > 0, got {stddev}.")
    raw = float(np.log(np.expm1(stddev)))  # softplus^-1
    return bl.TrainableNormal(raw_scale_init=hk.initializers.Constant(raw))


def bayesian_mlp(x: jax.Array, linear: Callable[..., hk.Module], hidden_sizes: Sequence[int],
                 out_size: int, activation: Callable, regularizer: Any,
                 initializer: Any = "trainable_normal") -> jax.Array:
    """An MLP of Bayesian dense layers named ``linear_0 .. linear_{L-1}, linear_out``; layers of
    either estimator with these names share one set of parameters."""
    kw = dict(kernel_regularizer=regularizer, kernel_initializer=initializer)
    for i, size in enumerate(hidden_sizes):
        x = activation(linear(size, name=f"linear_{i}", **kw)(x))
    return linear(out_size, name="linear_out", **kw)(x)


def variational_mlp_network(
    out_size: int,
    hidden_sizes: Sequence[int] = (200, 200, 200, 200),
    *,
    activation: str | Callable = "silu",
    estimator: str = "flipout",
    prior_stddev: float = 1.0,
    posterior_stddev_init: float = DEFAULT_POSTERIOR_STDDEV_INIT,
) -> Callable[[jax.Array], jax.Array]:
    """The Haiku function ``network(x)`` of ``VariationalMLP``: :func:`bayesian_mlp` with
    ``estimator``'s dense layers (``bl.DenseFlipout`` or ``bl.DenseReparameterization``), every
    kernel a mean-field normal posterior (:func:`posterior_init`) under the prior ``N(0,
    prior_stddev^2)``, whose KL ``bl.losses()`` records. Maps ``x`` [n, d] to [n, out_size].

    ``models.NetworkDynamics`` trains it with ``estimator`` (the layers' own) and draws
    functions from the same parameters with ``bl.estimator("reparameterization")``.

    Raises:
      ValueError: for an unknown estimator or activation, a non-positive width or
        ``posterior_stddev_init``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"Unknown estimator {estimator!r}; expected one of {list(ESTIMATORS)}."
        )
    hidden_sizes = check_hidden_sizes(hidden_sizes)
    activation = get_activation(activation)
    linear = ESTIMATORS[estimator]
    regularizer = bl.NormalKLDivergence(stddev=float(prior_stddev))
    initializer = posterior_init(float(posterior_stddev_init))

    def network(x: jax.Array) -> jax.Array:
        return bayesian_mlp(x, linear, hidden_sizes, out_size, activation, regularizer,
                            initializer)

    return network


class VariationalMLP(NetworkDynamics):
    """Mean-field variational Bayesian MLP (Blundell et al. 2015) trained by the ELBO:
    ``NetworkDynamics`` given :func:`variational_mlp_network`.

    ``loss = NLL + kl_weight * sum(bl.losses()) / N`` per data point, with ``N`` the training-set
    size (``params['stats']['num_data']``, set by ``fit_stats``). Training uses ``estimator``
    (``'flipout'``: pseudo-independent weights per row, lower-variance gradients; or
    ``'reparameterization'``: one weight draw per minibatch). A function draw is a key: the
    same key gives the same weights (the layers under ``bl.estimator("reparameterization")``,
    on the same parameters), so ``sample_functions`` returns ``{'key': [k] keys}`` and
    ``transition`` draws each function's weights once per call and applies them to its ``m``
    rows as one matrix product.

    Every weight's posterior is ``N(loc, softplus(raw_scale)^2)``, its stddev starting at
    ``posterior_stddev_init`` (default 0.003, well below the weights' own ``1 / sqrt(fan_in)``
    init scale, so training starts near the deterministic net; see
    ``DEFAULT_POSTERIOR_STDDEV_INIT``), under the prior ``N(0, prior_stddev^2)``. By default
    the data term is the PAC^m bound of ``training_draws=5`` draws (``NetworkDynamics``);
    ``training_draws=1`` gives the ELBO.
    """

    def __init__(
        self,
        *,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (200, 200, 200, 200),
        probabilistic: bool = True,
        learn_reward: bool = False,
        activation: str | Callable = "silu",
        estimator: str = "flipout",
        prior_stddev: float = 1.0,
        kl_weight: float = 1.0,
        posterior_stddev_init: float = DEFAULT_POSTERIOR_STDDEV_INIT,
        num_eval_draws: int = 8,
        training_draws: int = DEFAULT_TRAINING_DRAWS,
        **kwargs,
    ):
        """Args:
          obs_dim, act_dim, learn_reward, kl_weight, num_eval_draws, training_draws,
            **kwargs: as ``NetworkDynamics``'s.
          hidden_sizes, activation, estimator, prior_stddev, posterior_stddev_init: as
            :func:`variational_mlp_network`'s.
          probabilistic: also predict the log-variance (else the mean only).
        """
        target_dim = int(obs_dim) + int(bool(learn_reward))
        network = variational_mlp_network(
            target_dim * (2 if probabilistic else 1), hidden_sizes, activation=activation,
            estimator=estimator, prior_stddev=prior_stddev,
            posterior_stddev_init=posterior_stddev_init)
        super().__init__(network, obs_dim=obs_dim, act_dim=act_dim, learn_reward=learn_reward,
                         kl_weight=kl_weight, num_eval_draws=num_eval_draws,
                         training_draws=training_draws, **kwargs)
        self.hidden_sizes = check_hidden_sizes(hidden_sizes)
        self.activation = get_activation(activation)
        self.estimator = estimator
        self.prior_stddev = float(prior_stddev)
        self.posterior_stddev_init = float(posterior_stddev_init)
