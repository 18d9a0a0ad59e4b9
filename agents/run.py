"""The model-based RL loop: seed data, then per trial train -> plan an episode -> log -> save.

A :class:`Run` lives in a run folder (:mod:`agents.run_folder`) and commits it at the end of
each trial, so killing a run at any moment loses at most the trial in progress; ``resume``
continues from the last finished trial with the replay buffer intact. Randomness is derived from
``(seed, trial)``, so a resumed run takes the same keys as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional

import jax
import numpy as np

import envs
from agents.calibration import calibration
from agents.checkpoint import CheckpointError
from agents.config import PlannerConfig, RunConfig
from agents.episode import env_seed, episode_key, run_episode
from agents.factory import build_agent
from agents.progress import episode_bar, trial_summary
from agents.run_folder import MODEL, STATE, RunError, RunFolder
from mbrl_bayes.data import ReplayBuffer

# Phases of a run's keys and env seeds: (seed, phase, index).
_SEED_DATA, _TRIAL, _EVALUATE = 0, 1, 2


class Run:
    """A training run in a folder: creates, resumes and advances it (see the module docstring)."""

    def __init__(self, out_dir: str, config: RunConfig, network: Optional[Any] = None):
        self.out_dir = out_dir
        self.folder = RunFolder(out_dir)
        self.config = config.validate()
        self.spec = envs.task(config.env, action_repeat=config.action_repeat)
        self.episode_length = config.episode_length or self.spec.episode_length
        self.agent = build_agent(config, network)  # network: model 'network' only
        capacity = max(config.seed_steps, 1) + config.trials * self.episode_length
        self.buffer = ReplayBuffer(capacity, self.spec.obs_dim, self.spec.act_dim)
        self.trials_done = -1  # -1: no seed data yet; 0: seed data only
        self.rows: List[Dict[str, Any]] = []

    def path(self, name: str) -> str:
        return self.folder.path(name)

    @classmethod
    def create(cls, out_dir: str, config: RunConfig, network: Optional[Any] = None) -> "Run":
        """A new run in ``out_dir`` (RunError if it already holds one)."""
        if RunFolder(out_dir).holds_run():
            raise RunError(f"{out_dir} already holds a run; use --resume {out_dir} to continue it.")
        run = cls(out_dir, config, network)
        run.folder.save_config(config)
        return run

    @classmethod
    def resume(cls, out_dir: str, trials: Optional[int] = None,
               network: Optional[Any] = None) -> "Run":
        """The run in ``out_dir`` at its last finished trial; ``trials`` sets a new total."""
        folder = RunFolder(out_dir)
        config = folder.load_config()
        if trials is not None:
            if trials < 1:
                raise RunError(f"trials must be positive, got {trials}.")
            config.trials = trials
        run = cls(out_dir, config, network)
        if not folder.holds_run():  # killed before the seed data was saved: start afresh
            if trials is not None:
                folder.save_config(config)
            return run
        state = folder.load_state()
        run.trials_done = int(state["trials_done"])
        buffer = folder.load_buffer()
        # Grow the capacity if --trials was raised.
        run.buffer = ReplayBuffer(max(run.buffer.capacity, len(buffer)), buffer.obs_dim,
                                  buffer.act_dim)
        if len(buffer):
            run.buffer.add(**buffer.as_dict())
        if state.get("env_steps") is not None and int(state["env_steps"]) != len(run.buffer):
            raise RunError(f"{out_dir}: the replay buffer does not match {STATE}.")
        if run.agent.params is None and run.trials_done > 0:
            run.agent.params = folder.load_params()
            _check_input_width(run, out_dir)
        run.rows = folder.read_rows()[: run.trials_done + 1]
        if trials is not None:  # only once the whole folder has been read back
            folder.save_config(config)
        return run

    def _commit(self) -> None:
        self.folder.commit(self.buffer, getattr(self.agent, "params", None), self.rows,
                           self.trials_done)

    def run(self, progress: bool = True, log: Callable[[str], None] = print) -> List[Dict]:
        """Runs (or continues) until ``config.trials`` trials are done; returns the rows."""
        env = self.spec.make()
        try:
            if self.trials_done < 0:
                self._seed_data(env, log)
            while self.trials_done < self.config.trials:
                self._trial(env, self.trials_done + 1, progress, log)
        finally:
            env.close()
        return self.rows

    def _seed_data(self, env: Any, log: Callable[[str], None]) -> None:
        cfg = self.config
        random_agent = build_agent(RunConfig(env=cfg.env, agent="random",
                                             action_repeat=cfg.action_repeat))
        returns, episode = [], 0
        while len(self.buffer) < cfg.seed_steps:
            steps = min(self.episode_length, cfg.seed_steps - len(self.buffer))
            out = run_episode(env, random_agent, episode_key(cfg.seed, _SEED_DATA, episode),
                              env_seed(cfg.seed, _SEED_DATA, episode), steps, self.buffer)
            returns.append(out["return"] * self.episode_length / max(out["steps"], 1))
            episode += 1
        row = {"trial": 0, "env_steps": len(self.buffer),
               "return": float(np.mean(returns)) if returns else float("nan"),
               "episode_steps": len(self.buffer)}
        self.rows = [row]
        self.trials_done = 0
        self._commit()
        log(f"seed data: {len(self.buffer)} random steps, return {row['return']:.1f}"
            f" (scaled to {self.episode_length} steps)")

    def _trial(self, env: Any, trial: int, progress: bool, log: Callable[[str], None]) -> None:
        cfg = self.config
        train_key, key, calib_key = jax.random.split(episode_key(cfg.seed, _TRIAL, trial), 3)
        train_info = self.agent.update(self.buffer, train_key)
        bar = episode_bar(progress, self.episode_length, f"trial {trial}/{cfg.trials}",
                          self.rows[-1].get("return"), train_info.get("holdout_mse"))
        episode = run_episode(
            env, self.agent, key, env_seed(cfg.seed, _TRIAL, trial), self.episode_length,
            self.buffer, on_step=bar.update if bar else None,
        )
        if bar:
            bar.close()
        row: Dict[str, Any] = {
            "trial": trial, "env_steps": len(self.buffer), "return": episode["return"],
            "episode_steps": episode["steps"],
            "train_loss": train_info.get("train_loss"),
            "holdout_mse": train_info.get("holdout_mse"),
            "holdout_nll": train_info.get("holdout_nll"),
            "train_epochs": train_info.get("epochs"),
            "seconds_train": train_info.get("seconds"),
            "seconds_plan": episode["seconds_plan"],
            "seconds_per_action": episode["seconds_plan"] / max(episode["steps"], 1),
        }
        if cfg.eval_calibration:
            row.update(calibration(self.agent, episode, calib_key))
        self.rows.append(row)
        self.trials_done = trial
        self._commit()
        log(trial_summary(row, cfg.trials))


def _check_input_width(run: Run, out_dir: str) -> None:
    """A one-line RunError when the checkpoint's model reads another number of inputs than the
    model the run's config builds: a halfcheetah or hopper run saved before the models stopped
    seeing the task's absolute positions (``TaskSpec.absolute_position_dims``)."""
    params, width = run.agent.params, getattr(run.agent.model, "in_dim", None)
    stats = params.get("stats") if isinstance(params, dict) else None
    inputs = stats.get("input") if isinstance(stats, dict) else None
    if inputs is None or width is None or np.shape(inputs.mean)[-1:] == (width,):
        return
    raise RunError(
        f"{out_dir}: its saved model reads {np.shape(inputs.mean)[-1]} inputs, the model its "
        f"config builds reads {width} (it ignores the observation entries "
        f"{list(run.agent.model.ignored_obs_dims)}, absolute positions); the run was saved by "
        f"an older version: start a new run.")


def evaluate_episodes(run_dir: str, episodes: int, seed: int = 12345,
                      network: Optional[Any] = None,
                      planner: Optional[Mapping[str, Any]] = None) -> List[Dict[str, float]]:
    """``episodes`` episodes of the run's saved agent: per episode its ``return``, ``steps`` and
    ``seconds_per_action`` (planning only). The env seeds depend only on ``seed``, so two calls
    with the same ``seed`` face the same episodes.

    ``planner`` replaces fields of the run's ``PlannerConfig`` (e.g. ``{"optimizer": "cem",
    "population": 500}``) to plan with the run's trained model under another planner; a
    one-line RunError names an unknown field. ``network``: the network of a run of model
    ``network``, which the run folder never imports by itself.
    """
    if episodes <= 0:
        raise RunError(f"episodes must be positive, got {episodes}.")
    run = Run.resume(run_dir, network=network)
    if run.trials_done < 1 and run.config.agent != "random":
        raise RunError(f"{run_dir} has no trained model yet (no finished trial).")
    if run.config.agent != "random" and run.agent.params is None:
        raise CheckpointError(f"{run_dir}/{MODEL} is missing.")
    agent = run.agent
    if planner:
        known = [f.name for f in dataclasses.fields(PlannerConfig)]
        unknown = [name for name in planner if name not in known]
        if unknown:
            raise RunError(f"planner has no field {unknown[0]!r}; known: {', '.join(known)}.")
        config = copy.deepcopy(run.config)
        config.planner = dataclasses.replace(config.planner, **planner)
        try:
            config.validate()
        except ValueError as error:
            raise RunError(str(error)) from None
        agent = build_agent(config, network)
        agent.params = run.agent.params
    env = run.spec.make()
    results = []
    try:
        for i in range(episodes):
            out = run_episode(env, agent, episode_key(seed, _EVALUATE, i),
                              env_seed(seed, _EVALUATE, i), run.episode_length)
            results.append({"return": out["return"], "steps": out["steps"],
                            "seconds_per_action": out["seconds_plan"] / out["steps"]})
    finally:
        env.close()
    return results


def evaluate(run_dir: str, episodes: int, seed: int = 12345, network: Optional[Any] = None,
             planner: Optional[Mapping[str, Any]] = None) -> List[float]:
    """Returns of ``episodes`` episodes of the run's saved agent (see ``evaluate_episodes``)."""
    return [e["return"] for e in evaluate_episodes(run_dir, episodes, seed, network, planner)]
