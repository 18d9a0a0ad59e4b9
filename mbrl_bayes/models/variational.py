"""Variational dynamics built from ``mbrl_bayes.layers``: a function draw is a weight sample."""

from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from mbrl_bayes import layers as bl
from mbrl_bayes.models.base import Batch, Functions, Params
from mbrl_bayes.models.checks import checks_num_draws
from mbrl_bayes.models.gaussian import GaussianDynamics

ESTIMATORS = {
    "reparameterization": bl.DenseReparameterization,
    "flipout": bl.DenseFlipout,
}


# The weight posteriors' initial stddev. Edward2's softplus(-3) ~= 0.049 is 40-70% of the
# weights' own init scale (1 / sqrt(fan_in) for fan-in 64-200): the network starts with a
# large epistemic spread that a few dozen epochs on a small buffer do not shrink, so 90%
# intervals covered 97-100% of held-out pendulum transitions. 0.01 covers 91% on
# pendulum_noisy (docs/results/variational_calibration).
DEFAULT_POSTERIOR_STDDEV_INIT = 0.01


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


class VariationalMLP(GaussianDynamics):
    """Mean-field variational Bayesian MLP (Blundell et al. 2015) trained by the ELBO.

    ``loss = NLL + kl_weight * sum(bl.losses()) / N`` per data point, with ``N`` the training-set
    size (``params['stats']['num_data']``, set by ``fit_stats``). Training uses ``estimator``
    (``'flipout'``: pseudo-independent weights per row, lower-variance gradients; or
    ``'reparameterization'``: one weight draw per minibatch). A function draw is a key: the
    same key gives the same weights (reparameterization layers with the same parameters), so
    ``sample_functions`` returns ``{'key': [k] keys}`` and ``transition`` draws each function's
    weights once per call and applies them to its ``m`` rows as one matrix product.

    Every weight's posterior is ``N(loc, softplus(raw_scale)^2)``, its stddev starting at
    ``posterior_stddev_init`` (default 0.01, well below the weights' own ``1 / sqrt(fan_in)``
    init scale, so training starts near the deterministic net; see
    ``DEFAULT_POSTERIOR_STDDEV_INIT``), under the prior ``N(0, prior_stddev^2)``.
    """

    num_functions = None  # unlimited draws

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
        **kwargs,
    ):
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=hidden_sizes,
            probabilistic=probabilistic, learn_reward=learn_reward, activation=activation,
            **kwargs,
        )
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"Unknown estimator {estimator!r}; expected one of {list(ESTIMATORS)}."
            )
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}.")
        self.estimator = estimator
        self.prior_stddev = float(prior_stddev)
        self.kl_weight = float(kl_weight)
        self.num_eval_draws = int(num_eval_draws)
        regularizer = bl.NormalKLDivergence(stddev=self.prior_stddev)
        self.posterior_stddev_init = float(posterior_stddev_init)
        initializer = posterior_init(self.posterior_stddev_init)

        def net(linear):
            def forward(x):
                out = bayesian_mlp(x, linear, self.hidden_sizes, self.out_size, self.activation,
                                   regularizer, initializer)
                return out, sum(bl.losses())
            return hk.transform(forward)

        self._train_net = net(ESTIMATORS[estimator])
        self._function_net = net(bl.DenseReparameterization)

    def _init_net(self, key: jax.Array, x: jax.Array) -> Any:
        return self._function_net.init(key, x)

    def _apply_net(self, net: Any, fns: Functions, key: jax.Array, x: jax.Array) -> jax.Array:
        del key
        apply = lambda k, rows: self._function_net.apply(net, k, rows)[0]  # noqa: E731
        return jax.vmap(apply)(fns["key"], x)

    @checks_num_draws
    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        return {"key": jax.random.split(key, k)}

    def eval_functions(self, params: Params, key: jax.Array) -> Functions:
        return self.sample_functions(params, key, self.num_eval_draws)

    def kl(self, params: Params) -> jax.Array:
        """KL(q(W) || p(W)) summed over all weights."""
        x = jnp.zeros((1, self.in_dim), jnp.float32)
        return self._train_net.apply(params["net"], jax.random.PRNGKey(0), x)[1]

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> Tuple[jax.Array, dict]:
        """Negative ELBO per data point: the minibatch's mean per-point NLL (unit variance when
        deterministic) + ``kl_weight * KL / N``, plus the log-variance bound penalty. Metrics
        ``nll`` (nats per transition), ``mse`` (standardized units) and ``kl``."""
        obs, act, target = self.standardized_targets(params, batch)
        stats = jax.lax.stop_gradient(params["stats"])
        x = stats["input"].normalize(self.model_inputs(obs, act))
        out, kl = self._train_net.apply(params["net"], key, x)
        mean, logvar = out[..., : self.target_dim], None
        if self.probabilistic:
            logvar = self._bounded_logvar(params, out[..., self.target_dim:])
        loss = self._elbo_objective(
            params, self._training_nll(mean, logvar, target).mean(), kl, self.kl_weight)
        nll = self._predictive_nll(mean, logvar, target).mean()
        return loss, {"nll": nll, "mse": jnp.square(mean - target).mean(), "kl": kl}
