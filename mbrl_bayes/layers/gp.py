"""Sparse variational Gaussian-process layers (SVGP; Hensman et al. 2015, whitened), stackable
into deep GPs (doubly stochastic VI, Salimbeni & Deisenroth 2017).

A layer maps inputs ``x`` [..., D] to ``units`` = U independent GP outputs that share one kernel
and one set of ``num_inducing`` = M learned inducing inputs ``Z`` [M, D]. The inducing outputs
are whitened, ``u = L v`` with ``L L^T = K(Z, Z) + jitter I``, and ``q(v)`` is the layer's
trainable distribution (its initializer), penalized by ``KL(q(v) || N(0, I))`` (its regularizer,
reported by ``bl.losses()`` like every Bayesian layer's).

A function sample is a key (pathwise conditioning, Wilson et al. 2020): a draw is

    f(x) = f_prior(x) + K(x, Z) (L L^T)^{-1} (L v - f_prior(Z) - sqrt(jitter) e) + mean(x),

with ``f_prior`` a random-Fourier-feature prior draw (``num_features`` cosines whose
frequencies, phases and weights are drawn from the key for each function draw), ``v ~ q(v)``
and ``e ~ N(0, I)``, all from the same key. It is one fixed function of its input, whatever
batch it is applied to, and over draws its mean and variance are exactly the layer's analytic
predictive mean and variance (the random features are unbiased for the kernel because they are
redrawn per function; ``e`` accounts for the jitter). ``draw(key)`` precomputes a draw, so
evaluating it costs ``O(F + M)`` per row and output, with no solve.

Only ``jax.numpy`` and ``jax.scipy.linalg``: kernels are a few lines, and the GP libraries we
looked at (GPJax on Flax NNX, tinygp on Equinox, both float64-first) would bring a second
module system for them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from mbrl_bayes.layers._validation import check_positive
from mbrl_bayes.layers.initializers import (
    Initializer,
    InitializerLike,
    TrainableInitializer,
    get_initializer,
)
from mbrl_bayes.layers.module import BayesianModule, check_floating
from mbrl_bayes.layers.regularizers import Regularizer, RegularizerLike, get_regularizer

KERNELS = ("squared_exponential", "matern52")
MEAN_FUNCTIONS = ("zero", "linear", "identity")
KERNEL_ALIASES = {"se": "squared_exponential", "rbf": "squared_exponential",
                   "squared_exponential": "squared_exponential", "matern52": "matern52"}


def _softplus_inverse(y: float) -> float:
    return float(y + math.log(-math.expm1(-y)))


# ----------------------------------------------------------------------------- kernels
def kernel_matrix(kernel: str, x1: jax.Array, x2: jax.Array, lengthscale: jax.Array,
                  variance: jax.Array) -> jax.Array:
    """``k(x1, x2)`` [n1, n2] of the ARD ``kernel`` (``"squared_exponential"`` or
    ``"matern52"``) for ``x1`` [n1, D], ``x2`` [n2, D], ``lengthscale`` [D], ``variance`` []."""
    a, b = x1 / lengthscale, x2 / lengthscale
    sq = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T)
    sq = jnp.maximum(sq, 0.0)
    if kernel == "squared_exponential":
        return variance * jnp.exp(-0.5 * sq)
    r = jnp.sqrt(sq + 1e-12)
    s5r = math.sqrt(5.0) * r
    return variance * (1.0 + s5r + (5.0 / 3.0) * sq) * jnp.exp(-s5r)


def _spectral_frequencies(kernel: str, key: jax.Array, dim: int, num: int,
                          dtype: jnp.dtype) -> jax.Array:
    """``num`` frequency vectors [dim, num] of the unit-lengthscale kernel's spectral density
    (standard normal; for Matern-5/2 a Student-t with 5 degrees of freedom)."""
    normal_key, gamma_key = jax.random.split(key)
    omega = jax.random.normal(normal_key, (dim, num), dtype)
    if kernel == "matern52":
        chi2 = 2.0 * jax.random.gamma(gamma_key, 2.5, (num,), dtype)  # chi^2 with 5 dof
        omega = omega * jnp.sqrt(5.0 / chi2)
    return omega


# ----------------------------------------------------------------------------- function draws
_TWO_PI_HI = np.float32(2.0 * math.pi)
_TWO_PI_LO = np.float32(2.0 * math.pi - float(_TWO_PI_HI))
_COS_TAYLOR = tuple((-1.0) ** n / math.factorial(2 * n) for n in range(9))


def fast_cos(z: jax.Array) -> jax.Array:
    """``cos(z)`` in float32 from multiplies and adds only: a two-constant reduction to
    ``[-pi, pi]`` and the degree-16 Taylor polynomial (error < 1e-6 there; for large ``|z|`` the
    reduction error is of the order of ``ulp(z)``, as the input's own rounding).

    Written by hand because XLA:CPU's ``cos`` was measured at ~2 ns per element (~16x this,
    and ~14x its ``exp``): with ``jnp.cos`` the random features took 80% of a GP planner's
    action (cartpole preset, 256 features x 5 outputs; ``benchmarks/seconds_per_action.py``).
    """
    n = jnp.round(z * np.float32(1.0 / (2.0 * math.pi)))
    r = (z - n * _TWO_PI_HI) - n * _TWO_PI_LO
    r2 = r * r
    out = jnp.full_like(r2, _COS_TAYLOR[-1])
    for c in reversed(_COS_TAYLOR[:-1]):
        out = out * r2 + np.float32(c)
    return out


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GPFunction:
    """One pathwise function draw of a layer: ``f(x) = cos(x W + b) A + k(x, Z) B + x C``.

    ``frequencies`` [D, F] (already divided by the lengthscales), ``phases`` [F],
    ``feature_weights`` [F, U], ``inducing_inputs`` [M, D], ``lengthscale`` [D], ``variance`` [],
    ``update_weights`` [M, U], ``mean_weights`` [D, U] (zeros for the zero mean). A pytree:
    ``jax.vmap`` over draws stacks them, leading axis first.
    """

    frequencies: jax.Array
    phases: jax.Array
    feature_weights: jax.Array
    inducing_inputs: jax.Array
    lengthscale: jax.Array
    variance: jax.Array
    update_weights: jax.Array
    mean_weights: jax.Array
    kernel: str = dataclasses.field(metadata=dict(static=True), default="squared_exponential")

    def __call__(self, x: jax.Array) -> jax.Array:
        """The draw at ``x`` [..., D]: [..., U]."""
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        features = fast_cos(x @ self.frequencies + self.phases)
        k_xz = kernel_matrix(self.kernel, x, self.inducing_inputs, self.lengthscale,
                             self.variance)
        out = features @ self.feature_weights + k_xz @ self.update_weights
        out = out + x @ self.mean_weights
        return out.reshape(lead + (out.shape[-1],))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SparseGPPosterior:
    """The parameters of one layer's posterior as arrays: marginals and function draws.

    ``inducing_inputs`` [M, D], ``lengthscale`` [D], ``variance`` [], ``cholesky`` [M, M]
    (``L L^T = K(Z, Z) + jitter I``), ``jitter`` [], ``q_loc`` [U, M] and ``q_scale`` (the
    whitened ``q(v)``'s Cholesky factors [U, M, M], or its stddevs [U, M] when diagonal),
    ``mean_weights`` [D, U].
    """

    inducing_inputs: jax.Array
    lengthscale: jax.Array
    variance: jax.Array
    cholesky: jax.Array
    jitter: jax.Array
    q_loc: jax.Array
    q_scale: jax.Array
    mean_weights: jax.Array
    kernel: str = dataclasses.field(metadata=dict(static=True), default="squared_exponential")
    num_features: int = dataclasses.field(metadata=dict(static=True), default=256)

    def _projection(self, x: jax.Array) -> jax.Array:
        """``A = L^{-1} K(Z, x)`` [M, n]."""
        k_zx = kernel_matrix(self.kernel, self.inducing_inputs, x, self.lengthscale,
                             self.variance)
        return solve_triangular(self.cholesky, k_zx, lower=True)

    def marginals(self, x: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """Predictive mean and variance of ``f(x)``, each [n, U], for ``x`` [n, D] (no noise).

        ``var = k(x, x) - |A|^2 + |S^T A|^2`` per output, ``S`` the whitened ``q(v)``'s scale.
        """
        a = self._projection(x)
        mean = (self.q_loc @ a).T + x @ self.mean_weights
        prior_var = self.variance - jnp.sum(a * a, 0)  # [n]; k(x, x) = variance for both kernels
        if self.q_scale.ndim == 2:  # diagonal q(v)
            posterior_var = (jnp.square(self.q_scale) @ jnp.square(a)).T
        else:
            sa = jnp.einsum("umk,mn->ukn", self.q_scale, a)  # S_u^T A
            posterior_var = jnp.sum(sa * sa, axis=1).T
        return mean, prior_var[:, None] + posterior_var

    def draw(self, key: Optional[jax.Array]) -> GPFunction:
        """The function draw of ``key`` (``None``: the posterior mean function)."""
        m, dim = self.inducing_inputs.shape
        units = self.q_loc.shape[0]
        dtype = self.q_loc.dtype
        if key is None:
            update = solve_triangular(self.cholesky.T, self.q_loc.T, lower=False)
            zeros_f = jnp.zeros((dim, 1), dtype)
            return GPFunction(zeros_f, jnp.zeros((1,), dtype), jnp.zeros((1, units), dtype),
                              self.inducing_inputs, self.lengthscale, self.variance, update,
                              self.mean_weights, self.kernel)
        f = self.num_features
        freq_key, phase_key, weight_key, v_key, jitter_key = jax.random.split(key, 5)
        freqs = _spectral_frequencies(self.kernel, freq_key, dim, f, dtype)
        freqs = freqs / self.lengthscale[:, None]
        phases = jax.random.uniform(phase_key, (f,), dtype, 0.0, 2.0 * math.pi)
        weights = jax.random.normal(weight_key, (f, units), dtype)
        weights = weights * jnp.sqrt(2.0 * self.variance / f)
        prior_at_z = jnp.cos(self.inducing_inputs @ freqs + phases) @ weights  # [M, U]
        eps = jax.random.normal(v_key, (units, m), dtype)
        if self.q_scale.ndim == 2:
            v = self.q_loc + self.q_scale * eps
        else:
            v = self.q_loc + jnp.einsum("umk,uk->um", self.q_scale, eps)
        noise = jnp.sqrt(self.jitter) * jax.random.normal(jitter_key, (m, units), dtype)
        residual = v.T - solve_triangular(self.cholesky, prior_at_z + noise, lower=True)
        update = solve_triangular(self.cholesky.T, residual, lower=False)  # [M, U]
        return GPFunction(freqs, phases, weights, self.inducing_inputs, self.lengthscale,
                          self.variance, update, self.mean_weights, self.kernel)


# ----------------------------------------------------------------------------- output
class SparseGPPredictive(distrax.Normal):
    """A layer's output: the independent normal marginals of ``f(x)`` (``.mean()``,
    ``.variance()``, ``.sample(seed=...)`` draw each row independently), plus
    :meth:`function_sample`, the pathwise draw that a following GP layer takes."""

    def __init__(self, loc: jax.Array, scale: jax.Array, posterior: SparseGPPosterior,
                 inputs: jax.Array):
        super().__init__(loc, scale)
        self._posterior = posterior
        self._inputs = inputs

    @property
    def posterior(self) -> SparseGPPosterior:
        return self._posterior

    def function_sample(self, key: Optional[jax.Array]) -> jax.Array:
        """One function draw (``key``) evaluated at this output's inputs: the shape of
        ``mean()``; ``None``: the mean."""
        if key is None:
            return self.mean()
        return self._posterior.draw(key)(self._inputs)


# ----------------------------------------------------------------------------- q(v)
@dataclasses.dataclass(frozen=True)
class TrainableMultivariateNormalTriL(TrainableInitializer):
    """A full-covariance normal per row of a [U, M] weight: ``N(loc_u, S_u S_u^T)``.

    Batch shape [U], event shape [M]. Parameters ``{name}_loc`` [U, M] and
    ``{name}_scale_tril`` [U, M, M]: ``S_u`` is its lower triangle with the diagonal through
    softplus (the upper triangle is unused). The default starts at ``S_u = scale_init * I``.
    """

    loc_init: Optional[Initializer] = None
    scale_init: float = 1.0

    def __post_init__(self):
        check_positive(self.scale_init, "TrainableMultivariateNormalTriL's scale_init")

    def __call__(self, name, shape, dtype, default_loc_init) -> distrax.Distribution:
        if len(shape) != 2:
            raise ValueError(f"TrainableMultivariateNormalTriL needs a [rows, event] weight, got "
                             f"shape {tuple(shape)}.")
        loc = self._loc(name, shape, dtype, default_loc_init, f"{name}_loc")
        rows, size = shape
        diag = _softplus_inverse(self.scale_init)

        def raw_init(s, d):
            return jnp.broadcast_to(diag * jnp.eye(size, dtype=d), tuple(s))

        raw = hk.get_parameter(f"{name}_scale_tril", [rows, size, size], dtype, init=raw_init)
        scale = jnp.tril(raw, -1) + jnp.einsum("...i,ij->...ij",
                                               jax.nn.softplus(jnp.diagonal(raw, 0, -2, -1)),
                                               jnp.eye(size, dtype=dtype))
        return distrax.MultivariateNormalTri(loc, scale, is_lower=True)


@dataclasses.dataclass(frozen=True)
class WhitenedKLDivergence(Regularizer):
    """``scale_factor * KL(q(v) || N(0, I))``, closed form, summed over the outputs.

    For a full-covariance ``q`` (``distrax.MultivariateNormalTri``, event [M]) or a diagonal one
    (``distrax.Normal``): ``0.5 * (tr(S S^T) + |m|^2 - M - log det(S S^T))`` per output.
    """

    scale_factor: float = 1.0

    def __call__(self, posterior: distrax.Distribution,
                 key: Optional[jax.Array] = None) -> jax.Array:
        del key
        if isinstance(posterior, distrax.MultivariateNormalTri):
            scale = posterior.scale_tri
            diag = jnp.diagonal(scale, 0, -2, -1)
        elif isinstance(posterior, distrax.Normal):
            scale = diag = jnp.broadcast_to(posterior.scale, posterior.loc.shape)
        else:
            raise TypeError(f"WhitenedKLDivergence needs a normal q(v), got "
                            f"{type(posterior).__name__}.")
        loc = posterior.loc
        kl = 0.5 * (jnp.sum(jnp.square(scale)) + jnp.sum(jnp.square(loc)) - loc.size
                    - 2.0 * jnp.sum(jnp.log(diag)))
        return self.scale_factor * kl


# ----------------------------------------------------------------------------- the layer
class SparseGaussianProcess(BayesianModule):
    """A sparse variational GP layer: ``units`` outputs, ``num_inducing`` inducing points.

    ``layer(x)`` with ``x`` [..., D] (an array, or a distribution: then the layer first takes a
    pathwise function sample of it with ``hk.next_rng_key()``, or its mean under
    ``bl.posterior_mean()``) returns a :class:`SparseGPPredictive`: a ``distrax.Normal`` with
    batch shape [..., units] holding the analytic predictive marginals of ``f(x)`` (no
    observation noise), whose ``function_sample(key)`` is a pathwise draw. Stacked in
    ``hk.Sequential`` the layers are a deep GP (DSVI)::

        model = hk.Sequential([hk.Flatten(), bl.SparseGaussianProcess(256, 512),
                               bl.SparseGaussianProcess(256, 512),
                               bl.SparseGaussianProcess(10, 512)])
        pred = model(x)                     # inner layers: one function draw each
        loss = nll(pred.mean(), y) + sum(bl.losses()) / dataset_size

    Structure of ``q(v)`` (the whitened inducing outputs): independent per output, each a normal
    over its M inducing values with its own full covariance by default
    (``TrainableMultivariateNormalTriL``): stored as loc [U, M] + a square factor [U, M, M]
    (upper triangle unused), ``U * M * (M + 1)`` floats; at the poster's 256 units x 512
    inducing points that is 67.2 M floats = 269 MB in float32 (33.7 M free parameters), plus
    Adam's two moments. Diagonal with ``inducing_outputs_initializer=bl.TrainableNormal(...)``:
    ``2 U M`` floats, 262 k = 1 MB at that size. ``Z`` and the kernel hyperparameters are shared
    by the outputs (``M * D + D + 1`` floats), as in Salimbeni & Deisenroth.

    Parameters: ``inducing_inputs`` [M, D], ``raw_lengthscale`` [D], ``raw_variance`` []
    (softplus), ``inducing_outputs_loc`` [U, M] and ``inducing_outputs_scale_tril``
    [U, M, M] (or ``inducing_outputs_raw_scale`` [U, M]), ``mean_weights`` [D, U] (``linear``).

    Numerics (float32): ``K(Z, Z) + jitter * variance * I`` is factored; the predictive
    variance is floored at ``variance_floor``. Function draws use ``num_features`` random
    Fourier features (default 256).
    """

    def __init__(
        self,
        units: int,
        num_inducing: int,
        kernel: str = "squared_exponential",
        mean_function: str = "zero",
        name: Optional[str] = None,
        *,
        num_features: int = 256,
        lengthscale_init: Optional[float] = None,
        variance_init: float = 1.0,
        jitter: float = 1e-4,
        variance_floor: float = 1e-6,
        inducing_inputs_init: Optional[Initializer] = None,
        inducing_outputs_initializer: Optional[InitializerLike] = None,
        inducing_outputs_regularizer: RegularizerLike = "whitened_kl_divergence",
    ):
        """Constructs the layer.

        Args:
          units: number of outputs U.
          num_inducing: number of inducing points M.
          kernel: ``"squared_exponential"`` (ARD; also ``"se"``/``"rbf"``) or ``"matern52"``.
          mean_function: ``"zero"``, ``"linear"`` (trainable ``x @ W``, ``W`` [D, U]) or
            ``"identity"`` (needs D == U; inner layers of a deep GP).
          name: module name.
          num_features: random Fourier features per function draw.
          lengthscale_init: initial lengthscale of every input dimension (default ``sqrt(D)``).
          variance_init: initial kernel variance.
          jitter: added to ``K(Z, Z)``'s diagonal, relative to the kernel variance.
          variance_floor: lower bound of the predictive variance.
          inducing_inputs_init: initializer of ``Z`` (default standard normal, truncated at 2).
          inducing_outputs_initializer: ``q(v)`` (a ``TrainableInitializer`` or its name);
            default ``TrainableMultivariateNormalTriL()``, loc zeros and ``S = I``.
          inducing_outputs_regularizer: the penalty of ``q(v)``; default
            :class:`WhitenedKLDivergence` (``None``: no penalty).
        """
        super().__init__(name=name)
        for value, what in ((units, "units"), (num_inducing, "num_inducing"),
                            (num_features, "num_features")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SparseGaussianProcess {what} must be a positive int, got "
                                 f"{value!r}.")
        if kernel not in KERNEL_ALIASES:
            raise ValueError(f"Unknown kernel {kernel!r}; known: {', '.join(KERNELS)}.")
        if mean_function not in MEAN_FUNCTIONS:
            raise ValueError(f"Unknown mean_function {mean_function!r}; known: "
                             f"{', '.join(MEAN_FUNCTIONS)}.")
        for value, what in ((variance_init, "variance_init"), (jitter, "jitter"),
                            (variance_floor, "variance_floor")):
            check_positive(value, f"SparseGaussianProcess {what}")
        if lengthscale_init is not None:
            check_positive(lengthscale_init, "SparseGaussianProcess lengthscale_init")
        self.units = units
        self.num_inducing = num_inducing
        self.kernel = KERNEL_ALIASES[kernel]
        self.mean_function = mean_function
        self.num_features = num_features
        self.lengthscale_init = lengthscale_init
        self.variance_init = float(variance_init)
        self.jitter = float(jitter)
        self.variance_floor = float(variance_floor)
        self.inducing_inputs_init = inducing_inputs_init or hk.initializers.TruncatedNormal(1.0)
        if inducing_outputs_initializer is None:
            self.inducing_outputs_initializer: TrainableInitializer = (
                TrainableMultivariateNormalTriL())
        else:
            self.inducing_outputs_initializer = get_initializer(inducing_outputs_initializer)
        if inducing_outputs_regularizer == "whitened_kl_divergence":
            inducing_outputs_regularizer = WhitenedKLDivergence()
        self.inducing_outputs_regularizer = get_regularizer(inducing_outputs_regularizer)
        self.input_size: Optional[int] = None

    def posterior(self, input_size: int, dtype: jnp.dtype = jnp.float32) -> SparseGPPosterior:
        """Creates (``init``) or reads (``apply``) the parameters for ``input_size`` = D inputs,
        records the KL for ``bl.losses()`` and returns them as a :class:`SparseGPPosterior`."""
        if self.mean_function == "identity" and input_size != self.units:
            raise ValueError(f"SparseGaussianProcess '{self.module_name}': the identity mean "
                             f"needs as many inputs as units, got {input_size} inputs and "
                             f"{self.units} units.")
        self.check_feature_size("input_size", input_size, "input features")
        m, d = self.num_inducing, input_size
        ls0 = self.lengthscale_init if self.lengthscale_init is not None else math.sqrt(d)
        z = hk.get_parameter("inducing_inputs", [m, d], dtype, init=self.inducing_inputs_init)
        lengthscale = jax.nn.softplus(hk.get_parameter(
            "raw_lengthscale", [d], dtype, init=hk.initializers.Constant(_softplus_inverse(ls0))))
        variance = jax.nn.softplus(hk.get_parameter(
            "raw_variance", [], dtype,
            init=hk.initializers.Constant(_softplus_inverse(self.variance_init))))
        q = self.weight_distribution(
            "inducing_outputs", (self.units, m), dtype, self.inducing_outputs_initializer,
            self.inducing_outputs_regularizer, jnp.zeros)
        if isinstance(q, distrax.MultivariateNormalTri):
            q_scale = q.scale_tri
        elif isinstance(q, distrax.Normal):
            q_scale = jnp.broadcast_to(q.scale, q.loc.shape)
        else:
            raise TypeError(f"SparseGaussianProcess needs a normal q(v) (full or diagonal), "
                            f"got {type(q).__name__}.")
        if self.mean_function == "linear":
            mean_weights = hk.get_parameter(
                "mean_weights", [d, self.units], dtype,
                init=hk.initializers.VarianceScaling(1.0, "fan_avg", "truncated_normal"))
        elif self.mean_function == "identity":
            mean_weights = jnp.eye(d, dtype=dtype)
        else:
            mean_weights = jnp.zeros((d, self.units), dtype)
        jitter = jnp.asarray(self.jitter, dtype) * variance
        k_zz = kernel_matrix(self.kernel, z, z, lengthscale, variance)
        cholesky = jnp.linalg.cholesky(k_zz + jitter * jnp.eye(m, dtype=dtype))
        return SparseGPPosterior(z, lengthscale, variance, cholesky, jitter, q.loc, q_scale,
                                 mean_weights, self.kernel, self.num_features)

    def draw_function(self, key: Optional[jax.Array], input_size: int,
                      dtype: jnp.dtype = jnp.float32) -> GPFunction:
        """The layer's function draw of ``key`` (``None``: the posterior mean function), as a
        :class:`GPFunction` that evaluates without a solve (for planning)."""
        return self.posterior(input_size, dtype).draw(key)

    def __call__(self, inputs) -> SparseGPPredictive:
        """The predictive marginals of ``f(inputs)``; see the class docstring.

        Args:
          inputs: ``[..., D]`` floating point, or a distribution with that batch shape (a
            previous GP layer's output).

        Returns:
          A :class:`SparseGPPredictive` with batch shape ``[..., units]``.
        """
        if isinstance(inputs, distrax.Distribution):
            key = self.next_weight_key()
            if key is None:
                inputs = inputs.mean()
            elif isinstance(inputs, SparseGPPredictive):
                inputs = inputs.function_sample(key)
            else:
                inputs = inputs.sample(seed=key)
        inputs = jnp.asarray(inputs)
        layer = type(self).__name__
        if inputs.ndim < 1:
            raise ValueError(f"{layer} input must not be a scalar: expected [..., features].")
        check_floating(inputs, layer)
        lead, d = inputs.shape[:-1], inputs.shape[-1]
        posterior = self.posterior(d, inputs.dtype)
        x = inputs.reshape(-1, d)
        mean, var = posterior.marginals(x)
        var = jnp.maximum(var, self.variance_floor)
        out_shape = lead + (self.units,)
        return SparseGPPredictive(mean.reshape(out_shape), jnp.sqrt(var).reshape(out_shape),
                                  posterior, inputs)
