"""Trajectory optimizers on objectives with known optima (no model involved)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes.planning import CEM, ICEM, MPPI, RandomShooting, colored_noise

H, A = 6, 2
# A smooth target sequence inside the bounds [-1, 1]: the maximizer of -||x - target||^2.
TARGET = jnp.asarray(0.6 * np.sin(np.arange(H)[:, None] / 3.0 + np.arange(A)), jnp.float32)


def quadratic(seqs, key):
    return -jnp.sum((seqs - TARGET) ** 2, axis=(1, 2))


@pytest.mark.parametrize("opt, atol", [
    (CEM(population_size=200, num_elites=20, num_iterations=10), 0.02),
    (ICEM(population_size=300, num_elites=30, num_iterations=5, alpha=0.0), 0.15),
    (ICEM(population_size=200, num_elites=20, num_iterations=8, noise_beta=1.0,
          population_decay=1.0), 0.1),
    (MPPI(population_size=200, num_iterations=30, temperature=0.01, noise_std=0.1), 0.06),
    (MPPI(population_size=200, num_iterations=30, temperature=0.01, noise_std=0.1,
          smoothing=0.3), 0.1),
], ids=["cem", "icem-decay", "icem-fixed-population", "mppi", "mppi-smoothed"])
def test_optimizer_finds_quadratic_maximum(opt, atol):
    state = opt.init(H, A, -1.0, 1.0)
    plan, new_state, info = jax.jit(lambda s, k: opt.optimize(quadratic, s, k))(
        state, jax.random.PRNGKey(0))
    assert plan.shape == (H, A)
    np.testing.assert_allclose(plan, TARGET, atol=atol)
    assert float(info["best_value"]) > -atol**2 * H * A
    # The returned state warm-starts the next call: the plan (iCEM: its sampling mean and kept
    # elites) shifted by one step, padded with the middle of the bounds.
    if isinstance(opt, ICEM):
        assert new_state.elites.shape == (opt.num_keep, H, A)
        np.testing.assert_allclose(new_state.elites[:, -1], np.zeros((opt.num_keep, A)))
    else:
        np.testing.assert_allclose(new_state.mean[:-1], plan[1:])
    np.testing.assert_allclose(new_state.mean[-1], np.zeros(A))


def test_random_shooting_finds_low_dimensional_maximum():
    target = jnp.asarray([[0.3], [-0.5]], jnp.float32)
    opt = RandomShooting(population_size=4000)
    state = opt.init(2, 1, -1.0, 1.0)
    plan, new_state, info = jax.jit(
        lambda s, k: opt.optimize(lambda x, _: -jnp.sum((x - target) ** 2, (1, 2)), s, k)
    )(state, jax.random.PRNGKey(0))
    np.testing.assert_allclose(plan, target, atol=0.05)
    np.testing.assert_allclose(new_state.mean, [[plan[1, 0]], [0.0]])


def test_warm_start_improves_on_repeated_calls():
    opt = CEM(population_size=50, num_elites=5, num_iterations=2)
    step = jax.jit(lambda s, k: opt.optimize(quadratic, s, k))
    state = opt.init(H, A, -1.0, 1.0)
    errors = []
    for i in range(4):
        plan, state, _ = step(state, jax.random.PRNGKey(i))
        # A stationary target: undo the shift so the next call starts from this plan.
        state = state._replace(mean=plan)
        errors.append(float(jnp.abs(plan - TARGET).max()))
    assert errors[-1] < 0.5 * errors[0], errors


@pytest.mark.parametrize("opt", [
    CEM(50, 5, 3), ICEM(50, 5, 3, population_decay=1.0), MPPI(50, 3), RandomShooting(50)
], ids=["cem", "icem", "mppi", "rs"])
def test_plans_respect_action_bounds(opt):
    far = lambda x, _: -jnp.sum((x - 5.0) ** 2, axis=(1, 2))  # optimum outside the bounds
    state = opt.init(4, 2, jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.5]))
    plan, _, _ = jax.jit(lambda s, k: opt.optimize(far, s, k))(state, jax.random.PRNGKey(0))
    assert np.all(plan <= jnp.array([1.0, 0.5])) and np.all(plan >= jnp.array([-1.0, 0.0]))
    assert np.all(plan.mean(0) > jnp.array([0.0, 0.25]))  # moved towards the upper corner


def test_colored_noise_has_unit_variance_and_more_correlation_with_beta():
    lag1 = []
    for beta in (0.0, 1.0, 2.0):
        x = colored_noise(jax.random.PRNGKey(0), beta, (3000,), 16)
        assert x.shape == (3000, 16)
        np.testing.assert_allclose(x.var(0), np.ones(16), atol=0.1)
        lag1.append(float(jnp.mean(x[:, 1:] * x[:, :-1])))
    assert abs(lag1[0]) < 0.05 and 0.4 < lag1[1] < lag1[2] < 0.9, lag1


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="num_elites"):
        CEM(population_size=10, num_elites=20)
    with pytest.raises(ValueError, match="low < high"):
        CEM().init(5, 1, 1.0, -1.0)
    with pytest.raises(ValueError, match="Action bounds"):
        CEM().init(5, 2, jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        MPPI(temperature=0.0)
    with pytest.raises(ValueError, match="population_decay"):
        ICEM(population_decay=0.5)
