"""The model-based RL loop: seed data, then per trial train -> plan an episode -> log -> save.

A run writes one folder::

    config.json     the RunConfig
    metrics.csv     one row per trial (trial 0: the random seed data)
    state.json      trials finished, env steps (written last: the commit point of a trial)
    buffer.npz      the replay buffer
    model.ckpt      the model params after the last trial's training
    returns.png     the learning curve

Every file is replaced atomically at the end of each trial, so killing a run at any moment loses
at most the trial in progress; ``resume`` continues from the last finished trial with the replay
buffer intact. Randomness is derived from ``(seed, trial)``, so a resumed run takes the same
keys as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import numpy as np

import envs
from agents.checkpoint import CheckpointError, load_json, load_params, save_json, save_params
from agents.config import RunConfig
from agents.factory import build_agent
from mbrl_bayes import metrics
from mbrl_bayes.data import ReplayBuffer

CONFIG, METRICS, STATE, BUFFER, MODEL, PLOT = (
    "config.json", "metrics.csv", "state.json", "buffer.npz", "model.ckpt", "returns.png",
)
COLUMNS = (
    "trial", "env_steps", "return", "episode_steps", "train_loss", "holdout_mse", "holdout_nll",
    "train_epochs", "calib_nll", "calib_rmse", "calib_coverage50", "calib_coverage90",
    "calib_error", "seconds_train", "seconds_plan", "seconds_per_action",
)


class RunError(ValueError):
    """A run folder that cannot be used (missing, not a run, corrupted)."""


def _key(seed: int, *path: int) -> jax.Array:
    key = jax.random.PRNGKey(seed)
    for p in path:
        key = jax.random.fold_in(key, p)
    return key


def run_episode(
    env: Any, agent: Any, key: jax.Array, env_seed: int, max_steps: int,
    buffer: Optional[ReplayBuffer] = None,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> Dict[str, Any]:
    """One episode of ``agent`` in ``env`` (at most ``max_steps``); transitions go to ``buffer``.

    Returns ``return``, ``steps``, ``seconds_plan`` and the episode's arrays (``obs``, ``act``,
    ``next_obs``, ``reward``).
    """
    episode_key, key = jax.random.split(key)
    agent.begin_episode(episode_key)
    obs, _ = env.reset(seed=env_seed)
    total, plan_seconds = 0.0, 0.0
    rows: Dict[str, List[np.ndarray]] = {"obs": [], "act": [], "next_obs": [], "reward": []}
    for t in range(max_steps):
        start = time.perf_counter()
        action = agent.act(obs, jax.random.fold_in(key, t))
        plan_seconds += time.perf_counter() - start
        next_obs, reward, terminated, truncated, _ = env.step(action)
        truncated = truncated or t == max_steps - 1
        if buffer is not None:
            buffer.add(obs, action, next_obs, reward, terminated, truncated)
        for name, value in (("obs", obs), ("act", action), ("next_obs", next_obs),
                            ("reward", reward)):
            rows[name].append(np.asarray(value, np.float32))
        total += float(reward)
        if on_step is not None:
            on_step(t + 1, total)
        obs = next_obs
        if terminated or truncated:
            break
    out: Dict[str, Any] = {k: np.stack(v) for k, v in rows.items()}
    out.update({"return": total, "steps": len(rows["reward"]), "seconds_plan": plan_seconds})
    return out


def calibration(agent: Any, episode: Dict[str, np.ndarray], key: jax.Array) -> Dict[str, float]:
    """Calibration of the agent's model on an episode it had not trained on."""
    if getattr(agent, "params", None) is None:
        return {}
    dist = agent.model.predict(agent.params, key, episode["obs"], episode["act"])
    y = episode["next_obs"]
    return {
        "calib_nll": float(metrics.nll(dist, y)),
        "calib_rmse": float(metrics.rmse(dist, y)),
        "calib_coverage50": float(metrics.coverage(dist, y, 0.5)),
        "calib_coverage90": float(metrics.coverage(dist, y, 0.9)),
        "calib_error": float(metrics.calibration_error(dist, y)),
    }


class Run:
    """A run folder: creates, resumes and advances a training run (see the module docstring)."""

    def __init__(self, out_dir: str, config: RunConfig):
        self.out_dir = out_dir
        self.config = config.validate()
        self.spec = envs.task(config.env)
        self.episode_length = config.episode_length or self.spec.episode_length
        self.agent = build_agent(config)
        capacity = max(config.seed_steps, 1) + config.trials * self.episode_length
        self.buffer = ReplayBuffer(capacity, self.spec.obs_dim, self.spec.act_dim)
        self.trials_done = -1  # -1: no seed data yet; 0: seed data only
        self.rows: List[Dict[str, Any]] = []

    # ------------------------------------------------------------------ folder
    def path(self, name: str) -> str:
        return os.path.join(self.out_dir, name)

    @classmethod
    def create(cls, out_dir: str, config: RunConfig) -> "Run":
        if os.path.exists(os.path.join(out_dir, STATE)):
            raise RunError(f"{out_dir} already holds a run; use --resume {out_dir} to continue it.")
        run = cls(out_dir, config)
        os.makedirs(out_dir, exist_ok=True)
        config.save(run.path(CONFIG))
        return run

    @classmethod
    def resume(cls, out_dir: str, trials: Optional[int] = None) -> "Run":
        if not os.path.isdir(out_dir):
            raise RunError(f"{out_dir} is not a directory.")
        if not os.path.exists(os.path.join(out_dir, CONFIG)):
            raise RunError(f"{out_dir} is not a run folder (no {CONFIG}).")
        try:
            config = RunConfig.load(os.path.join(out_dir, CONFIG))
        except (ValueError, TypeError) as e:
            raise RunError(f"{out_dir}/{CONFIG} is not a valid run config: {e}") from None
        if trials is not None:
            if trials < 0:
                raise RunError(f"trials must be positive, got {trials}.")
            config.trials = max(trials, 1)
            config.save(os.path.join(out_dir, CONFIG))
        run = cls(out_dir, config)
        if not os.path.exists(run.path(STATE)):
            return run  # killed before the seed data was saved: start afresh
        state = load_json(run.path(STATE))
        run.trials_done = int(state["trials_done"])
        try:
            buffer = ReplayBuffer.load(run.path(BUFFER))
        except (ValueError, OSError, KeyError) as e:
            raise RunError(f"{out_dir}/{BUFFER} cannot be read: {e}") from None
        # Grow the capacity if --trials was raised.
        run.buffer = ReplayBuffer(max(run.buffer.capacity, len(buffer)), buffer.obs_dim,
                                  buffer.act_dim)
        data = buffer.as_dict()
        if len(buffer):
            run.buffer.add(**data)
        if state.get("env_steps") is not None and int(state["env_steps"]) != len(run.buffer):
            raise RunError(f"{out_dir}: the replay buffer does not match {STATE}.")
        if run.agent.params is None and os.path.exists(run.path(MODEL)) and run.trials_done > 0:
            run.agent.params = load_params(run.path(MODEL))
        run.rows = _read_metrics(run.path(METRICS))[: run.trials_done + 1]
        return run

    def _commit(self) -> None:
        """Saves buffer, model and metrics, then the state file that makes them the checkpoint."""
        self.buffer.save(self.path(BUFFER))
        if getattr(self.agent, "params", None) is not None:
            save_params(self.path(MODEL), self.agent.params)
        _write_metrics(self.path(METRICS), self.rows)
        save_json(self.path(STATE), {"trials_done": self.trials_done,
                                     "env_steps": len(self.buffer)})
        try:
            plot_returns([self.rows], [os.path.basename(os.path.abspath(self.out_dir))],
                         self.path(PLOT))
        except Exception:  # a plot must never cost a run its data
            pass

    # ------------------------------------------------------------------ loop
    def run(self, progress: bool = True, log: Callable[[str], None] = print) -> List[Dict]:
        """Runs (or continues) until ``config.trials`` trials are done; returns the rows."""
        env = envs.make(self.config.env)
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
        random_agent = build_agent(RunConfig(env=cfg.env, agent="random"))
        returns, episode = [], 0
        while len(self.buffer) < cfg.seed_steps:
            steps = min(self.episode_length, cfg.seed_steps - len(self.buffer))
            out = run_episode(env, random_agent, _key(cfg.seed, 0, episode),
                              _env_seed(cfg.seed, 0, episode), steps, self.buffer)
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
        train_key, episode_key, calib_key = jax.random.split(_key(cfg.seed, 1, trial), 3)
        train_info = self.agent.update(self.buffer, train_key)
        bar = _progress_bar(progress, self.episode_length, f"trial {trial}/{cfg.trials}",
                            self.rows[-1].get("return"), train_info.get("holdout_mse"))
        episode = run_episode(
            env, self.agent, episode_key, _env_seed(cfg.seed, 1, trial), self.episode_length,
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
        log(_summary(row, cfg.trials))


def _env_seed(seed: int, phase: int, index: int) -> int:
    return (seed * 1_000_003 + phase * 10_007 + index) % (2**31 - 1)


class _Bar:
    def __init__(self, total: int, desc: str, last_return: Any, model_loss: Any):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
        self._post = {}
        if last_return is not None:
            self._post["last"] = f"{last_return:.1f}"
        if model_loss is not None:
            self._post["model_mse"] = f"{model_loss:.3g}"

    def update(self, step: int, ret: float) -> None:
        self._bar.n = step
        self._bar.set_postfix(ret=f"{ret:.1f}", **self._post, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _progress_bar(enabled: bool, total: int, desc: str, last_return: Any, loss: Any):
    return _Bar(total, desc, last_return, loss) if enabled else None


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        format(value, spec)


def _summary(row: Dict[str, Any], trials: int) -> str:
    return (
        f"trial {row['trial']:>3}/{trials}  return {row['return']:9.2f}  "
        f"steps {row['env_steps']:>6}  model mse {_fmt(row.get('holdout_mse'), '.3g')}  "
        f"cov90 {_fmt(row.get('calib_coverage90'), '.2f')}  "
        f"train {_fmt(row.get('seconds_train'), '.1f')}s  "
        f"plan {_fmt(row.get('seconds_per_action'), '.3f')}s/act"
    )


def _write_metrics(path: str, rows: List[Dict[str, Any]]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    os.replace(tmp, path)


def _read_metrics(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "return" not in reader.fieldnames:
            raise RunError(f"{path} is not a metrics file.")
        rows = []
        for row in reader:
            rows.append({k: _parse(v) for k, v in row.items()})
    return rows


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
    """The rows of ``run_dir/metrics.csv`` (numbers parsed)."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        raise RunError(f"{run_dir} is not a run folder (no {METRICS}).")
    return _read_metrics(path)


def _parse(value: str) -> Any:
    if value == "" or value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value else number


def plot_returns(runs: List[List[Dict[str, Any]]], labels: List[str], path: str,
                 groups: Optional[List[int]] = None) -> None:
    """Learning curves (return vs env steps); runs sharing a group id are drawn as mean +- std
    over seeds (at equal trial indices)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(range(len(runs))) if groups is None else groups
    fig, ax = plt.subplots(figsize=(6, 4))
    for gid in dict.fromkeys(groups):
        members = [r for r, g in zip(runs, groups) if g == gid]
        label = labels[groups.index(gid)]
        n = min(len(r) for r in members)
        if n == 0:
            continue
        steps = np.array([[row["env_steps"] for row in r[:n]] for r in members], float).mean(0)
        rets = np.array([[row["return"] for row in r[:n]] for r in members], float)
        mean = rets.mean(0)
        line, = ax.plot(steps, mean, marker="o", ms=3,
                        label=f"{label} (n={len(members)})" if len(members) > 1 else label)
        if len(members) > 1:
            std = rets.std(0)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def evaluate(run_dir: str, episodes: int, seed: int = 12345, progress: bool = False
             ) -> List[float]:
    """Returns of ``episodes`` episodes of the run's saved agent."""
    if episodes <= 0:
        raise RunError(f"episodes must be positive, got {episodes}.")
    run = Run.resume(run_dir)
    if run.trials_done < 1 and run.config.agent != "random":
        raise RunError(f"{run_dir} has no trained model yet (no finished trial).")
    if run.config.agent != "random" and run.agent.params is None:
        raise CheckpointError(f"{run_dir}/{MODEL} is missing.")
    env = envs.make(run.config.env)
    returns = []
    try:
        for i in range(episodes):
            out = run_episode(env, run.agent, _key(seed, 2, i), _env_seed(seed, 2, i),
                              run.episode_length)
            returns.append(out["return"])
    finally:
        env.close()
    return returns
