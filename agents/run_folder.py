"""A run folder on disk: its files, written atomically, and how a run is read back.

A run writes one folder::

    config.json     the RunConfig
    metrics.csv     one row per trial (trial 0: the random seed data)
    state.json      trials finished, env steps (written last: the commit point of a trial)
    buffer.npz      the replay buffer
    model.ckpt      the model params after the last trial's training
    returns.png     the learning curve

``buffer.npz`` and ``model.ckpt`` (an ``.npz`` of arrays plus a JSON tree, see
``agents.checkpoint``) are read with ``allow_pickle=False``: opening someone else's run folder
never runs code from it.

:meth:`RunFolder.commit` replaces every file atomically and writes ``state.json`` last, so a
folder always holds the last finished trial whole, whenever the process was killed.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from agents.checkpoint import load_json, load_params, save_json, save_params
from agents.config import RunConfig
from agents.metrics_csv import read_rows, write_rows
from agents.plotting import plot_returns
from mbrl_bayes.data import ReplayBuffer

CONFIG, METRICS, STATE, BUFFER, MODEL, PLOT = (
    "config.json", "metrics.csv", "state.json", "buffer.npz", "model.ckpt", "returns.png",
)


class RunError(ValueError):
    """A run folder that cannot be used (missing, not a run, corrupted)."""


class RunFolder:
    """The files of the run in ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def path(self, name: str) -> str:
        return os.path.join(self.out_dir, name)

    def holds_run(self) -> bool:
        """Whether a run has committed at least its seed data here."""
        return os.path.exists(self.path(STATE))

    def save_config(self, config: RunConfig) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        config.save(self.path(CONFIG))

    def load_config(self) -> RunConfig:
        """The folder's ``RunConfig``; RunError if the folder or its config is missing or bad."""
        if not os.path.isdir(self.out_dir):
            raise RunError(f"{self.out_dir} is not a directory.")
        if not os.path.exists(self.path(CONFIG)):
            raise RunError(f"{self.out_dir} is not a run folder (no {CONFIG}).")
        try:
            return RunConfig.load(self.path(CONFIG))
        except (ValueError, TypeError) as e:
            raise RunError(f"{self.out_dir}/{CONFIG} is not a valid run config: {e}") from None

    def load_state(self) -> Dict[str, Any]:
        """``{"trials_done": int, "env_steps": int}`` of the last committed trial."""
        return load_json(self.path(STATE))

    def load_buffer(self) -> ReplayBuffer:
        try:
            return ReplayBuffer.load(self.path(BUFFER))
        except (ValueError, OSError, KeyError) as e:
            raise RunError(f"{self.out_dir}/{BUFFER} cannot be read: {e}") from None

    def load_params(self) -> Optional[Any]:
        """The saved model params, or None if no model was saved yet."""
        return load_params(self.path(MODEL)) if os.path.exists(self.path(MODEL)) else None

    def read_rows(self) -> List[Dict[str, Any]]:
        """The rows of ``metrics.csv`` (``[]`` before the first commit)."""
        try:
            return read_rows(self.path(METRICS))
        except ValueError as e:
            raise RunError(str(e)) from None

    def commit(self, buffer: ReplayBuffer, params: Optional[Any],
               rows: List[Dict[str, Any]], trials_done: int) -> None:
        """Saves buffer, model and metrics, then the state file that makes them the checkpoint;
        then redraws ``returns.png``."""
        buffer.save(self.path(BUFFER))
        if params is not None:
            save_params(self.path(MODEL), params)
        write_rows(self.path(METRICS), rows)
        save_json(self.path(STATE), {"trials_done": trials_done, "env_steps": len(buffer)})
        try:
            plot_returns([rows], [os.path.basename(os.path.abspath(self.out_dir))],
                         self.path(PLOT))
        except Exception:  # a plot must never cost a run its data
            pass


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
    """The rows of ``run_dir/metrics.csv`` (numbers parsed)."""
    folder = RunFolder(run_dir)
    if not os.path.exists(folder.path(METRICS)):
        raise RunError(f"{run_dir} is not a run folder (no {METRICS}).")
    return folder.read_rows()
