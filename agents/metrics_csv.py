"""A run's ``metrics.csv``: one row per trial, a fixed set of columns."""

from __future__ import annotations

import csv
import os
from typing import Any, Dict, List

COLUMNS = (
    "trial", "env_steps", "return", "episode_steps", "train_loss", "holdout_mse", "holdout_nll",
    "train_epochs", "calib_nll", "calib_rmse", "calib_coverage50", "calib_coverage90",
    "calib_error", "seconds_train", "seconds_plan", "seconds_per_action",
)


def write_rows(path: str, rows: List[Dict[str, Any]]) -> None:
    """Writes ``rows`` (dicts; missing or None values as empty cells, other keys ignored) to
    ``path`` with the ``COLUMNS`` header, atomically (a temporary file, then a rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    os.replace(tmp, path)


def read_rows(path: str) -> List[Dict[str, Any]]:
    """The rows of the metrics file ``path`` (``[]`` if it does not exist): numbers parsed
    (ints stay ints), empty cells None. A file without a ``return`` column is a ValueError."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "return" not in reader.fieldnames:
            raise ValueError(f"{path} is not a metrics file.")
        return [{k: _parse(v) for k, v in row.items()} for row in reader]


def _parse(value: str) -> Any:
    if value == "" or value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value else number
