"""Tasks for model-based RL: gymnasium envs with their reward and termination in JAX.

Usage::

    import envs

    spec = envs.task("cartpole_swingup")       # TaskSpec: reward_fn, termination_fn, ...
    env = envs.make("cartpole_swingup")        # gymnasium env, actions validated
    obs, _ = env.reset(seed=0)
    next_obs, reward, terminated, truncated, _ = env.step(act)
    spec.reward_fn(obs, act, next_obs)         # == reward (float32, any leading batch dims)
    step = envs.jax_dynamics("cartpole_swingup")  # exact dynamics: step(obs, act) -> next_obs

See `TaskSpec` for the contract and the task modules (`cartpole_swingup`, `pendulum`,
`mujoco_tasks`) for each task's observation layout and formulas.
"""

from envs.registry import jax_dynamics, make, names, task
from envs.spec import TaskSpec
from envs.wrappers import ActionRepeat, ValidateAction

__all__ = ["ActionRepeat", "TaskSpec", "ValidateAction", "jax_dynamics", "make", "names", "task"]
