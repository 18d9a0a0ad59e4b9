"""One typed validation of RunConfig: every bad value is one line naming its field, exit 2."""

import dataclasses
import json

import pytest
from conftest import TINY_RUN as TINY

from agents import RunConfig
from agents.validation import FIELDS, validate_config
from experiments.cli import main
from experiments.presets import preset_config


def write(tmp_path, text, name="bad.json"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def tiny_with(section=None, **changes):
    data = json.loads(json.dumps(TINY))
    (data[section] if section else data).update(changes)
    return data


def cli_error(argv, capsys):
    """Runs the CLI, asserts exit 2 with one line and no traceback; returns the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("section, changes, message", [
    (None, {"trials": "abc"}, "trials must be a whole number, got 'abc'"),
    ("model", {"hidden_sizes": 16}, "model.hidden_sizes must be a list of whole numbers, got 16"),
    ("model", {"hidden_sizes": [16, 0]}, "model.hidden_sizes must hold positive numbers"),
    ("model", {"hidden_sizes": [16, "8"]}, "model.hidden_sizes must be a list of whole numbers"),
    (None, {"trials": True}, "trials must be a whole number, got True"),
    ("planner", {"horizon": 2.5}, "planner.horizon must be a whole number, got 2.5"),
    ("planner", {"alpha": 1.0}, "planner.alpha must be in [0, 1), got 1.0"),
    ("planner", {"temperature": 0}, "planner.temperature must be a positive number, got 0"),
    ("train", {"holdout_fraction": -0.1}, "train.holdout_fraction must be in [0, 1)"),
    ("train", {"weight_decay": "1e-4"}, "train.weight_decay must be a number, got '1e-4'"),
    ("model", {"dropout_rate": 0.0}, "model.dropout_rate must be in (0, 1), got 0.0"),
    ("model", {"activation": "sigmoid"}, "Unknown activation 'sigmoid'; known: "),
    ("model", {"num_elites": 3}, "model.num_elites must be <= model.ensemble_size (2), got 3"),
    ("model", {"learn_reward": "yes"}, "model.learn_reward must be true or false, got 'yes'"),
    ("model", {"fused_kernel": 2}, "model.fused_kernel must be one of ('triton', 'mosaic') or "
                                   "null, got 2"),
    ("model", {"fused_kernel": "step"}, "model.fused_kernel must be one of"),
    (None, {"episode_length": 0}, "episode_length must be a positive number, got 0"),
    (None, {"seed": -1}, "seed must be in [0, 2**63), got -1"),
    (None, {"env": 3}, "env must be a string, got 3"),
    (None, {"model": 5}, "Expected a JSON object for ModelConfig, got int"),
    ("planner", {"elites": 50}, "planner.elites must be <= planner.population (16), got 50"),
    ("planner", {"num_particles": 5},
     "planner.num_particles (5) must be divisible by the 2 function draws of "
     "model.ensemble_size (propagation 'ts_inf')"),
])
def test_a_bad_config_file_is_one_line_naming_the_field(section, changes, message, tmp_path,
                                                        capsys):
    path = write(tmp_path, json.dumps(tiny_with(section, **changes)))
    out = tmp_path / "run"
    err = cli_error(["train", "--config", path, "--out", str(out)], capsys)
    assert err.startswith("mbrl-bayes: ") and message in err
    assert not out.exists()  # nothing was created


def test_nan_learning_rate_is_refused(tmp_path, capsys):
    text = json.dumps(tiny_with("train", learning_rate=float("nan")))
    assert "NaN" in text  # Python's json writes (and reads) the NaN literal
    err = cli_error(["train", "--config", write(tmp_path, text)], capsys)
    assert "train.learning_rate must be a finite number, got nan" in err
    config = RunConfig.from_dict(tiny_with("train", learning_rate=float("inf")))
    with pytest.raises(ValueError, match="train.learning_rate must be a finite number, got inf"):
        config.validate()


def test_a_bad_value_in_the_file_is_reported_even_when_a_flag_overrides_it(tmp_path, capsys):
    bad = write(tmp_path, json.dumps(tiny_with(trials="abc")))
    err = cli_error(["train", "--config", bad, "--trials", "3"], capsys)
    assert "trials must be a whole number, got 'abc'" in err
    bad = write(tmp_path, json.dumps(tiny_with("planner", population=-5)))
    err = cli_error(["train", "--config", bad, "--population", "16"], capsys)
    assert "planner.population must be a positive number, got -5" in err


def test_every_violation_is_listed_on_one_line(tmp_path, capsys):
    data = tiny_with("planner", horizon=0, optimizer="adam")
    data["trials"] = "abc"
    err = cli_error(["train", "--config", write(tmp_path, json.dumps(data))], capsys)
    for part in ("trials must be a whole number", "Unknown optimizer 'adam'; known: ",
                 "planner.horizon must be a positive number, got 0"):
        assert part in err


def test_elites_are_never_silently_rewritten(tmp_path, capsys):
    # The preset has elites 20; population 16 from a flag no longer shrinks them to 1.
    err = cli_error(["train", "--population", "16", "--out", str(tmp_path / "r")], capsys)
    assert "planner.elites must be <= planner.population (16), got 20" in err
    # Cross-field rules are checked on the merged config: the flag can fix the file.
    path = write(tmp_path, json.dumps(tiny_with("planner", elites=50, population=16)))
    err = cli_error(["train", "--config", path, "--elites", "0"], capsys)
    assert "--elites: must be positive" in err
    config = RunConfig.from_dict(tiny_with("planner", elites=16, population=16))
    before = config.to_dict()
    assert validate_config(config) is config and config.to_dict() == before
    # Only the optimizers that use elites care.
    validate_config(RunConfig.from_dict(tiny_with("planner", optimizer="mppi", elites=50)))


def test_propagation_needs_enough_function_draws():
    config = RunConfig.from_dict(tiny_with("planner", propagation="optimistic"))
    config.model.name = "p"
    with pytest.raises(ValueError, match="propagation 'optimistic' needs >= 2 function "
                                          "draws, model p gives 1"):
        config.validate()
    config.model.name = "vmlp"  # unlimited draws: one per particle
    assert config.validate() is config


def test_the_schema_documents_every_field():
    def paths(cls, prefix=""):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory):
                yield from paths(f.default_factory, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    assert list(paths(RunConfig)) == list(FIELDS)
    assert all(meaning for meaning, _ in FIELDS.values())


@pytest.mark.parametrize("env", ["pendulum", "halfcheetah", "halfcheetah_cem"])
def test_config_command_prints_a_usable_default(env, tmp_path, capsys):
    assert main(["config", "--env", env]) == 0
    text = capsys.readouterr().out
    path = write(tmp_path, text, "default.json")
    loaded = RunConfig.load(path)
    assert loaded == preset_config(env)
    assert loaded.validate() is loaded
    assert set(json.loads(text)) == {f.name for f in dataclasses.fields(RunConfig)}
    # Usable as --config: a flag that breaks a cross-field rule is reported against it.
    err = cli_error(["train", "--config", path, "--population", "3"], capsys)
    assert f"planner.population (3), got {loaded.planner.elites}" in err


def test_config_command_help_explains_every_field(capsys):
    with pytest.raises(SystemExit) as info:
        main(["config", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for path in FIELDS:
        assert f"  {path} " in out, path
    assert cli_error(["config", "--env", "nope"], capsys).startswith("mbrl-bayes: Unknown task")


def test_unknown_keys_still_refused(tmp_path, capsys):
    path = write(tmp_path, json.dumps(tiny_with("model", hidden_size=[8])))
    err = cli_error(["train", "--config", path], capsys)
    assert "Unknown ModelConfig keys: hidden_size" in err


@pytest.mark.parametrize("old", [False, "", None])
def test_configs_written_before_the_kernels_had_names_still_load(old):
    config = RunConfig.from_dict(tiny_with("model", fused_kernel=old))
    assert config.validate() is config and config.model.fused_kernel == old


def test_numpy_scalars_count_as_numbers():
    import numpy as np

    config = RunConfig.from_dict(tiny_with("planner", horizon=np.int64(5)))
    config.train.learning_rate = np.float32(1e-3)
    assert config.validate() is config and config.planner.horizon == 5
    config.planner.horizon = np.float64(5.0)
    with pytest.raises(ValueError, match="planner.horizon must be a whole number"):
        config.validate()


def test_readme_documents_every_config_field():
    """README's run-config table has a row per field, with the field's meaning from FIELDS."""
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    for path, (meaning, _) in FIELDS.items():
        assert f"| `{path}` |" in readme and meaning in readme, path
