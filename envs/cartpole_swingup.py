"""Continuous cart-pole swing-up (the PETS task of Chua et al. 2018) as a gymnasium env.

Physics. A cart on an unbounded, frictionless horizontal track carries a uniform rod hinged
at its centre. The state is ``(x, x_dot, theta, theta_dot)`` with ``theta`` measured from
upright, positive when the tip leans towards +x (``theta = pi``: hanging down). The equations
of motion are the classic cart-pole ones (Barto, Sutton & Anderson 1983, as in gymnasium's
CartPole) for a uniform rod of half length ``l = POLE_LENGTH / 2``::

    temp      = (F + m_p l theta_dot^2 sin(theta)) / (m_c + m_p)
    theta_acc = (g sin(theta) - cos(theta) temp) / (l (4/3 - m_p cos(theta)^2 / (m_c + m_p)))
    x_acc     = temp - m_p l theta_acc cos(theta) / (m_c + m_p)

integrated by semi-implicit Euler (velocities first, then positions) with ``SUBSTEPS``
substeps of ``DT / SUBSTEPS`` per env step. PETS simulated this task in MuJoCo; an analytic
model keeps it dependency-free and lets `step_obs` be the exact dynamics in JAX.

Action. ``a`` in ``[-1, 1]`` (clipped), force ``F = MAX_FORCE * a`` on the cart.

Observation (float32, 5 entries): ``(x, x_dot, cos(theta), sin(theta), theta_dot)``; the
angle as cos/sin is continuous, which makes the dynamics easier to learn.

Reward (PETS's formula, at most 1 per step)::

    tip    = (x + L sin(theta), L cos(theta))          # pole tip, L = POLE_LENGTH
    reward = exp(-||tip - (0, L)||^2 / L^2) - 0.01 * a^2

computed from the post-step state and the clipped action; the target ``(0, L)`` is the tip of
an upright pole over the origin, so the cart must also stay near ``x = 0``. A hanging pole
over the origin earns ``exp(-4) ~= 0.018``.

Episode. Starts at ``(0, 0, pi, 0)`` plus N(0, 0.1^2) noise on each state entry (PETS's
reset), never terminates, truncates after ``EPISODE_LENGTH = 200`` steps (10 s), so the
return is at most 200.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import gymnasium as gym
import jax.numpy as jnp
import numpy as np

GRAVITY = 9.81  # m / s^2
CART_MASS = 1.0  # kg
POLE_MASS = 0.1  # kg, uniform rod
POLE_LENGTH = 0.6  # m, hinge to tip
MAX_FORCE = 10.0  # N, force at |action| = 1
DT = 0.05  # s per env step
SUBSTEPS = 5  # semi-implicit Euler substeps per env step
EPISODE_LENGTH = 200
RESET_NOISE_SCALE = 0.1
CONTROL_COST_WEIGHT = 0.01

OBS_DIM = 5
ACT_DIM = 1


def _integrate(
    xp: ModuleType, x: Any, x_dot: Any, theta: Any, theta_dot: Any, force: Any
) -> tuple[Any, Any, Any, Any]:
    """Advances the state by one env step (``DT``) under a constant force.

    Written against an array module ``xp`` (numpy or jax.numpy) so the env and the JAX
    dynamics run the same arithmetic. All arguments broadcast together.
    """
    total_mass = CART_MASS + POLE_MASS
    half_length = POLE_LENGTH / 2
    pole_mass_length = POLE_MASS * half_length
    h = DT / SUBSTEPS
    for _ in range(SUBSTEPS):
        sin, cos = xp.sin(theta), xp.cos(theta)
        temp = (force + pole_mass_length * theta_dot**2 * sin) / total_mass
        theta_acc = (GRAVITY * sin - cos * temp) / (
            half_length * (4.0 / 3.0 - POLE_MASS * cos**2 / total_mass)
        )
        x_acc = temp - pole_mass_length * theta_acc * cos / total_mass
        x_dot = x_dot + h * x_acc
        theta_dot = theta_dot + h * theta_acc
        x = x + h * x_dot
        theta = theta + h * theta_dot
    return x, x_dot, theta, theta_dot


def _reward(xp: ModuleType, next_obs: Any, act: Any) -> Any:
    """PETS swing-up reward from the post-step observation ``[..., 5]`` and action ``[..., 1]``."""
    x, cos, sin = next_obs[..., 0], next_obs[..., 2], next_obs[..., 3]
    tip_dx = x + POLE_LENGTH * sin
    tip_dy = POLE_LENGTH * cos - POLE_LENGTH
    closeness = xp.exp(-(tip_dx**2 + tip_dy**2) / POLE_LENGTH**2)
    act = xp.clip(act, -1.0, 1.0)
    return closeness - CONTROL_COST_WEIGHT * xp.sum(act**2, axis=-1)


def reward_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """JAX reward: ``obs, next_obs [..., 5]``, ``act [..., 1]`` -> ``[...]`` float32."""
    del obs  # The reward depends on the state reached.
    next_obs = jnp.asarray(next_obs, jnp.float32)
    act = jnp.asarray(act, jnp.float32)
    return _reward(jnp, next_obs, act).astype(jnp.float32)


def termination_fn(obs: jnp.ndarray, act: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
    """The task never terminates: ``[...]`` of False."""
    del obs, act
    return jnp.zeros(jnp.shape(next_obs)[:-1], dtype=bool)


def step_obs(obs: jnp.ndarray, act: jnp.ndarray) -> jnp.ndarray:
    """Exact JAX dynamics: ``obs [..., 5]``, ``act [..., 1]`` -> ``next_obs [..., 5]`` float32.

    Recovers ``theta = atan2(sin, cos)`` from the observation and runs the env's integrator;
    agrees with ``env.step`` up to float32 rounding.
    """
    obs = jnp.asarray(obs, jnp.float32)
    act = jnp.asarray(act, jnp.float32)
    theta = jnp.arctan2(obs[..., 3], obs[..., 2])
    force = MAX_FORCE * jnp.clip(act[..., 0], -1.0, 1.0)
    x, x_dot, theta, theta_dot = _integrate(
        jnp, obs[..., 0], obs[..., 1], theta, obs[..., 4], force
    )
    return jnp.stack([x, x_dot, jnp.cos(theta), jnp.sin(theta), theta_dot], axis=-1)


class CartpoleSwingupEnv(gym.Env):
    """The cart-pole swing-up task; see the module docstring for physics, reward and episode.

    Use ``envs.make("cartpole_swingup")``, which adds the 200-step time limit. Rendering is not
    implemented. ``state`` is the float64 ``(x, x_dot, theta, theta_dot)``, ``theta`` unwrapped.
    """

    metadata = {"render_modes": []}

    def __init__(self, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"cartpole_swingup cannot render; got render_mode={render_mode!r}.")
        self.render_mode = None
        self.dt = DT
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
        self.state = np.array([0.0, 0.0, np.pi, 0.0])

    def _obs(self) -> np.ndarray:
        x, x_dot, theta, theta_dot = self.state
        return np.array([x, x_dot, np.cos(theta), np.sin(theta), theta_dot], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Hanging pole, cart at the origin, plus N(0, 0.1^2) noise on each state entry."""
        super().reset(seed=seed)
        hanging = np.array([0.0, 0.0, np.pi, 0.0])
        self.state = hanging + RESET_NOISE_SCALE * self.np_random.standard_normal(4)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Applies ``MAX_FORCE * clip(action, -1, 1)`` for ``DT`` seconds; ``action`` shape (1,)."""
        action = np.asarray(action)
        if action.shape != (ACT_DIM,):
            raise ValueError(
                f"cartpole_swingup expects an action of shape ({ACT_DIM},), got {action.shape}."
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"cartpole_swingup got a non-finite action {action}.")
        clipped = np.clip(action.astype(np.float64), -1.0, 1.0)
        self.state = np.array(_integrate(np, *self.state, MAX_FORCE * clipped[0]))
        obs = self._obs()
        reward = float(_reward(np, obs.astype(np.float64), clipped))
        return obs, reward, False, False, {}
