"""``normal``: ``jax.random.normal``, bit for bit, in a form XLA:CPU compiles to one fused loop.

JAX lowers its Threefry-2x32 hash on the CPU as a rolled loop (five iterations of four rounds,
each iteration materializing the whole counter arrays), which costs ~4 ns per 32-bit value; the
same hash written out round by round in ``jnp`` fuses with the uniform -> normal transform that
follows it, ~4x cheaper for the hash. The planner draws the aleatoric noise of every particle at
every step, so this is a large share of a rollout's non-matmul time (``benchmarks/planning.py``).

The result equals ``jax.random.normal(key, shape, dtype)`` exactly for the default key
implementation (threefry2x32 with ``jax_threefry_partitionable``, JAX's default); for any other
key implementation or setting it *is* ``jax.random.normal``.
"""

from __future__ import annotations

from typing import Optional, Sequence

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


def normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Standard normal samples of ``shape``, identical to ``jax.random.normal(key, shape,
    dtype)`` (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"normal: shape must have non-negative sizes, got {shape}.")
    size = int(np.prod(shape))
    data = _threefry_key_data(key)
    if dtype != jnp.float32 or data is None or size >= 2**32:
        return jax.random.normal(key, shape, dtype)
    # JAX's partitionable layout: the counter of element i is the 64-bit i as (hi, lo) = (0, i);
    # the two output words are xor-ed into one 32-bit value.
    counter = lax.iota(jnp.uint32, size).reshape(shape)
    y1, y2 = threefry2x32(data[0], data[1], jnp.zeros_like(counter), counter)
    bits = y1 ^ y2
    # jax.random.uniform(key, shape, minval=nextafter(-1, 0), maxval=1), then sqrt(2) erfinv.
    floats = lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)
    low = np.nextafter(np.float32(-1.0), np.float32(0.0))
    uniform = jnp.maximum(low, (floats - np.float32(1.0)) * (np.float32(1.0) - low) + low)
    return np.float32(np.sqrt(2.0)) * lax.erf_inv(uniform)
