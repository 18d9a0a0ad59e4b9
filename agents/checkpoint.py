"""Atomic, validated saving of parameter pytrees and small JSON state files."""

from __future__ import annotations

import json
import os
import pickle
from typing import Any

import jax
import numpy as np

_MAGIC = "mbrl_bayes.checkpoint.v1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not ours."""


def _atomic_write_bytes(path: str, payload: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_params(path: str, params: Any) -> None:
    """Writes ``params`` (a pytree of arrays; NamedTuples kept) to ``path`` atomically."""
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    _atomic_write_bytes(path, pickle.dumps({"magic": _MAGIC, "params": host}, protocol=4))


def load_params(path: str) -> Any:
    """Reads params written by ``save_params``; raises ``CheckpointError`` if it cannot."""
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except Exception as e:  # truncated, corrupted or foreign file
        raise CheckpointError(f"Checkpoint {path} is corrupted ({type(e).__name__}).") from None
    if not isinstance(payload, dict) or payload.get("magic") != _MAGIC:
        raise CheckpointError(f"{path} is not an mbrl-bayes checkpoint.")
    return payload["params"]


def save_json(path: str, data: Any) -> None:
    _atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())


def load_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist.") from None
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} is corrupted (not valid JSON).") from None
