"""Colored (power-law) Gaussian noise along time, for iCEM's action samples."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def colored_noise(
    key: jax.Array, beta: float, shape: Sequence[int], length: int
) -> jax.Array:
    """Gaussian noise ``[*shape, length]`` with power spectral density ``~ 1 / f**beta`` along the
    last axis and unit variance per time step (``beta = 0``: white noise; ``2``: smooth, red).

    The spectral method of Timmer & Koenig (1995), as in the ``colorednoise`` package used by iCEM:
    random Fourier coefficients scaled by ``f**(-beta / 2)`` (frequencies below ``1 / length`` are
    clamped to it), inverse real FFT, divided by the exact standard deviation of the result.
    """
    shape = tuple(int(s) for s in shape)
    length = int(length)
    if beta == 0 or length < 2:
        return jax.random.normal(key, shape + (length,), jnp.float32)
    freqs = np.fft.rfftfreq(length)
    freqs = np.maximum(freqs, 1.0 / length)
    scale = freqs ** (-beta / 2.0)
    # Exact per-step variance of the inverse FFT below: the DC (and, for even lengths, the
    # Nyquist) term is real with variance 2 s^2, every other term contributes 4 s^2, over n^2.
    weights = np.full(len(freqs), 4.0)
    weights[0] = 2.0
    if length % 2 == 0:
        weights[-1] = 2.0
    sigma = np.sqrt(np.sum(weights * scale**2)) / length
    kr, ki = jax.random.split(key)
    nf = len(freqs)
    real = jax.random.normal(kr, shape + (nf,), jnp.float32) * scale
    imag = jax.random.normal(ki, shape + (nf,), jnp.float32) * scale
    # The DC (and, for even lengths, Nyquist) coefficients of a real signal are real.
    fix = np.ones(nf, np.float32)
    fix[0] = np.sqrt(2.0)
    mask = np.ones(nf, np.float32)
    mask[0] = 0.0
    if length % 2 == 0:
        fix[-1] = np.sqrt(2.0)
        mask[-1] = 0.0
    real = real * fix
    imag = imag * mask
    out = jnp.fft.irfft(real + 1j * imag, n=length, axis=-1) / sigma
    return out.astype(jnp.float32)
