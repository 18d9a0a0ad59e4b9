"""How well calibrated an agent's model is on an episode it has not trained on."""

from __future__ import annotations

from typing import Any, Dict

import jax
import numpy as np

from mbrl_bayes import metrics


def calibration(agent: Any, episode: Dict[str, np.ndarray], key: jax.Array) -> Dict[str, float]:
    """The ``calib_*`` columns of a trial: NLL, RMSE, 50% / 90% coverage and calibration error
    of the agent's one-step predictions on ``episode`` (``obs`` [T, d], ``act`` [T, a],
    ``next_obs`` [T, d]); empty for an agent without a model."""
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
