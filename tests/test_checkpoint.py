"""Checkpoints that cannot run code: .npz leaves + a JSON tree, loaded with allow_pickle=False."""

import json
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.checkpoint import CheckpointError, load_params, register_named_tuple, save_params
from mbrl_bayes import models
from mbrl_bayes.data import ReplayBuffer


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _model_params(name):
    kwargs = dict(obs_dim=3, act_dim=1, hidden_sizes=(4,))
    model = {
        "pe": lambda: models.ProbabilisticEnsemble(**kwargs, ensemble_size=2, num_elites=1),
        "vmlp": lambda: models.VariationalMLP(**kwargs),
        "dropout": lambda: models.MCDropoutMLP(**kwargs),
        "vlstm": lambda: models.VariationalLSTM(**kwargs, lstm_size=2, sequence_length=3),
    }[name]()
    return model.init(jax.random.PRNGKey(0), np.zeros((2, 3), np.float32),
                      np.zeros((2, 1), np.float32))


def _assert_same_tree(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert type(x) is type(y) if not hasattr(x, "dtype") else np.asarray(x).dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ["pe", "vmlp", "dropout", "vlstm"])
def test_model_params_round_trip_exactly(name, tmp_path):
    params = _model_params(name)
    path = str(tmp_path / "model.ckpt")
    save_params(path, params)
    loaded = load_params(path)
    _assert_same_tree(params, loaded)
    assert isinstance(loaded["stats"]["input"], models.Normalizer)
    assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(loaded))


def test_every_node_kind_round_trips(tmp_path):
    tree = {"none": None, "int": 3, "float": -2.5, "nan": float("nan"), "bool": True,
            "tuple": (jnp.arange(3), [np.float32(1.5)]), "empty": {}, "list": [],
            "bf16": jnp.linspace(0, 1, 5, dtype=jnp.bfloat16), "i32": jnp.int32(7),
            "norm": models.Normalizer(jnp.zeros(2), jnp.ones(2))}
    path = str(tmp_path / "tree.ckpt")
    save_params(path, tree)
    loaded = load_params(path)
    assert jax.tree_util.tree_structure(loaded, is_leaf=lambda x: x is None) == \
        jax.tree_util.tree_structure(tree, is_leaf=lambda x: x is None)
    assert loaded["none"] is None and loaded["int"] == 3 and loaded["bool"] is True
    assert loaded["float"] == -2.5 and np.isnan(loaded["nan"])
    assert type(loaded["int"]) is int and type(loaded["float"]) is float
    assert isinstance(loaded["tuple"], tuple) and isinstance(loaded["tuple"][1], list)
    assert loaded["bf16"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(loaded["bf16"], np.asarray(tree["bf16"]))
    assert loaded["i32"].dtype == np.int32 and loaded["i32"] == 7
    assert isinstance(loaded["norm"], models.Normalizer)


def test_a_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran.txt"
    payload = pickle.dumps({"magic": "mbrl_bayes.checkpoint.v1", "params": _Payload(marker)},
                           protocol=4)
    # The payload is live: plain unpickling would run it (on a second marker).
    live = tmp_path / "live.txt"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.read_text() == "ran"
    path = tmp_path / "model.ckpt"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="old pickle-format .* not loaded") as info:
        load_params(str(path))
    assert len(str(info.value).splitlines()) == 1
    assert not marker.exists()


def test_an_archive_with_pickled_objects_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran.txt"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    header = json.dumps({"magic": "mbrl_bayes.checkpoint.v2",
                         "tree": {"type": "array", "index": 0}})
    path = str(tmp_path / "model.ckpt")
    with open(path, "wb") as f:
        np.savez(f, leaf_0=evil, __tree__=np.array(header))
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load_params(path)
    assert not marker.exists()
    # The replay buffer's loader refuses such an archive too.
    with open(str(tmp_path / "buffer.npz"), "wb") as f:
        np.savez(f, obs=evil, format_name=np.array("mbrl_bayes.ReplayBuffer"))
    with pytest.raises(ValueError, match="not a saved ReplayBuffer"):
        ReplayBuffer.load(str(tmp_path / "buffer.npz"))
    assert not marker.exists()


def test_foreign_truncated_and_unknown_files_are_one_line_errors(tmp_path):
    good = str(tmp_path / "good.ckpt")
    save_params(good, _model_params("pe"))
    cases = {}
    with open(str(tmp_path / "foreign.npz"), "wb") as f:
        np.savez(f, weights=np.ones(3))
    cases["foreign.npz"] = "is not an mbrl-bayes checkpoint"
    blob = open(good, "rb").read()
    (tmp_path / "truncated.ckpt").write_bytes(blob[: len(blob) // 2])
    cases["truncated.ckpt"] = "is corrupted"
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00garbage")
    cases["garbage.ckpt"] = "is corrupted or not an mbrl-bayes checkpoint"
    for name, tree in (("unknown.ckpt", {"type": "namedtuple", "name": "os_system",
                                         "fields": [], "children": []}),
                       ("badleaf.ckpt", {"type": "array", "index": 5})):
        with open(str(tmp_path / name), "wb") as f:
            np.savez(f, __tree__=np.array(json.dumps(
                {"magic": "mbrl_bayes.checkpoint.v2", "tree": tree})))
    cases["unknown.ckpt"] = "holds an unknown NamedTuple 'os_system'"
    cases["badleaf.ckpt"] = "is corrupted \\(bad tree description"
    cases["missing.ckpt"] = "does not exist"
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_params(str(tmp_path / name))
        assert len(str(info.value).splitlines()) == 1, name
    assert zipfile.is_zipfile(good)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "model.ckpt")
    params = _model_params("pe")
    save_params(path, params)

    class Unregistered(tuple):
        _fields = ("a",)

    with pytest.raises(TypeError, match="is not registered"):
        save_params(path, {"x": Unregistered((jnp.ones(1),))})
    with pytest.raises(TypeError, match="cannot store a object"):
        save_params(path, {"x": object()})
    _assert_same_tree(params, load_params(path))
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_registered_named_tuples_round_trip(tmp_path):
    from typing import NamedTuple

    @register_named_tuple
    class Moments(NamedTuple):
        mean: jnp.ndarray
        count: int

    path = str(tmp_path / "m.ckpt")
    save_params(path, [Moments(jnp.ones(2), 4)])
    (loaded,) = load_params(path)
    assert isinstance(loaded, Moments) and loaded.count == 4
    np.testing.assert_array_equal(loaded.mean, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="NamedTuple class"):
        register_named_tuple(dict)
