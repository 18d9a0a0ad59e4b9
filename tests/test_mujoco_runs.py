"""MuJoCo runs: a run resumes without losing or changing anything (`pytest -m e2e`), and a
learning check.

The learning check is slow (run it with `pytest -m slow tests/test_mujoco_runs.py -n 0`):
Reacher-v5 with the task's preset (3 trials): the trained PETS agent's episodes must return
more, by the env's own rewards, than the two baselines on the same start states and targets:
uniformly random actions, and holding the arm still (zero actions, no control cost: beating it
takes moving the fingertip to the target, not only saving control).
"""

import numpy as np
import pytest
from conftest import TINY_RUN

import envs
from agents import Run, RunConfig, evaluate
from agents.checkpoint import save_params
from agents.episode import env_seed
from agents.run import _EVALUATE  # the phase of evaluate's env seeds
from agents.run_folder import MODEL, RunError
from experiments.presets import preset_config
from mbrl_bayes import models

TRIALS, EPISODES, EVAL_SEED = 3, 6, 12345


@pytest.mark.e2e  # three tiny runs: ~20 s of CPU
def test_an_interrupted_halfcheetah_run_resumes_as_if_never_stopped(tmp_path):
    """A HalfCheetah run (its model blind to the root x) stopped after trial 1 and resumed to
    trial 2 holds exactly the rows, replay buffer and params of the run that never stopped."""
    config = RunConfig.from_dict({**TINY_RUN, "env": "halfcheetah", "trials": 2,
                                  "episode_length": 6, "seed_steps": 12,
                                  "eval_calibration": False})
    whole = Run.create(str(tmp_path / "whole"), config)
    rows = whole.run(progress=False, log=lambda _: None)
    assert whole.agent.model.ignored_obs_dims == (0,)
    config.trials = 1
    Run.create(str(tmp_path / "part"), config).run(progress=False, log=lambda _: None)
    part = Run.resume(str(tmp_path / "part"), trials=2)
    assert part.trials_done == 1 and len(part.buffer) == 12 + 6
    resumed_rows = part.run(progress=False, log=lambda _: None)
    for a, b in zip(resumed_rows, rows):
        assert {k: a[k] for k in ("trial", "env_steps", "return")} == \
            {k: b[k] for k in ("trial", "env_steps", "return")}
    for field, value in whole.buffer.as_dict().items():
        np.testing.assert_array_equal(part.buffer.as_dict()[field], value, err_msg=field)
    for a, b in zip(*(jax_leaves(r.agent.params) for r in (part, whole))):
        np.testing.assert_array_equal(a, b)
    # A folder saved before the models dropped the root x (input statistics of 18 + 6
    # entries) is refused in one line, not by an error from inside JAX.
    params = whole.agent.params
    stats = {**params["stats"], "input": models.Normalizer.identity(24)}
    save_params(str(tmp_path / "whole" / MODEL), {**params, "stats": stats})
    with pytest.raises(RunError, match="saved model reads 24 inputs, the model its config "
                                       "builds reads 23"):
        Run.resume(str(tmp_path / "whole"))


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _baseline_returns(policy, seeds):
    env = envs.make("reacher")
    spec = envs.task("reacher")
    rng = np.random.default_rng(0)
    returns = []
    for seed in seeds:
        env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            act = policy(rng, spec)
            _, reward, terminated, truncated, _ = env.step(act)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return np.asarray(returns)


@pytest.mark.slow
def test_pets_on_reacher_beats_random_and_standing_still(tmp_path):
    config = preset_config("reacher")
    config.trials, config.eval_calibration = TRIALS, False
    run_dir = str(tmp_path / "run")
    rows = Run.create(run_dir, config).run(progress=False, log=lambda _: None)
    # The trained agent on fresh start states and targets (some close to the fingertip's
    # start, where standing still is hard to beat, most not).
    returns = np.asarray(evaluate(run_dir, EPISODES, seed=EVAL_SEED))
    seeds = [env_seed(EVAL_SEED, _EVALUATE, i) for i in range(EPISODES)]
    random = _baseline_returns(
        lambda rng, spec: rng.uniform(spec.action_low, spec.action_high).astype(np.float32),
        seeds)
    still = _baseline_returns(lambda rng, spec: np.zeros(spec.act_dim, np.float32), seeds)
    print(f"trials {[round(r['return'], 2) for r in rows[1:]]}; evaluated {returns.round(2)}, "
          f"random {random.round(2)}, zero actions {still.round(2)}")
    assert returns.mean() > random.mean()
    assert returns.mean() > still.mean()
