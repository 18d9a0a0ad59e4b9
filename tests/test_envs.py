"""Tests for the `envs` package: registry, JAX reward/termination/dynamics vs. the envs."""

from __future__ import annotations

import dataclasses
import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import cartpole_swingup

ALL_TASKS = [
    "cartpole_swingup",
    "cartpole_swingup_noisy",
    "cartpole_swingup_sparse",
    "halfcheetah",
    "hopper",
    "inverted_pendulum",
    "mountaincar",
    "pendulum",
    "pendulum_noisy",
    "pendulum_sparse",
    "pusher",
    "reacher",
]
JAX_DYNAMICS_TASKS = [
    "cartpole_swingup", "cartpole_swingup_sparse", "mountaincar", "pendulum", "pendulum_sparse",
]
EXPECTED_EPISODE_LENGTH = {
    "cartpole_swingup": 200,
    "cartpole_swingup_noisy": 200,
    "cartpole_swingup_sparse": 200,
    "mountaincar": 999,
    "pendulum": 200,
    "pendulum_noisy": 200,
    "pendulum_sparse": 200,
    "inverted_pendulum": 1000,
    "halfcheetah": 1000,
    "hopper": 1000,
    "reacher": 50,
    "pusher": 100,
}
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory):
    """One env per task for the whole module (MuJoCo construction is not free)."""
    cache: dict[str, gym.Env] = {}
    scratch = tmp_path_factory.mktemp("mujoco_log")

    def get(name: str) -> gym.Env:
        if name not in cache:
            # MuJoCo writes MUJOCO_LOG.TXT into the working directory when a model file
            # warns (half_cheetah.xml uses the deprecated `settotalmass`); keep it out of the repo.
            cwd = os.getcwd()
            os.chdir(scratch)
            try:
                cache[name] = envs.make(name)
            finally:
                os.chdir(cwd)
        return cache[name]

    yield get
    for env in cache.values():
        env.close()


@pytest.fixture(scope="module")
def jitted():
    """Jitted reward/termination/dynamics functions, compiled once per task."""
    cache: dict[tuple[str, str], object] = {}

    def get(name: str, which: str):
        if (name, which) not in cache:
            cache[name, which] = jax.jit(getattr(envs.task(name), which))
        return cache[name, which]

    return get


def random_rollout(env: gym.Env, spec: envs.TaskSpec, steps: int, seed: int) -> dict:
    """Random actions (up to 1.2x the bounds, to exercise clipping); resets on episode end and
    every 40 steps. Returns stacked obs, act, next_obs, reward, terminated."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = {k: [] for k in ("obs", "act", "next_obs", "reward", "terminated")}
    for t in range(steps):
        act = rng.uniform(1.2 * spec.action_low, 1.2 * spec.action_high).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(act)
        for key, value in zip(rows, (obs, act, next_obs, reward, terminated), strict=True):
            rows[key].append(value)
        obs = next_obs
        if terminated or truncated or (t + 1) % 40 == 0:
            obs, _ = env.reset()
    return {k: np.asarray(v) for k, v in rows.items()}


# --- registry -------------------------------------------------------------------------------


def test_names_lists_all_tasks():
    assert envs.names() == sorted(ALL_TASKS)


def test_unknown_name_raises_one_line_value_error():
    for call in (envs.task, envs.make, envs.jax_dynamics):
        with pytest.raises(ValueError, match="Unknown task 'cartpole'") as info:
            call("cartpole")
        message = str(info.value)
        assert "\n" not in message
        assert all(name in message for name in ALL_TASKS)


def test_task_spec_is_frozen_and_hashable():
    spec = envs.task("pendulum")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.episode_length = 5  # type: ignore[misc]
    assert envs.task("pendulum") is spec
    assert {spec: 1}[spec] == 1
    with pytest.raises(ValueError):
        spec.action_low[0] = 0.0  # read-only bounds


@pytest.mark.parametrize("name", ALL_TASKS)
def test_spec_matches_env(name, env_cache):
    spec, env = envs.task(name), env_cache(name)
    assert spec.name == name
    assert spec.episode_length == EXPECTED_EPISODE_LENGTH[name]
    assert env.spec.max_episode_steps == spec.episode_length
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    np.testing.assert_array_equal(env.action_space.low, spec.action_low)
    np.testing.assert_array_equal(env.action_space.high, spec.action_high)
    assert spec.action_low.dtype == spec.action_high.dtype == np.float32
    for key, value in spec.env_kwargs.items():
        assert getattr(env.unwrapped.spec, "kwargs", {}).get(key) == value


def test_velocity_dt_constants_match_envs(env_cache):
    from envs import mujoco_tasks

    assert env_cache("halfcheetah").unwrapped.dt == pytest.approx(mujoco_tasks.HALF_CHEETAH_DT)
    assert env_cache("hopper").unwrapped.dt == pytest.approx(mujoco_tasks.HOPPER_DT)


def test_pinned_option_cannot_be_overridden():
    with pytest.raises(ValueError, match="pinned"):
        envs.make("halfcheetah", exclude_current_positions_from_observation=True)
    with pytest.raises(ValueError, match="pinned"):
        envs.make("pendulum", g=9.81)


# --- reward / termination agree with the envs -----------------------------------------------


@pytest.mark.parametrize("name", ALL_TASKS)
def test_reward_and_termination_match_env(name, env_cache, jitted):
    spec, env = envs.task(name), env_cache(name)
    data = random_rollout(env, spec, steps=100, seed=0)
    obs, act, next_obs = data["obs"], data["act"], data["next_obs"]

    reward = jitted(name, "reward_fn")(obs, act, next_obs)
    terminated = jitted(name, "termination_fn")(obs, act, next_obs)
    assert reward.shape == terminated.shape == (100,)
    assert reward.dtype == jnp.float32 and terminated.dtype == jnp.bool_
    np.testing.assert_allclose(reward, data["reward"], **TOL)
    np.testing.assert_array_equal(terminated, data["terminated"])

    # Arbitrary leading dims: [4, 25, ...] gives the same values; a single row works too.
    shaped = [x.reshape(4, 25, -1) for x in (obs, act, next_obs)]
    np.testing.assert_allclose(jitted(name, "reward_fn")(*shaped).reshape(-1), reward, **TOL)
    np.testing.assert_array_equal(jitted(name, "termination_fn")(*shaped).reshape(-1), terminated)
    assert spec.reward_fn(obs[0], act[0], next_obs[0]).shape == ()


def test_rollouts_cover_terminations(env_cache):
    """The termination checks above are not vacuous for the tasks that can terminate."""
    for name in ("hopper", "inverted_pendulum"):
        data = random_rollout(env_cache(name), envs.task(name), steps=100, seed=0)
        assert 0 < data["terminated"].sum() < 100


def test_reward_fns_vmap_and_grad():
    spec = envs.task("halfcheetah")
    obs = jnp.zeros((3, spec.obs_dim))
    act = jnp.ones((3, spec.act_dim))
    per_row = jax.vmap(spec.reward_fn)(obs, act, obs.at[:, 0].set(0.1))
    np.testing.assert_allclose(per_row, 0.1 / 0.05 - 0.1 * spec.act_dim, rtol=1e-5)
    grad = jax.grad(lambda a: spec.reward_fn(obs[0], a, obs[0]))(act[0])
    np.testing.assert_allclose(grad, -0.2 * np.ones(spec.act_dim), rtol=1e-5)


# --- exact JAX dynamics ---------------------------------------------------------------------


def _set_random_state(env: gym.Env, name: str, rng: np.random.Generator) -> np.ndarray:
    """Puts the env in a random state anywhere in its state space; returns its observation."""
    base = env.unwrapped
    if name.startswith("cartpole_swingup"):
        base.state = np.array(
            [rng.uniform(-2, 2), rng.uniform(-5, 5), rng.uniform(-np.pi, np.pi), rng.uniform(-8, 8)]
        )
        return base._obs()
    if name == "mountaincar":  # the valley to past the flag, both directions
        base.state = np.array([rng.uniform(-1.2, 0.6), rng.uniform(-0.07, 0.07)], np.float32)
        return base.state.copy()
    base.state = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-8, 8)])
    return base._get_obs()


@pytest.mark.parametrize("name", JAX_DYNAMICS_TASKS)
def test_jax_dynamics_match_env_step(name, env_cache, jitted):
    spec, env = envs.task(name), env_cache(name)
    step = jitted(name, "dynamics_fn")
    assert envs.jax_dynamics(name) is spec.dynamics_fn

    # Random rollouts from the env's own resets.
    data = random_rollout(env, spec, steps=100, seed=1)
    np.testing.assert_allclose(step(data["obs"], data["act"]), data["next_obs"], **TOL)

    # Random states all over the state space (upright, fast, speed-clipped ...).
    rng = np.random.default_rng(2)
    env.reset(seed=2)
    rows = {"obs": [], "act": [], "next_obs": [], "reward": []}
    for _ in range(100):
        obs = _set_random_state(env, name, rng)
        act = rng.uniform(1.2 * spec.action_low, 1.2 * spec.action_high).astype(np.float32)
        next_obs, reward, *_ = env.step(act)
        for key, value in zip(rows, (obs, act, next_obs, reward), strict=True):
            rows[key].append(value)
    obs, act, next_obs, reward = (np.asarray(rows[k]) for k in rows)
    np.testing.assert_allclose(step(obs, act), next_obs, **TOL)
    np.testing.assert_allclose(jitted(name, "reward_fn")(obs, act, next_obs), reward, **TOL)
    if name != "cartpole_swingup" and name != "pendulum":  # sparse: both values occur
        assert len(set(np.round(reward).tolist())) >= 2, reward

    # Leading dims and vmap.
    next_2d = step(obs.reshape(10, 10, -1), act.reshape(10, 10, -1))
    np.testing.assert_allclose(next_2d.reshape(100, -1), next_obs, **TOL)
    np.testing.assert_allclose(jax.vmap(spec.dynamics_fn)(obs, act), next_obs, **TOL)


@pytest.mark.parametrize("name", JAX_DYNAMICS_TASKS)
def test_jax_dynamics_open_loop_tracks_env(name, env_cache):
    """Rolling the JAX model forward with lax.scan stays on the env's trajectory."""
    spec, env = envs.task(name), env_cache(name)
    rng = np.random.default_rng(3)
    actions = rng.uniform(spec.action_low, spec.action_high, (20, spec.act_dim))
    actions = actions.astype(np.float32)
    obs, _ = env.reset(seed=3)
    env_traj = [env.step(a)[0] for a in actions]

    def body(o, a):
        o = spec.dynamics_fn(o, a)
        return o, o

    _, model_traj = jax.lax.scan(body, jnp.asarray(obs), jnp.asarray(actions))
    np.testing.assert_allclose(model_traj, np.asarray(env_traj), rtol=1e-3, atol=1e-3)


# --- noisy variants: process noise of known std ---------------------------------------------

NOISY = {"pendulum_noisy": "pendulum", "cartpole_swingup_noisy": "cartpole_swingup"}


@pytest.mark.parametrize("name", sorted(NOISY))
def test_noisy_env_is_clean_dynamics_plus_known_noise(name, env_cache):
    """next_obs = exact step + state noise of the documented std; the oracle's moments match
    the env's samples and its central 90% Gaussian interval covers 90% of them."""
    from envs import noisy

    spec, env = envs.task(name), env_cache(name)
    data = random_rollout(env, spec, steps=2000, seed=4)
    obs, act, next_obs = data["obs"], data["act"], data["next_obs"]
    clean = np.asarray(envs.jax_dynamics(NOISY[name])(obs, act))
    # Entries that are state entries (pendulum obs[2]; cart-pole obs[0, 1, 4]) carry exactly
    # the Gaussian noise of the documented std.
    if name == "pendulum_noisy":
        linear = {2: noisy.PENDULUM_NOISE_STD[1]}
    else:
        linear = dict(zip((0, 1, 4), np.asarray(noisy.CARTPOLE_NOISE_STD)[[0, 1, 3]]))
    for dim, sigma in linear.items():
        residual = next_obs[:, dim] - clean[:, dim]
        assert abs(residual.mean()) < 4 * sigma / np.sqrt(len(residual))
        # The sample std of n Gaussians has relative standard error 1 / sqrt(2 n): 4 of them.
        assert residual.std() == pytest.approx(sigma, rel=4 / np.sqrt(2 * len(residual)))

    mean, var = (np.asarray(m) for m in noisy.next_obs_moments(name, obs, act))
    assert mean.shape == var.shape == next_obs.shape
    z = (next_obs - mean) / np.sqrt(var)
    np.testing.assert_allclose(z.std(0), 1.0, atol=4 / np.sqrt(2 * len(z)))
    coverage = (np.abs(z) <= 1.6448536).mean(0)
    np.testing.assert_allclose(coverage, 0.9, atol=0.02)


def test_noisy_env_is_seeded_and_differs_from_clean(env_cache):
    first = envs.make("pendulum_noisy")
    second = envs.make("pendulum_noisy")
    act = np.array([0.5], np.float32)
    runs = []
    for env in (first, second):
        env.reset(seed=7)
        runs.append([env.step(act)[0] for _ in range(5)])
    np.testing.assert_array_equal(runs[0], runs[1])
    clean = envs.make("pendulum")
    clean.reset(seed=7)
    assert not np.allclose(runs[0][0], clean.step(act)[0])
    with pytest.raises(ValueError, match="pinned"):
        envs.make("pendulum_noisy", g=9.81)
    with pytest.raises(ValueError, match="no noisy task"):
        from envs import noisy

        noisy.next_obs_moments("pendulum", np.zeros(3), np.zeros(1))


def test_mujoco_tasks_have_no_jax_dynamics():
    with pytest.raises(ValueError, match="no JAX dynamics.*" + ", ".join(JAX_DYNAMICS_TASKS)):
        envs.jax_dynamics("halfcheetah")


# --- the cart-pole swing-up env -------------------------------------------------------------


def test_cartpole_spaces(env_cache):
    env = env_cache("cartpole_swingup")
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5,) and obs.dtype == np.float32


def test_cartpole_resets_hanging_down(env_cache):
    env = env_cache("cartpole_swingup")
    first = [env.reset(seed=seed)[0] for seed in range(20)]
    for obs in first:
        x, x_dot, cos, sin, theta_dot = obs
        assert cos < -0.9 and abs(x) < 0.5 and abs(x_dot) < 0.5 and abs(theta_dot) < 0.5
        np.testing.assert_allclose(cos**2 + sin**2, 1.0, rtol=1e-5)
    assert len({tuple(o) for o in first}) == 20  # seeds give different noise
    np.testing.assert_array_equal(env.reset(seed=7)[0], env.reset(seed=7)[0])


def test_cartpole_reward_peaks_at_one_when_upright(env_cache):
    spec = envs.task("cartpole_swingup")
    upright = jnp.array([0.0, 0.0, 1.0, 0.0, 0.0])
    hanging = jnp.array([0.0, 0.0, -1.0, 0.0, 0.0])
    no_force, full_force = jnp.zeros(1), jnp.ones(1)
    assert spec.reward_fn(upright, no_force, upright) == pytest.approx(1.0)
    assert spec.reward_fn(upright, full_force, upright) == pytest.approx(0.99)
    assert spec.reward_fn(upright, 5 * full_force, upright) == pytest.approx(0.99)  # clipped
    assert spec.reward_fn(hanging, no_force, hanging) == pytest.approx(np.exp(-4.0))
    off_centre = upright.at[0].set(0.6)
    assert spec.reward_fn(upright, no_force, off_centre) == pytest.approx(np.exp(-1.0))

    # The env itself: upright and at rest stays (unstable) upright for one step, reward ~1.
    env = env_cache("cartpole_swingup")
    env.reset(seed=0)
    env.unwrapped.state = np.zeros(4)
    _, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    assert reward == pytest.approx(1.0, abs=1e-6) and not terminated and not truncated


def test_cartpole_truncates_after_200_steps():
    env = envs.make("cartpole_swingup")
    env.reset(seed=0)
    for t in range(200):
        _, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        assert not terminated
        assert truncated == (t == 199)


def _lqr_gain() -> np.ndarray:
    """Discrete LQR gain for the upright equilibrium, from the env's own integrator."""
    step = lambda s, force: np.array(cartpole_swingup._integrate(np, *s, force))
    eps, origin = 1e-6, np.zeros(4)
    a = np.stack(
        [
            (step(origin + eps * e, 0.0) - step(origin - eps * e, 0.0)) / (2 * eps)
            for e in np.eye(4)
        ],
        axis=1,
    )
    b = ((step(origin, eps) - step(origin, -eps)) / (2 * eps))[:, None]
    q, r = np.diag([1.0, 0.1, 10.0, 0.1]), np.array([[0.01]])
    p = q
    for _ in range(1000):  # Riccati iteration
        k = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ k)
    return k[0]


def _swing_up_controller(gain: np.ndarray):
    """Energy pumping (Astrom & Furuta 2000) far from upright, LQR near it."""
    cp = cartpole_swingup
    half_length = cp.POLE_LENGTH / 2

    def act(obs: np.ndarray) -> np.ndarray:
        x, x_dot, cos, sin, theta_dot = obs.astype(np.float64)
        if cos > 0.85:
            force = -gain @ np.array([x, x_dot, np.arctan2(sin, cos), theta_dot])
        else:
            # Pole energy / (m g l), minus its upright value; pump with the cart.
            energy_error = (2 / 3) * half_length * theta_dot**2 / cp.GRAVITY + cos - 1.0
            pump = np.sign(theta_dot * cos) if abs(theta_dot * cos) > 1e-3 else -1.0
            cart_acc = 0.5 * cp.GRAVITY * energy_error * pump - x - x_dot
            force = (cp.CART_MASS + cp.POLE_MASS) * cart_acc
        return np.clip([force / cp.MAX_FORCE], -1.0, 1.0).astype(np.float32)

    return act


def test_cartpole_is_solvable_by_scripted_swing_up(env_cache):
    env = env_cache("cartpole_swingup")
    controller = _swing_up_controller(_lqr_gain())
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        total, done, steps = 0.0, False, 0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(controller(obs))
            total, done, steps = total + reward, terminated or truncated, steps + 1
        assert steps == 200
        assert total > 120, f"seed {seed}: swing-up return {total:.1f}"
        assert obs[2] > 0.99 and abs(obs[0]) < 0.1  # ends balanced over the origin

    # Doing nothing leaves the pole hanging: a low return.
    obs, _ = env.reset(seed=0)
    idle = sum(env.step(np.zeros(1, np.float32))[1] for _ in range(200))
    assert idle < 10


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cartpole_swingup", "pendulum", "reacher"])
def test_wrong_action_shape_gets_clear_error(name, env_cache):
    env, spec = env_cache(name), envs.task(name)
    env.reset(seed=0)
    for bad in (np.zeros(spec.act_dim + 1), np.zeros((1, spec.act_dim)), 0.0):
        with pytest.raises(
            ValueError, match=rf"{name}: action must have shape \({spec.act_dim},\)"
        ):
            env.step(bad)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(spec.act_dim, np.nan))
    with pytest.raises(ValueError, match="numeric"):
        env.step(np.array(["a"] * spec.act_dim))


def test_cartpole_env_checks_actions_without_wrapper():
    env = cartpole_swingup.CartpoleSwingupEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.inf]))


# --- sparse-reward tasks and action repeat ----------------------------------------------------


def test_mountaincar_flag_reward_and_termination_match_env(env_cache, jitted):
    """Steps from states around the flag: +100 and `terminated` exactly where the env says."""
    env, spec = env_cache("mountaincar"), envs.task("mountaincar")
    env.reset(seed=0)
    rng = np.random.default_rng(4)
    rows = {"obs": [], "act": [], "next_obs": [], "reward": [], "terminated": []}
    for _ in range(100):
        env.unwrapped.state = np.array([rng.uniform(0.3, 0.6), rng.uniform(-0.07, 0.07)],
                                       np.float32)
        obs = env.unwrapped.state.copy()
        act = rng.uniform(-1.5, 1.5, (1,)).astype(np.float32)  # unclipped cost, clipped force
        next_obs, reward, terminated, *_ = env.step(act)
        for key, value in zip(rows, (obs, act, next_obs, reward, terminated), strict=True):
            rows[key].append(value)
    data = {k: np.asarray(v) for k, v in rows.items()}
    assert 10 < data["terminated"].sum() < 90
    np.testing.assert_allclose(jitted("mountaincar", "reward_fn")(
        data["obs"], data["act"], data["next_obs"]), data["reward"], **TOL)
    np.testing.assert_array_equal(jitted("mountaincar", "termination_fn")(
        data["obs"], data["act"], data["next_obs"]), data["terminated"])
    np.testing.assert_allclose(spec.dynamics_fn(data["obs"], data["act"]), data["next_obs"],
                               **TOL)


@pytest.mark.parametrize("name", ["cartpole_swingup_sparse", "pendulum_sparse"])
def test_sparse_tasks_start_hanging_and_random_play_scores_nothing(name, env_cache):
    env, spec = env_cache(name), envs.task(name)
    data = random_rollout(env, spec, steps=200, seed=0)
    assert np.all(data["reward"] == 0.0)  # random play never reaches the target region
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        cos = obs[2] if name.startswith("cartpole") else obs[0]
        assert cos < -0.9
    upright = jnp.array([0.0, 0.0, 1.0, 0.0, 0.0]) if name.startswith("cartpole") else \
        jnp.array([1.0, 0.0, 0.0])
    assert spec.reward_fn(upright, jnp.zeros(1), upright) == 1.0
    if name.startswith("cartpole"):  # upright but off centre: nothing
        assert spec.reward_fn(upright, jnp.zeros(1), upright.at[0].set(0.3)) == 0.0


def test_action_repeat_reward_and_dynamics_match_wrapped_env():
    """Mountaincar with each action held 5 steps: the block reward, termination and dynamics
    equal the wrapped env's summed reward, flag and last observation."""
    repeat = 5
    spec = envs.task("mountaincar", action_repeat=repeat)
    assert envs.task("mountaincar", action_repeat=repeat) is spec
    assert spec.action_repeat == repeat and spec.episode_length == 200  # ceil(999 / 5)
    env = spec.make()
    assert isinstance(env, envs.ActionRepeat)
    rng = np.random.default_rng(5)
    env.reset(seed=5)
    rows = {"obs": [], "act": [], "next_obs": [], "reward": [], "terminated": []}
    for t in range(120):
        if t % 2:  # half the blocks start near the flag
            env.unwrapped.state = np.array([rng.uniform(0.2, 0.5), rng.uniform(0.0, 0.07)],
                                           np.float32)
        else:
            env.unwrapped.state = np.array([rng.uniform(-1.2, 0.4), rng.uniform(-0.07, 0.07)],
                                           np.float32)
        obs = env.unwrapped.state.copy()
        act = rng.uniform(-1.2, 1.2, (1,)).astype(np.float32)
        next_obs, reward, terminated, *_ = env.step(act)
        for key, value in zip(rows, (obs, act, next_obs, reward, terminated), strict=True):
            rows[key].append(value)
    obs, act, next_obs, reward, terminated = (np.asarray(rows[k]) for k in rows)
    assert 10 < terminated.sum() < 110
    np.testing.assert_array_equal(spec.termination_fn(obs, act, next_obs), terminated)
    np.testing.assert_allclose(jax.jit(spec.dynamics_fn)(obs, act), next_obs, **TOL)
    predicted = np.asarray(spec.reward_fn(obs, act, next_obs))
    # Exact on blocks that do not reach the flag; the one that does may be over-charged by the
    # action cost of the steps it did not take (documented in `mountaincar.block_reward_fn`).
    np.testing.assert_allclose(predicted[~terminated], reward[~terminated], **TOL)
    gap = reward[terminated] - predicted[terminated]
    assert np.all(gap >= -1e-4) and np.all(gap <= 0.1 * (repeat - 1) * act[terminated, 0] ** 2
                                           + 1e-4)
    np.testing.assert_allclose(reward[terminated], 100.0, atol=0.1 * repeat * 1.44)


def test_action_repeat_bad_values_one_line():
    with pytest.raises(ValueError, match="action_repeat must be an int >= 1"):
        envs.task("mountaincar", action_repeat=0)
    with pytest.raises(ValueError, match="has no action_repeat.*mountaincar") as info:
        envs.task("cartpole_swingup", action_repeat=2)
    assert "\n" not in str(info.value)
