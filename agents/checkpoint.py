"""Atomic, validated saving of parameter pytrees and small JSON state files.

A checkpoint is an ``.npz`` archive (whatever its file name) of the pytree's array leaves,
``leaf_0 .. leaf_{n-1}``, plus ``__tree__``: a JSON string describing the tree around them
(dicts with string keys, lists, tuples, ``None``, Python scalars and the NamedTuples named in
``NAMED_TUPLES``, such as the models' ``Normalizer``). It is read with
``numpy.load(allow_pickle=False)`` and the tree rebuilt from that description alone, so loading
a checkpoint, from anyone, never runs code: an old pickle checkpoint, or an archive holding
Python objects, is refused with a one-line ``CheckpointError`` before anything in it is
unpickled.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, Dict, List, Type

import jax
import ml_dtypes
import numpy as np

from mbrl_bayes.models.normalization import Normalizer

_MAGIC = "mbrl_bayes.checkpoint.v2"
_TREE = "__tree__"
# The NamedTuple node types a checkpoint may hold, by the name written into the file. Only these
# are rebuilt on load; a file naming any other type is refused (nothing is imported by name).
NAMED_TUPLES: Dict[str, Type[tuple]] = {"Normalizer": Normalizer}
# Array dtypes numpy cannot describe in an .npz on its own: stored as raw bits, retyped on load.
_EXTRA_DTYPES = {name: np.dtype(getattr(ml_dtypes, name))
                 for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")}
_PICKLE_PROTOCOL_2_PLUS = b"\x80"  # the first byte of every pickle since protocol 2


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not ours."""


def register_named_tuple(cls: Type[tuple]) -> Type[tuple]:
    """Lets checkpoints hold NamedTuple ``cls`` (by its class name); usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise TypeError(f"register_named_tuple takes a NamedTuple class, got {cls!r}.")
    known = NAMED_TUPLES.get(cls.__name__)
    if known is not None and known is not cls:
        raise ValueError(f"A different NamedTuple named {cls.__name__!r} is already registered.")
    NAMED_TUPLES[cls.__name__] = cls
    return cls


def _atomic_write_bytes(path: str, payload: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- tree <-> JSON
def _encode(node: Any, leaves: List[np.ndarray], where: str) -> Any:
    """The JSON description of ``node``; its arrays are appended to ``leaves``."""
    if node is None:
        return {"type": "none"}
    if isinstance(node, (np.ndarray, np.generic, jax.Array)):
        if jax.dtypes.issubdtype(node.dtype, jax.dtypes.prng_key):
            raise TypeError(f"save_params: typed PRNG key at {where}; store "
                            "jax.random.key_data(key) instead.")
        array = np.asarray(jax.device_get(node))
        spec: Dict[str, Any] = {"type": "array", "index": len(leaves)}
        if array.dtype.kind == "O":
            raise TypeError(f"save_params: object array at {where}.")
        if array.dtype.name in _EXTRA_DTYPES:
            spec["dtype"] = array.dtype.name
            array = array.view(f"u{array.dtype.itemsize}")
        leaves.append(array)
        return spec
    if isinstance(node, bool):
        return {"type": "bool", "value": node}
    if isinstance(node, int):
        return {"type": "int", "value": node}
    if isinstance(node, float):
        return {"type": "float", "value": repr(node)}
    if isinstance(node, dict):
        bad = [k for k in node if not isinstance(k, str)]
        if bad:
            raise TypeError(f"save_params: dict keys must be strings, got {bad[0]!r} at {where}.")
        keys = list(node)
        return {"type": "dict", "keys": keys,
                "children": [_encode(node[k], leaves, f"{where}[{k!r}]") for k in keys]}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        name = type(node).__name__
        if NAMED_TUPLES.get(name) is not type(node):
            raise TypeError(f"save_params: NamedTuple {name} at {where} is not registered "
                            "(agents.checkpoint.register_named_tuple).")
        return {"type": "namedtuple", "name": name, "fields": list(node._fields),
                "children": [_encode(v, leaves, f"{where}.{f}")
                             for f, v in zip(node._fields, node)]}
    if isinstance(node, (list, tuple)):
        return {"type": "list" if isinstance(node, list) else "tuple",
                "children": [_encode(v, leaves, f"{where}[{i}]") for i, v in enumerate(node)]}
    raise TypeError(f"save_params: cannot store a {type(node).__name__} at {where}.")


def _decode(spec: Any, arrays: Dict[str, np.ndarray]) -> Any:
    """Rebuilds the node described by ``spec`` (raises KeyError/TypeError/ValueError if bad)."""
    kind = spec["type"]
    if kind == "none":
        return None
    if kind in ("bool", "int"):
        value = spec["value"]
        if type(value) is not (bool if kind == "bool" else int):
            raise TypeError(f"bad {kind} value")
        return value
    if kind == "float":
        return float(spec["value"])
    if kind == "array":
        index = spec["index"]
        if type(index) is not int:
            raise TypeError("bad leaf index")
        array = arrays[f"leaf_{index}"]
        if "dtype" in spec:
            array = array.view(_EXTRA_DTYPES[spec["dtype"]])
        return array
    children = spec.get("children")
    if not isinstance(children, list):
        raise TypeError("node without children")
    values = [_decode(c, arrays) for c in children]
    if kind == "dict":
        keys = spec["keys"]
        if len(keys) != len(values) or not all(isinstance(k, str) for k in keys):
            raise TypeError("bad dict keys")
        return dict(zip(keys, values))
    if kind == "list":
        return values
    if kind == "tuple":
        return tuple(values)
    if kind == "namedtuple":
        cls = NAMED_TUPLES.get(spec["name"])
        if cls is None:
            raise _Foreign(f"holds an unknown NamedTuple {spec['name']!r}")
        if list(spec["fields"]) != list(cls._fields):
            raise _Foreign(f"holds a {spec['name']} with fields {spec['fields']}, "
                           f"expected {list(cls._fields)}")
        return cls(*values)
    raise TypeError(f"unknown node type {kind!r}")


class _Foreign(Exception):
    """A well-formed file we will not rebuild (names a type we do not know)."""


# --------------------------------------------------------------------------- params
def save_params(path: str, params: Any) -> None:
    """Writes ``params`` (a pytree of arrays; dicts, lists, tuples and registered NamedTuples
    kept) to ``path`` atomically, as an ``.npz`` archive that loads without pickle."""
    leaves: List[np.ndarray] = []
    tree = _encode(params, leaves, "params")
    header = json.dumps({"magic": _MAGIC, "tree": tree})
    buffer = io.BytesIO()
    np.savez(buffer, **{f"leaf_{i}": x for i, x in enumerate(leaves)},
             **{_TREE: np.array(header)})
    _atomic_write_bytes(path, buffer.getvalue())


def load_params(path: str) -> Any:
    """Reads params written by ``save_params`` (leaves as numpy arrays); raises
    ``CheckpointError`` with one line if it cannot, without running anything from the file."""
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_PICKLE_PROTOCOL_2_PLUS):
        raise CheckpointError(
            f"Checkpoint {path} is an old pickle-format (or foreign) file; it is not loaded, "
            "since unpickling can run arbitrary code: retrain the run to write a safe one.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"Checkpoint {path} is corrupted or not an mbrl-bayes checkpoint "
                              "(not an .npz archive).")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e):  # an object array: pickled Python objects inside
            raise CheckpointError(f"Checkpoint {path} holds pickled Python objects; it is not "
                                  "loaded, since unpickling can run arbitrary code.") from None
        raise CheckpointError(f"Checkpoint {path} is corrupted ({type(e).__name__}).") from None
    except Exception as e:  # truncated or damaged archive
        raise CheckpointError(f"Checkpoint {path} is corrupted ({type(e).__name__}).") from None
    try:
        header = json.loads(str(arrays.pop(_TREE)))
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} is not an mbrl-bayes checkpoint.") from None
    if not isinstance(header, dict) or header.get("magic") != _MAGIC:
        raise CheckpointError(f"{path} is not an mbrl-bayes checkpoint.")
    try:
        return _decode(header["tree"], arrays)
    except _Foreign as e:
        raise CheckpointError(f"Checkpoint {path} {e}.") from None
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"Checkpoint {path} is corrupted (bad tree description: "
                              f"{type(e).__name__}).") from None


# --------------------------------------------------------------------------- JSON
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
