"""What a run shows while it runs: a per-episode progress bar and one summary line per trial."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional


class EpisodeBar:
    """A tqdm bar over an episode's steps showing the return so far, the last trial's return
    and the model's holdout MSE."""

    def __init__(self, total: int, desc: str, last_return: Any, model_loss: Any):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
        self._post = {}
        if last_return is not None:
            self._post["last"] = f"{last_return:.1f}"
        if model_loss is not None:
            self._post["model_mse"] = f"{model_loss:.3g}"

    def update(self, step: int, ret: float) -> None:
        """``run_episode``'s ``on_step``: ``step`` steps done, return so far ``ret``."""
        self._bar.n = step
        self._bar.set_postfix(ret=f"{ret:.1f}", **self._post, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def episode_bar(enabled: bool, total: int, desc: str, last_return: Any,
                loss: Any) -> Optional[EpisodeBar]:
    """An :class:`EpisodeBar`, or None when progress display is off."""
    return EpisodeBar(total, desc, last_return, loss) if enabled else None


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        format(value, spec)


def trial_summary(row: Dict[str, Any], trials: int) -> str:
    """One line on a finished trial's ``metrics.csv`` row (``-`` for missing values)."""
    return (
        f"trial {row['trial']:>3}/{trials}  return {row['return']:9.2f}  "
        f"steps {row['env_steps']:>6}  model mse {_fmt(row.get('holdout_mse'), '.3g')}  "
        f"cov90 {_fmt(row.get('calib_coverage90'), '.2f')}  "
        f"train {_fmt(row.get('seconds_train'), '.1f')}s  "
        f"plan {_fmt(row.get('seconds_per_action'), '.3f')}s/act"
    )
