"""``normal``: ``jax.random.normal``'s samples, in a form XLA:CPU compiles to one fused loop.

JAX lowers its Threefry-2x32 hash on the CPU as a rolled loop (five iterations of four rounds,
each iteration materializing the whole counter arrays), which costs ~4 ns per 32-bit value; the
same hash written out round by round in ``jnp`` fuses with the uniform -> normal transform that
follows it, ~4x cheaper for the hash. The planner draws the aleatoric noise of every particle at
every step, so this is a large share of a rollout's non-matmul time (``benchmarks/planning.py``).

Used only there, on the planner's hot path: ``GaussianDynamics.transition``'s noise (and the
rollout kernels', which must draw the same). Measured with ``benchmarks/planning.py`` (A/B in
one process, the Gaussian head's noise through this module plus its bounded std without logs):
``pets_halfcheetah`` 1.369 -> 1.230 s per action, ``pets_cartpole`` 0.393 -> 0.379 s on the
2-core AVX-512 CPU; the head's loop alone 214 -> 120 ms per 150 steps from ``erf_inv``. Everything
else (layers, action samples of the optimizers) draws with ``jax.random``.

The uniforms are bit for bit ``jax.random.uniform``'s (so the samples follow the same key
discipline as ``jax.random.normal``); the map to normals is :func:`erf_inv`, the polynomial of
XLA's own ``erf_inv`` evaluated through ``log((1 - x)(1 + x))`` instead of ``log1p(-x^2)``: on
XLA:CPU that is 2.5x faster (``log1p`` is slow there) and 20x more accurate (max relative error
2.6e-7 against 5.8e-6, over every float32 uniform). ``normal`` therefore equals
``jax.random.normal`` to within the latter's ``erf_inv`` error (6e-6 relative), not bit for bit.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array):
    """The Threefry-2x32 block cipher (20 rounds) of counters ``(x1, x2)`` under key ``(k1, k2)``
    (uint32 scalars / arrays of one shape), unrolled."""
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = x1 ^ _rotate_left(x2, r)
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _threefry_key_data(key: jax.Array) -> Optional[jax.Array]:
    """The uint32[2] data of a default threefry2x32 key (the layout ``normal`` reproduces), else
    None."""
    if not jax.config.jax_threefry_partitionable:
        return None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        is_threefry = str(jax.random.key_impl(key)) == "threefry2x32"
        return jax.random.key_data(key) if is_threefry else None
    default_impl = jax.config.jax_default_prng_impl == "threefry2x32"
    return key if default_impl and key.shape == (2,) and key.dtype == jnp.uint32 else None


# Giles (2010), "Approximating the erfinv function", single precision: the polynomials in
# ``w - 2.5`` (w < 5) and ``sqrt(w) - 3`` (w >= 5), w = -log(1 - x^2); XLA uses the same ones.
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                   0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844,
                0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def erf_inv(x: jax.Array) -> jax.Array:
    """Inverse error function, elementwise: float32 ``x`` of any shape, values in [-1, 1]
    (``+-inf`` at ``+-1``; NaN outside, as ``lax.erf_inv``) -> float32 of ``x``'s shape.

    Giles' single-precision approximation, as in ``lax.erf_inv``, but with ``w = -log((1 - x) *
    (1 + x))``: for ``|x| >= 0.5``, ``1 - |x|`` is exact (Sterbenz) and the product carries two
    roundings, so ``w`` is accurate to float32 rounding; for small ``|x|`` the rounded ``1 - x^2``
    moves ``w`` by < 6e-8, which the polynomial's slope makes negligible. Max relative error
    2.6e-7 (``lax.erf_inv`` on XLA:CPU: 5.8e-6), and ~2.5x cheaper there.
    """
    x = jnp.asarray(x, jnp.float32)
    w = -jnp.log((1.0 - x) * (1.0 + x))
    central = w < 5.0
    t = jnp.where(central, w - 2.5, jnp.sqrt(w) - 3.0)
    p = jnp.where(central, np.float32(_ERFINV_CENTRAL[0]), np.float32(_ERFINV_TAIL[0]))
    for a, b in zip(_ERFINV_CENTRAL[1:], _ERFINV_TAIL[1:], strict=True):
        p = jnp.where(central, np.float32(a), np.float32(b)) + p * t
    return jnp.where(jnp.abs(x) == 1.0, x * np.float32(np.inf), p * x)


# jax.random.normal draws uniform(minval=nextafter(-1, 0), maxval=1), then sqrt(2) erfinv.
_LOW = np.nextafter(np.float32(-1.0), np.float32(0.0))


def _checked_shape(shape: Sequence[int], where: str) -> Tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"{where}: shape must have non-negative sizes, got {shape}.")
    return shape


def uniform(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Float32 uniforms of ``shape`` on ``[nextafter(-1, 0), 1)``: bit for bit
    ``jax.random.uniform(key, shape, jnp.float32, nextafter(-1, 0), 1)``, the uniforms behind
    ``jax.random.normal``. A negative size in ``shape`` is a one-line ValueError."""
    shape = _checked_shape(shape, "uniform")
    size = int(np.prod(shape))
    data = _threefry_key_data(key)
    if data is None or size >= 2**32:
        return jax.random.uniform(key, shape, jnp.float32, _LOW, 1.0)
    # JAX's partitionable layout: the counter of element i is the 64-bit i as (hi, lo) = (0, i);
    # the two output words are xor-ed into one 32-bit value.
    counter = lax.iota(jnp.uint32, size).reshape(shape)
    y1, y2 = threefry2x32(data[0], data[1], jnp.zeros_like(counter), counter)
    bits = y1 ^ y2
    floats = lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)
    return jnp.maximum(_LOW, (floats - np.float32(1.0)) * (np.float32(1.0) - _LOW) + _LOW)


def normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Standard normal samples of ``shape``: ``jax.random.normal(key, shape, dtype)``'s
    uniforms through :func:`erf_inv` (see the module docstring); other dtypes than float32 are
    ``jax.random.normal``'s own."""
    shape = _checked_shape(shape, "normal")
    if jnp.dtype(dtype) != jnp.float32:
        return jax.random.normal(key, shape, dtype)
    return np.float32(np.sqrt(2.0)) * erf_inv(uniform(key, shape))
