"""Did a Pusher-v5 agent ever touch the object? Per trial of its runs, from their replay buffers.

    python experiments/pusher_contact.py \
        "docs/results/compare_planners_pusher/runs/pusher/iCEM 200x3, 10 particles"/s*

Pusher's reward is ``-0.5 ||object - tip|| - ||object - goal|| - 0.1 |a|^2``: an agent can earn
the first term by moving its fingertip toward the object, but the second only by pushing it,
and a model learns how the object moves only from transitions in which it did. For each run
folder (its ``buffer.npz`` and ``metrics.csv``) this prints, per trial (trial 0: the random
seed data): the closest the fingertip came to the object, in 3-D and in height above it, how
far the object travelled over the trial, and how many transitions moved it at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import RunError, read_metrics  # noqa: E402
from agents.run_folder import RunFolder  # noqa: E402

# Pusher-v5 observation slices (envs/mujoco_tasks.py): fingertip, object, goal positions.
TIP, OBJECT = slice(14, 17), slice(17, 20)
MOVED = 1e-4  # object displacement in one step (m) that counts as a push


def contact_stats(obs: np.ndarray, next_obs: np.ndarray) -> Dict[str, float]:
    """Contact statistics of one trial's transitions ``obs``, ``next_obs`` [T, 23]:
    ``min_tip_distance`` (m, 3-D), ``min_tip_height`` (m, fingertip above the object's centre),
    ``object_moved`` (m, the object's path length: its steps summed, so that the resets between
    a trial's episodes do not count) and ``pushes`` (steps that moved it more than ``MOVED``)."""
    obs, next_obs = np.asarray(obs, np.float64), np.asarray(next_obs, np.float64)
    if obs.ndim != 2 or obs.shape[-1] != 23 or next_obs.shape != obs.shape or not len(obs):
        raise ValueError(f"expected Pusher-v5 transitions [T, 23], got {obs.shape} and "
                         f"{next_obs.shape}.")
    offset = next_obs[:, TIP] - next_obs[:, OBJECT]
    step = np.linalg.norm(next_obs[:, OBJECT] - obs[:, OBJECT], axis=-1)
    return {
        "min_tip_distance": float(np.linalg.norm(offset, axis=-1).min()),
        "min_tip_height": float(offset[:, 2].min()),
        "object_moved": float(step.sum()),
        "pushes": int((step > MOVED).sum()),
    }


def run_contacts(run_dir: str) -> List[Dict[str, float]]:
    """``contact_stats`` per finished trial of the run in ``run_dir`` (trial 0: the seed data)."""
    buffer = RunFolder(run_dir).load_buffer().as_dict()
    rows, start = [], 0
    for row in read_metrics(run_dir):
        end = int(float(row["env_steps"]))
        stats = contact_stats(buffer["obs"][start:end], buffer["next_obs"][start:end])
        rows.append({"trial": int(row["trial"]), "return": float(row["return"]), **stats})
        start = end
    return rows


def report(run_dirs: Sequence[str]) -> str:
    lines = ["| run | trial | return | closest tip-object (m) | lowest tip above object (m) "
             "| object moved (m) | steps that moved it |", "|---|---|---|---|---|---|---|"]
    for run_dir in run_dirs:
        for r in run_contacts(run_dir):
            lines.append(f"| {os.path.basename(os.path.normpath(run_dir))} | {r['trial']} "
                         f"| {r['return']:.1f} | {r['min_tip_distance']:.3f} "
                         f"| {r['min_tip_height']:.3f} | {r['object_moved']:.4f} "
                         f"| {r['pushes']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="Pusher-v5 run folders (with buffer.npz)")
    args = parser.parse_args(argv)
    try:
        print(report(args.runs))
    except (RunError, ValueError, OSError) as error:
        print(f"pusher_contact: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
