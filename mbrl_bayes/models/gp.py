"""Gaussian-process dynamics: SVGP (depth 1) or deep GP (depth > 1) over the standardized
``[obs, act]`` inputs and delta targets of the other models (``GaussianDynamics``' machinery).

A function draw is a pathwise GP sample (``bl.SparseGaussianProcess.draw_function``): random
Fourier features plus the inducing-point update, precomputed once by ``sample_functions``, so a
planner step costs ``O(F + M)`` per particle and output with no solve, and ``ts_inf`` keeps one
fixed GP function per particle for the whole horizon. The aleatoric noise is a learned
per-dimension Gaussian variance (the likelihood), floored at ``exp(min_logvar_init)``.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

from mbrl_bayes import layers as bl
from mbrl_bayes.layers.gp import KERNEL_ALIASES, kernel_matrix
from mbrl_bayes.models.base import Batch, Functions, Params
from mbrl_bayes.models.gaussian import GaussianDynamics


class GaussianProcessDynamics(GaussianDynamics):
    """Sparse variational GP dynamics ``delta ~ GP(x) + N(0, noise)`` trained by the ELBO.

    Depth 1: one SVGP per target dimension (own kernel hyperparameters, ARD lengthscales and
    ``num_inducing`` inducing points each, as in PILCO's independent GPs). Depth ``L > 1``: a
    deep GP (Salimbeni & Deisenroth 2017) of ``L - 1`` inner layers ``in_dim -> in_dim`` with the
    identity mean function, then the per-dimension output GPs on the inner layers' pathwise
    sample. The inner layers' kernel variance starts at ``inner_variance_init`` (``1e-3``, in
    standardized units) and their ``q(v)`` at ``1e-3 * I``, so the network starts close to a
    single GP and the ELBO grows the inner layers where the data asks for it. A small whitened
    ``q(v)`` alone does not do that: between inducing points an inner layer's draws keep its
    prior variance, and at variance 1 (the layers' default) they scattered the output GPs'
    inputs enough that the fitted noise came out 2.2x the true one and the 90% intervals
    covered 0.99 on ``cartpole_swingup_noisy`` (seed 0; inner variance 1e-2: 0.96, 1e-3: 0.92,
    with RMSE 0.052 against the oracle's 0.052).

    ``loss`` is the negative ELBO per data point: minus the expected Gaussian log-likelihood of
    the minibatch (summed over target dims, averaged over rows; for a deep GP with the inner
    layers sampled once per minibatch) plus ``KL / N`` with ``N = params['stats']['num_data']``;
    its metrics add ``nll``, the Gaussian NLL of the predictive ``N(mean, var_f + noise)``: the
    full negative log density (``0.5 * log(2 pi)`` included) summed over target dims, averaged
    over rows, standardized units (main's ``models.likelihood.gaussian_nll`` convention).

    Inducing inputs start at ``num_inducing`` rows of the first training set (standardized),
    placed by the first ``fit_stats`` (which ``models.train`` calls); afterwards they are learned.
    Every ``fit_stats`` also climbs Titsias' collapsed bound with Adam on the output GPs' kernel
    hyperparameters, inducing inputs and noise (``fit_hyperparameters``, at most 2000 rows) until
    it converges: in chunks of 100 steps, until a chunk raises the bound by less than
    ``hyperparameter_tolerance`` nats per data point, or after ``hyperparameter_steps``. It then
    sets their ``q(v)`` to its closed-form optimum (``optimal_inducing_outputs``), so each
    retraining starts from the fitted SGPR posterior; minibatch Adam on the ELBO
    (``models.train``) then tunes everything jointly. With the default training settings (lr
    1e-3, early stopping after a few epochs) the ELBO alone barely moves the kernels from their
    initial values: on 200 random steps the fit takes the holdout MSE (standardized) from 0.033
    to 0.003 on the pendulum and from 0.39 to 0.00014 on the cart-pole
    (``docs/results/gp_model_quality``). A fixed 200 steps (the former default) left the
    cart-pole's noise near its ``1e-2`` init, 20x the true variance on
    ``cartpole_swingup_noisy`` (90% coverage 0.98; converged: 0.905); the first fit there
    converges after ~1000 steps, an agent loop's refits, which start from the previous trial's
    values, after one or a few chunks.

    A function draw uses ``num_features`` (256) random Fourier features per layer. The noise
    variance (standardized units) is floored at ``noise_floor`` (the lower log-variance bound of
    ``GaussianDynamics``, here fixed: ``logvar_bound_penalty = 0``), and the kernel matrices at
    the layers' jitter, so noise-free dynamics data does not break a Cholesky in float32.

    From ``GaussianDynamics`` it uses the standardization (``fit_stats``, ``inputs_targets``,
    ``standardized_targets``), ``transition``/``step``, ``predict``/``predict_moments`` (a mixture
    over pathwise draws) and ``evaluate``.

    Params: ``{'net': {'gp': haiku params, 'raw_noise': [t]}, 'logvar_bounds', 'stats'}``.
    """

    num_functions = None  # unlimited draws

    def __init__(
        self,
        *,
        obs_dim: int,
        act_dim: int,
        num_inducing: int = 128,
        depth: int = 1,
        kernel: str = "squared_exponential",
        num_features: int = 256,
        learn_reward: bool = False,
        noise_init: float = 1e-2,
        noise_floor: float = 1e-6,
        num_eval_draws: int = 8,
        hyperparameter_steps: int = 3000,
        hyperparameter_tolerance: float = 2e-3,
        inner_variance_init: float = 1e-3,
        ignored_obs_dims: Sequence[int] = (),
    ):
        if kernel not in KERNEL_ALIASES:
            raise ValueError(f"Unknown kernel {kernel!r}; known: {', '.join(KERNEL_ALIASES)}.")
        if isinstance(num_inducing, bool) or int(num_inducing) < 1:
            raise ValueError(f"num_inducing must be a positive int, got {num_inducing!r}.")
        if isinstance(depth, bool) or int(depth) < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}.")
        if not 0 < noise_floor < noise_init:
            raise ValueError(f"Need 0 < noise_floor < noise_init, got {noise_floor}, "
                             f"{noise_init}.")
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=(), probabilistic=True,
            learn_reward=learn_reward, max_logvar_init=0.5,
            min_logvar_init=float(np.log(noise_floor)), logvar_bound_penalty=0.0,
            ignored_obs_dims=ignored_obs_dims,
        )
        self.num_inducing = int(num_inducing)
        self.depth = int(depth)
        self.kernel = kernel
        self.num_features = int(num_features)
        self.noise_init = float(noise_init)
        self.num_eval_draws = int(num_eval_draws)
        if int(hyperparameter_steps) < 0:
            raise ValueError(f"hyperparameter_steps must be >= 0, got {hyperparameter_steps}.")
        self.hyperparameter_steps = int(hyperparameter_steps)
        if not float(hyperparameter_tolerance) >= 0:
            raise ValueError(f"hyperparameter_tolerance must be >= 0, got "
                             f"{hyperparameter_tolerance}.")
        self.hyperparameter_tolerance = float(hyperparameter_tolerance)
        if not float(inner_variance_init) > 0:
            raise ValueError(f"inner_variance_init must be > 0, got {inner_variance_init}.")
        self.inner_variance_init = float(inner_variance_init)
        self._net = hk.multi_transform(self._modules)

    # ----------------------------------------------------------------- the GP network
    def _layers(self) -> Tuple[List[bl.SparseGaussianProcess], List[bl.SparseGaussianProcess]]:
        inner = [bl.SparseGaussianProcess(
            self.in_dim, self.num_inducing, self.kernel, "identity", name=f"inner_{i}",
            num_features=self.num_features, lengthscale_init=1.0,
            variance_init=self.inner_variance_init,
            inducing_outputs_initializer=bl.TrainableMultivariateNormalTriL(scale_init=1e-3))
            for i in range(self.depth - 1)]
        heads = [bl.SparseGaussianProcess(
            1, self.num_inducing, self.kernel, "zero", name=f"output_{j}",
            num_features=self.num_features, lengthscale_init=1.0)
            for j in range(self.target_dim)]
        return inner, heads

    def _modules(self):
        inner, heads = self._layers()

        def forward(x):
            """Predictive mean and variance of f [n, t] (inner layers: one pathwise draw from
            ``hk.next_rng_key()``) and the summed KL."""
            h = x
            for layer in inner:
                h = layer(h)
            if inner:
                h = h.function_sample(hk.next_rng_key())
            outs = [head(h) for head in heads]
            mean = jnp.concatenate([o.mean() for o in outs], -1)
            var = jnp.concatenate([o.variance() for o in outs], -1)
            return mean, var, sum(bl.losses())

        def draw(key):
            """One function draw: the list of per-layer ``GPFunction``s (``None``: the mean)."""
            keys = [None] * (len(inner) + len(heads)) if key is None else \
                list(jax.random.split(key, len(inner) + len(heads)))
            fns = [layer.draw_function(k, self.in_dim) for layer, k in zip(inner, keys)]
            fns += [head.draw_function(k, self.in_dim) for head, k in
                    zip(heads, keys[len(inner):])]
            return fns

        def posteriors():
            """Every layer's ``SparseGPPosterior`` (inner layers first)."""
            return [layer.posterior(self.in_dim) for layer in inner + heads]

        return forward, (forward, draw, posteriors)

    def _init_net(self, key: jax.Array, x: jax.Array) -> Any:
        gp = self._net.init(key, x)
        raw_noise = jnp.full((self.target_dim,), np.log(self.noise_init), jnp.float32)
        return {"gp": gp, "raw_noise": raw_noise}

    def _apply_fns(self, fns: List[bl.GPFunction], x: jax.Array) -> jax.Array:
        """A drawn function (one entry per layer) on rows ``x`` [m, in]: [m, t]."""
        num_inner = self.depth - 1
        h = x
        for fn in fns[:num_inner]:
            h = fn(h)
        return jnp.concatenate([fn(h) for fn in fns[num_inner:]], -1)

    def _apply_net(self, net: Any, fns: Functions, key: jax.Array, x: jax.Array):
        del key
        mean = jax.vmap(self._apply_fns)(fns["layers"], x)
        return mean, jnp.broadcast_to(net["raw_noise"], mean.shape)

    def sample_functions(self, params: Params, key: jax.Array, k: int) -> Functions:
        """``k`` pathwise GP draws ``{'layers': [GPFunction per layer], 'key': [k]}`` (each
        leaf with leading axis ``k``); draw ``i`` is the function of ``key[i]``."""
        keys = jax.random.split(key, k)
        gp = params["net"]["gp"]
        layers = jax.vmap(lambda kk: self._net.apply[1](gp, None, kk))(keys)
        return {"layers": layers, "key": keys}

    def mean_function(self, params: Params) -> Functions:
        """The posterior mean function as a single draw (``k = 1``)."""
        layers = self._net.apply[1](params["net"]["gp"], None, None)
        return {"layers": jax.tree_util.tree_map(lambda a: a[None], layers),
                "key": jax.random.PRNGKey(0)[None]}

    def eval_functions(self, params: Params, key: jax.Array) -> Functions:
        return self.sample_functions(params, key, self.num_eval_draws)

    # ----------------------------------------------------------------- training
    def fit_stats(self, params: Params, data: Batch) -> Params:
        """Refits the standardization; the first time, also places every layer's inducing
        inputs on (standardized) training inputs; then sets the output layers' ``q(v)`` to its
        optimum for the current kernels and noise (see :meth:`optimal_inducing_outputs`)."""
        params = self._place_inducing_inputs(super().fit_stats(params, data), data)
        if self.hyperparameter_steps:
            params = self.fit_hyperparameters(params, data, self.hyperparameter_steps,
                                              tolerance=self.hyperparameter_tolerance)
        return self.optimal_inducing_outputs(params, data)

    def fit_hyperparameters(self, params: Params, data: Batch, steps: int,
                            max_points: int = 2000, learning_rate: float = 0.03,
                            tolerance: float = 0.0) -> Params:
        """Params whose output GPs' kernel hyperparameters, inducing inputs and noise climb
        Titsias' collapsed bound (SGPR's type-II maximum likelihood, ``q(v)`` optimal at every
        step) with Adam on at most ``max_points`` training rows, from their current values: at
        most ``steps`` steps, in chunks of ``HYPERPARAMETER_CHUNK``; with ``tolerance > 0`` each
        output stops after the first chunk that raises its bound by less than ``tolerance``
        nats per data point. For a deep GP, on the inner layers' mean function of the inputs."""
        inputs, targets = self.inputs_targets(data)
        stats = params["stats"]
        rows = np.random.default_rng(len(inputs)).permutation(len(inputs))[:max_points]
        x = stats["input"].normalize(jnp.asarray(inputs[rows], jnp.float32))
        y = stats["target"].normalize(jnp.asarray(targets[rows], jnp.float32))
        gp = dict(params["net"]["gp"])
        h = x
        for posterior in self._net.apply[2](gp, None)[: self.depth - 1]:
            h = posterior.draw(None)(h)
        raw_noise = params["net"]["raw_noise"]
        noise_floor = float(np.exp(self.min_logvar_init))
        new_noise = []
        for j in range(self.target_dim):
            head = gp[f"output_{j}"]
            theta = {"z": head["inducing_inputs"], "ls": head["raw_lengthscale"],
                     "var": head["raw_variance"], "noise": raw_noise[j]}
            theta = _climb_collapsed_bound(theta, h, y[:, j], self.kernel, noise_floor,
                                           int(steps), float(learning_rate), float(tolerance))
            gp[f"output_{j}"] = {**head, "inducing_inputs": theta["z"],
                                 "raw_lengthscale": theta["ls"], "raw_variance": theta["var"]}
            new_noise.append(theta["noise"])
        net = {**params["net"], "gp": gp, "raw_noise": jnp.stack(new_noise)}
        return {**params, "net": net}

    def optimal_inducing_outputs(self, params: Params, data: Batch) -> Params:
        """Params whose output GPs' ``q(v)`` maximizes the ELBO on ``data`` given everything else
        (Titsias 2009, whitened): ``S = (I + A A^T / noise)^{-1}``, ``m = S A y / noise`` with
        ``A = L^{-1} K(Z, X)``; for a deep GP, ``X`` is the inner layers' mean function of the
        inputs. One pass, ``O(N M^2)``; gradient steps then start from the optimum instead of the
        prior (Adam alone needs thousands of steps to get there)."""
        inputs, targets = self.inputs_targets(data)
        stats = params["stats"]
        x = stats["input"].normalize(jnp.asarray(inputs, jnp.float32))
        y = stats["target"].normalize(jnp.asarray(targets, jnp.float32))
        gp = params["net"]["gp"]
        posteriors = self._net.apply[2](gp, None)
        h = x
        for posterior in posteriors[: self.depth - 1]:
            h = posterior.draw(None)(h)
        noise = jnp.exp(self._bounded_logvar(params, params["net"]["raw_noise"]))
        gp = dict(gp)
        for j, posterior in enumerate(posteriors[self.depth - 1:]):
            name = f"output_{j}"
            if "inducing_outputs_scale_tril" not in gp[name]:
                continue  # a diagonal q(v) has no closed-form optimum of this form
            loc, raw = _optimal_whitened_q(posterior, h, y[:, j], noise[j])
            gp[name] = {**gp[name], "inducing_outputs_loc": loc[None],
                        "inducing_outputs_scale_tril": raw[None]}
        return {**params, "net": {**params["net"], "gp": gp}}

    def _place_inducing_inputs(self, params: Params, data: Batch) -> Params:
        stats = params["stats"]
        if int(stats.get("inducing_placed", 1)):
            return params
        inputs, _ = self.inputs_targets(data)
        x = np.asarray(stats["input"].normalize(jnp.asarray(inputs, jnp.float32)))
        rng = np.random.default_rng(len(x))
        rows = rng.choice(len(x), self.num_inducing, replace=len(x) < self.num_inducing)
        z = x[rows] + (1e-3 * rng.standard_normal((self.num_inducing, x.shape[1]))
                       if len(x) < self.num_inducing else 0.0)
        gp = {name: ({**p, "inducing_inputs": jnp.asarray(z, jnp.float32)}
                     if p["inducing_inputs"].shape == z.shape else p)
              for name, p in params["net"]["gp"].items()}
        return {**params, "net": {**params["net"], "gp": gp},
                "stats": {**stats, "inducing_placed": jnp.asarray(1, jnp.int32)}}

    def _init_stats(self) -> Dict[str, Any]:
        return {**super()._init_stats(), "inducing_placed": jnp.asarray(0, jnp.int32)}

    def kl(self, params: Params) -> jax.Array:
        """``KL(q || p)`` summed over every layer's inducing outputs."""
        x = jnp.zeros((1, self.in_dim), jnp.float32)
        return self._net.apply[0](params["net"]["gp"], jax.random.PRNGKey(0), x)[2]

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> Tuple[jax.Array, dict]:
        """Negative ELBO per data point (see the class docstring) and metrics ``nll``, ``mse``,
        ``kl``, ``expected_nll``."""
        obs, act, target = self.standardized_targets(params, batch)
        stats = jax.lax.stop_gradient(params["stats"])
        x = stats["input"].normalize(self.model_inputs(obs, act))
        mean, var_f, kl = self._net.apply[0](params["net"]["gp"], key, x)
        noise_logvar = self._bounded_logvar(params, params["net"]["raw_noise"])
        noise = jnp.exp(noise_logvar)
        sq_err = jnp.square(mean - target)
        log_2pi = float(np.log(2.0 * np.pi))
        expected_nll = 0.5 * ((sq_err + var_f) / noise + noise_logvar + log_2pi).sum(-1).mean()
        total_var = var_f + noise
        nll = 0.5 * (sq_err / total_var + jnp.log(total_var) + log_2pi).sum(-1).mean()
        num_data = jnp.maximum(stats["num_data"], 1).astype(jnp.float32)
        loss = expected_nll + kl / num_data + self.logvar_penalty(params)
        return loss, {"nll": nll, "mse": sq_err.mean(), "kl": kl, "expected_nll": expected_nll}

    def predictive_moments(self, params: Params, obs: jax.Array, act: jax.Array,
                           key: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
        """The analytic predictive mean and variance of ``next_obs`` [n, d] (noise included;
        for a deep GP, conditional on one draw of the inner layers from ``key``)."""
        stats = params["stats"]
        x = stats["input"].normalize(self.model_inputs(obs, act))
        if key is None:
            key = jax.random.PRNGKey(0)
        mean, var_f, _ = self._net.apply[0](params["net"]["gp"], key, x)
        var = var_f + jnp.exp(self._bounded_logvar(params, params["net"]["raw_noise"]))
        std = stats["target"].std
        mean = stats["target"].denormalize(mean)[..., : self.obs_dim] + obs
        return mean, (var * jnp.square(std))[..., : self.obs_dim]


_projection = jax.jit(lambda posterior, x: posterior._projection(x))


def _optimal_whitened_q(posterior: bl.SparseGPPosterior, x: jax.Array, y: jax.Array,
                        noise: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """The optimal whitened ``q(v)`` of a one-output layer for data ``x`` [n, D], ``y`` [n]:
    its loc [M] and the raw ``scale_tril`` parameter [M, M] (diagonal before softplus).

    Solved in float64 on the host (``O(N M^2)``, once per ``fit_stats``): on noise-free data
    the fitted noise reaches its floor (1e-6), and ``I + A A^T / noise`` then has a condition
    number near 1e8, past a float32 Cholesky (a pendulum run's second retraining: a NaN q(v))."""
    a = np.asarray(_projection(posterior, x), np.float64)  # [M, n]
    y = np.asarray(y, np.float64)
    noise = float(noise)
    m = a.shape[0]
    chol_precision = np.linalg.cholesky(np.eye(m) + a @ a.T / noise)
    # S = P^{-1} = L_P^{-T} L_P^{-1}; its lower Cholesky factor for the layer's scale_tril.
    inv_chol = scipy.linalg.solve_triangular(chol_precision, np.eye(m), lower=True)
    scale = np.linalg.cholesky(inv_chol.T @ inv_chol + 1e-7 * np.eye(m))
    loc = scipy.linalg.cho_solve((chol_precision, True), a @ y / noise)
    diag = np.maximum(np.diagonal(scale), 1e-6)
    raw_diag = diag + np.log(-np.expm1(-diag))  # softplus^{-1}
    raw = np.tril(scale, -1) + np.diag(raw_diag)
    return jnp.asarray(loc, jnp.float32), jnp.asarray(raw, jnp.float32)


@functools.partial(jax.jit, static_argnames=("kernel", "noise_floor"))
def _collapsed_bound(theta: dict, x: jax.Array, y: jax.Array, kernel: str,
                     noise_floor: float) -> jax.Array:
    """Titsias' (2009) collapsed SGPR bound per data point for one output, whitened, with the
    layer's jitter (``1e-4 * variance``) and the noise ``exp(theta['noise']) + noise_floor``."""
    lengthscale, variance = jax.nn.softplus(theta["ls"]), jax.nn.softplus(theta["var"])
    noise = jnp.exp(theta["noise"]) + noise_floor
    z = theta["z"]
    m, n = z.shape[0], x.shape[0]
    k_zz = kernel_matrix(KERNEL_ALIASES[kernel], z, z, lengthscale, variance)
    chol = jnp.linalg.cholesky(k_zz + 1e-4 * variance * jnp.eye(m))
    a = jax.scipy.linalg.solve_triangular(
        chol, kernel_matrix(KERNEL_ALIASES[kernel], z, x, lengthscale, variance),
        lower=True) / jnp.sqrt(noise)
    chol_b = jnp.linalg.cholesky(jnp.eye(m) + a @ a.T)
    c = jax.scipy.linalg.solve_triangular(chol_b, a @ y, lower=True) / jnp.sqrt(noise)
    log_marginal = (-0.5 * n * jnp.log(2 * jnp.pi * noise) - jnp.sum(jnp.log(jnp.diag(chol_b)))
                    - 0.5 * y @ y / noise + 0.5 * c @ c)
    trace = 0.5 * (n * variance / noise - jnp.sum(a * a))
    return (log_marginal - trace) / n


HYPERPARAMETER_CHUNK = 100  # Adam steps per compiled call of the hyperparameter fit


def _hyperparameter_optimizer(learning_rate: float, max_steps: int):
    # With a tiny noise on near-noise-free data, I + A A^T / noise is too ill-conditioned for
    # a float32 Cholesky (a cartpole run's 6th retraining: NaN gradients, then NaN kernels);
    # apply_if_finite skips such steps instead of applying them.
    return optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=max_steps + 1)


def _climb_collapsed_bound(theta: dict, x: jax.Array, y: jax.Array, kernel: str,
                           noise_floor: float, steps: int, learning_rate: float,
                           tolerance: float) -> dict:
    """``theta`` after at most ``steps`` Adam steps up the collapsed bound, in chunks of
    ``HYPERPARAMETER_CHUNK`` (one compile for every chunk of that length); with
    ``tolerance > 0``, stops after the first chunk that raises the bound by less than it."""
    optimizer = _hyperparameter_optimizer(learning_rate, steps)
    state = optimizer.init(theta)
    bound = float(_collapsed_bound(theta, x, y, kernel, noise_floor)) if tolerance > 0 else 0.0
    done = 0
    while done < steps:
        chunk = min(HYPERPARAMETER_CHUNK, steps - done)
        theta, state, new_bound = _fit_collapsed_bound(theta, state, x, y, kernel, noise_floor,
                                                       chunk, learning_rate, steps)
        done += chunk
        if tolerance > 0:
            new_bound = float(new_bound)
            if not new_bound - bound >= tolerance:  # converged (or a NaN bound: stop)
                break
            bound = new_bound
    return theta


@functools.partial(jax.jit, static_argnames=("kernel", "noise_floor", "steps", "learning_rate",
                                             "max_steps"))
def _fit_collapsed_bound(theta: dict, state: Any, x: jax.Array, y: jax.Array, kernel: str,
                         noise_floor: float, steps: int, learning_rate: float,
                         max_steps: int) -> Tuple[dict, Any, jax.Array]:
    """``steps`` Adam steps from ``(theta, state)``; returns them and the bound at the end."""
    optimizer = _hyperparameter_optimizer(learning_rate, max_steps)
    grad = jax.grad(lambda t: -_collapsed_bound(t, x, y, kernel, noise_floor))

    def step(carry, _):
        theta, state = carry
        updates, state = optimizer.update(grad(theta), state)
        return (optax.apply_updates(theta, updates), state), None

    (theta, state), _ = jax.lax.scan(step, (theta, state), None, length=steps)
    return theta, state, _collapsed_bound(theta, x, y, kernel, noise_floor)
