"""``mbrl_bayes.sampling``: the same uniforms as ``jax.random``, a more accurate ``erf_inv``;
``mbrl_bayes.compile.jit`` is ``jax.jit`` with XLA:CPU options that leave results unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import special

from mbrl_bayes import compile as mbrl_compile
from mbrl_bayes import sampling

LOW = np.nextafter(np.float32(-1.0), np.float32(0.0))


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 2, 18), (5, 140, 4)])
def test_uniforms_are_bit_identical_to_jax_random_and_normals_match_jax(shape):
    uniform = jax.jit(sampling.uniform, static_argnums=1)
    normal = jax.jit(sampling.normal, static_argnums=1)
    for seed in (0, 1, 2**31 - 1):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 17)
        expected = jax.random.uniform(key, shape, jnp.float32, LOW, 1.0)
        np.testing.assert_array_equal(uniform(key, shape), expected)
        np.testing.assert_array_equal(sampling.uniform(key, shape), expected)
        # jax.random.normal is sqrt(2) lax.erf_inv of the same uniforms; they differ only by
        # lax.erf_inv's own error (<= 5.8e-6 relative).
        np.testing.assert_allclose(normal(key, shape), jax.random.normal(key, shape),
                                   rtol=7e-6, atol=1e-7)


def test_erf_inv_is_accurate_on_every_float32_uniform():
    # All 2^23 values jax.random's uniforms can take, against float64 scipy.
    bits = np.arange(2**23, dtype=np.uint32) | np.uint32(0x3F800000)
    u = np.maximum(LOW, (bits.view(np.float32) - np.float32(1)) * (np.float32(1) - LOW) + LOW)
    exact = special.erfinv(u.astype(np.float64))
    scale = np.maximum(np.abs(exact), 1e-30)
    ours = np.max(np.abs(np.asarray(jax.jit(sampling.erf_inv)(u)) - exact) / scale)
    xla = np.max(np.abs(np.asarray(jax.jit(lax.erf_inv)(u)) - exact) / scale)
    assert ours < 4e-7  # measured 2.6e-7
    assert ours < xla / 10  # measured 5.8e-6 on XLA:CPU
    edges = sampling.erf_inv(jnp.array([-1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(edges, [-np.inf, 0.0, np.inf])


def test_normal_accepts_typed_keys_and_other_implementations():
    key = jax.random.key(3)
    np.testing.assert_array_equal(sampling.normal(key, (64,)),
                                  sampling.normal(jax.random.key_data(key), (64,)))
    rbg = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(sampling.uniform(rbg, (64,)),
                                  jax.random.uniform(rbg, (64,), jnp.float32, LOW, 1.0))
    np.testing.assert_allclose(sampling.normal(rbg, (64,)), jax.random.normal(rbg, (64,)),
                               rtol=7e-6, atol=1e-7)
    half = sampling.normal(jax.random.PRNGKey(0), (8,), jnp.float16)
    assert half.dtype == jnp.float16


def test_threefry_matches_the_published_known_answer():
    # Known-answer test from the Random123 distribution (threefry2x32, 20 rounds).
    key = jnp.array([0x13198A2E, 0x03707344], jnp.uint32)
    count = jnp.array([0x243F6A88, 0x85A308D3], jnp.uint32)
    y1, y2 = sampling.threefry2x32(key[0], key[1], count[0], count[1])
    assert (int(y1), int(y2)) == (0xC4923A9C, 0x483DF7A0)


def test_normal_rejects_negative_sizes():
    for dtype in (jnp.float32, jnp.float16):
        with pytest.raises(ValueError, match="non-negative"):
            sampling.normal(jax.random.PRNGKey(0), (2, -3), dtype)


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
    assert options in ({}, {"xla_cpu_prefer_vector_width": 512},
                       {"xla_cpu_prefer_vector_width": 512,
                        "xla_cpu_experimental_ynn_fusion_type": ""})


def test_unknown_compiler_options_are_probed_not_passed():
    assert mbrl_compile._cpu_accepts((("xla_cpu_prefer_vector_width", 512),))
    assert not mbrl_compile._cpu_accepts((("xla_cpu_no_such_option", 1),))
    assert not mbrl_compile._cpu_accepts((("xla_cpu_experimental_ynn_fusion_type", "bogus"),))
