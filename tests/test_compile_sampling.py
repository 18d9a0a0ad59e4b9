"""``mbrl_bayes.sampling.normal`` equals ``jax.random.normal``; ``mbrl_bayes.compile.jit`` is
``jax.jit`` with XLA:CPU options that leave results unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import compile as mbrl_compile
from mbrl_bayes import sampling


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 2, 18), (5, 140, 4)])
def test_normal_is_bit_identical_to_jax_random_normal(shape):
    normal = jax.jit(sampling.normal, static_argnums=1)
    for seed in (0, 1, 2**31 - 1):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 17)
        expected = jax.random.normal(key, shape)
        np.testing.assert_array_equal(normal(key, shape), expected)
        np.testing.assert_array_equal(sampling.normal(key, shape), expected)


def test_normal_accepts_typed_keys_and_falls_back_for_other_implementations():
    key = jax.random.key(3)
    np.testing.assert_array_equal(sampling.normal(key, (64,)), jax.random.normal(key, (64,)))
    rbg = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(sampling.normal(rbg, (64,)), jax.random.normal(rbg, (64,)))
    half = sampling.normal(jax.random.PRNGKey(0), (8,), jnp.float16)
    assert half.dtype == jnp.float16


def test_threefry_matches_the_published_known_answer():
    # Known-answer test from the Random123 distribution (threefry2x32, 20 rounds).
    key = jnp.array([0x13198A2E, 0x03707344], jnp.uint32)
    count = jnp.array([0x243F6A88, 0x85A308D3], jnp.uint32)
    y1, y2 = sampling.threefry2x32(key[0], key[1], count[0], count[1])
    assert (int(y1), int(y2)) == (0xC4923A9C, 0x483DF7A0)


def test_normal_rejects_negative_sizes():
    with pytest.raises(ValueError, match="non-negative"):
        sampling.normal(jax.random.PRNGKey(0), (2, -3))


def test_normal_moments():
    z = np.asarray(sampling.normal(jax.random.PRNGKey(5), (200_000,)))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(z**4) - 3.0) < 0.05


def test_compile_jit_gives_the_same_results_as_jax_jit():
    def f(x, w):
        return jnp.sum(jax.nn.silu(x @ w), axis=-1)

    x = jax.random.normal(jax.random.PRNGKey(0), (37, 200))
    w = jax.random.normal(jax.random.PRNGKey(1), (200, 200)) / 15
    np.testing.assert_allclose(mbrl_compile.jit(f)(x, w), jax.jit(f)(x, w), rtol=1e-5)
    static = mbrl_compile.jit(lambda x, n: x * n, static_argnums=1)
    assert float(static(jnp.ones(()), 3)) == 3.0


def test_compiler_options_per_backend():
    assert mbrl_compile.compiler_options("gpu") == {"xla_gpu_enable_triton_gemm": False}
    assert mbrl_compile.compiler_options("tpu") == {}
    options = mbrl_compile.compiler_options("cpu")
    assert options in ({}, {"xla_cpu_prefer_vector_width": 512})
