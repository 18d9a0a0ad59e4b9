"""Learning curves of runs (a run folder's ``returns.png``, ``mbrl-bayes plot``)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np


def plot_returns(runs: List[List[Dict[str, Any]]], labels: List[str], path: str,
                 groups: Optional[List[int]] = None) -> None:
    """Learning curves (return vs env steps); runs sharing a group id are drawn as mean +- std
    over seeds (at equal trial indices).

    Args:
      runs: each run's ``metrics.csv`` rows (``env_steps`` and ``return`` are read).
      labels: one label per run; a group is labelled by its first member's.
      path: the PNG to write (atomically).
      groups: one group id per run; default each run its own group.
    """
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
