"""The comparison scripts run end to end in a tiny configuration and write tables and plots."""

import json
import os
import sys

import numpy as np
import pytest

from experiments import (
    calibration,
    common,
    compare_models,
    compare_planners,
    compare_propagation,
    tune,
)


@pytest.mark.e2e
def test_compare_models_tiny(tmp_path):
    out = str(tmp_path / "models")
    text = compare_models.main(["--envs", "pendulum", "--seeds", "0", "--trials", "1",
                                "--budget", "tiny", "--variants", "DE", "variational MLP",
                                "--out", out, "--quiet"])
    assert "| DE | 1 |" in text and "| variational MLP | 1 |" in text
    assert os.path.getsize(os.path.join(out, "curves_pendulum.png")) > 1000
    assert os.path.exists(os.path.join(out, "runs", "pendulum", "DE", "s0", "metrics.csv"))
    # Rerunning resumes: finished runs are skipped, the table is rewritten identically.
    again = compare_models.main(["--envs", "pendulum", "--seeds", "0", "--trials", "1",
                                 "--budget", "tiny", "--variants", "DE", "variational MLP",
                                 "--out", out, "--quiet"])
    assert again.split("Command:")[1].split("\n", 1)[1] == text.split("Command:")[1].split(
        "\n", 1)[1]


@pytest.mark.e2e
def test_compare_propagation_tiny(tmp_path):
    out = str(tmp_path / "prop")
    text = compare_propagation.main(["--envs", "pendulum", "--seeds", "0", "--trials", "1",
                                     "--budget", "tiny", "--variants", "thompson", "optimistic",
                                     "--out", out, "--quiet"])
    assert "| thompson | 1 |" in text and "| optimistic | 1 |" in text
    assert os.path.exists(os.path.join(out, "results.md"))


@pytest.mark.e2e
def test_compare_planners_tiny_on_reacher(tmp_path):
    out = str(tmp_path / "planners")
    text = compare_planners.main(["--envs", "reacher", "--seeds", "0", "--trials", "1",
                                  "--budget", "tiny", "--variants", "iCEM 200x3, 10 particles",
                                  "CEM 500x5, 20 particles", "--out", out, "--quiet"])
    rows = {}  # the summary table's row of each variant (the first row with its label)
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0], line)
    for label in ("iCEM 200x3, 10 particles", "CEM 500x5, 20 particles"):
        row = rows["| " + label]
        assert row.startswith(f"| {label} | 1 |")
        seconds = float(row.split(" | ")[-2])  # the median seconds per action
        assert 0 < seconds < 60
    with open(os.path.join(out, "runs", "reacher", "CEM 500x5, 20 particles", "s0",
                           "config.json")) as f:
        planner = json.load(f)["planner"]
    assert (planner["optimizer"], planner["population"], planner["iterations"],
            planner["num_particles"]) == ("cem", 500, 5, 20)


@pytest.mark.e2e
def test_calibration_tiny(tmp_path):
    out = str(tmp_path / "calib")
    text = calibration.main(["--envs", "pendulum", "--seeds", "0", "--models", "PE", "D",
                             "--train-episodes", "2", "--test-episodes", "1",
                             "--episode-length", "20", "--hidden-sizes", "16",
                             "--max-epochs", "2", "--horizon", "4", "--out", out])
    assert "| PE |" in text and "| D |" in text and "k=4" in text
    for png in ("reliability_pendulum.png", "kstep_pendulum.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000


def test_engine_ray_without_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for main, argv in (
        (compare_models.main, ["--envs", "pendulum", "--budget", "tiny", "--engine", "ray"]),
        (calibration.main, ["--envs", "pendulum", "--engine", "ray"]),
        (tune.main, ["--env", "pendulum", "--param", "train.learning_rate=uniform:1e-4,1e-3"]),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv + ["--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert "pip install 'mbrl-bayes[ray]'" in err
    assert not os.path.exists(tmp_path / "out")


def test_bad_engine_flags_and_tune_params_are_one_line_errors(tmp_path, capsys):
    for main, argv, message in (
        (compare_models.main, ["--address", "auto"], "--address is for --engine ray"),
        (tune.main, ["--env", "pendulum", "--param", "model.prior=uniform:0.1,1"],
         "model has no field 'prior'; known: name, hidden_sizes"),
        (tune.main, ["--env", "pendulum", "--param", "train.learning_rate=loguniform:0,1"],
         "need 0 < LOW < HIGH"),
        (tune.main, ["--env", "pendulum", "--param", "planner.optimizer=choice:cem,sgd"],
         "Unknown optimizer 'sgd'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv + ["--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err


def test_run_grid_reports_a_failing_run_by_name_and_finishes_the_others(tmp_path):
    def broken(config):
        config.planner.optimizer = "no_such_optimizer"
        return config

    out = str(tmp_path / "grid")
    grid = common.run_grid(out, {"broken": broken, "random": _random_agent}, ["pendulum"], [0],
                           {"pendulum": 1}, "tiny")
    assert grid.failed == {"pendulum broken seed 0":
                           "ValueError: Unknown optimizer 'no_such_optimizer'; known: cem, icem, "
                           "mppi, random_shooting."}
    assert grid == {"pendulum": {"random": [os.path.join(out, "runs", "pendulum", "random",
                                                         "s0")]}}
    text = common.summarize(out, "t", "cmd", grid)
    assert "| random | 1 |" in text and "- pendulum broken seed 0: ValueError" in text


def _random_agent(config):
    config.agent = "random"
    return config


def test_command_line_is_quoted_and_names_the_command_that_made_the_runs(monkeypatch):
    from experiments.common import command_line

    monkeypatch.setattr(sys, "argv", [os.path.join(os.getcwd(), "experiments", "x.py"),
                                      "--variants", "variational MLP", "--report-only",
                                      "--out", "o"])
    assert command_line() == "python experiments/x.py --variants 'variational MLP' --out o"


def test_pusher_contact_stats_on_known_transitions():
    """A fingertip that descends onto the object and pushes it 1 cm per step for 2 steps: the
    closest approach, the height above the object, the path length and the pushes are exact."""
    from experiments.pusher_contact import contact_stats

    T = 5
    obs = np.zeros((T, 23))
    obs[:, 17:20] = [0.5, 0.0, -0.275]                      # object
    tip_z = np.array([0.3, 0.2, 0.1, 0.0, 0.0])            # above the object, then level
    obs[:, 14:17] = np.stack([np.full(T, 0.45), np.zeros(T), -0.275 + tip_z], -1)  # 5 cm beside
    next_obs = obs.copy()
    next_obs[:-1, 14:17] = obs[1:, 14:17]
    next_obs[-1, 14:17] = obs[-1, 14:17]
    next_obs[3:, 17] += 0.01                                # two steps push it 1 cm each
    stats = contact_stats(obs, next_obs)
    assert stats["pushes"] == 2
    np.testing.assert_allclose(stats["object_moved"], 0.02, atol=1e-12)
    np.testing.assert_allclose(stats["min_tip_height"], 0.0, atol=1e-12)
    np.testing.assert_allclose(stats["min_tip_distance"], 0.05, atol=1e-12)
    with pytest.raises(ValueError, match=r"Pusher-v5 transitions \[T, 23\]"):
        contact_stats(obs[:, :10], next_obs[:, :10])


def test_pusher_contact_refuses_a_folder_without_a_run(tmp_path, capsys):
    from experiments import pusher_contact

    assert pusher_contact.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pusher_contact: ") and len(err.strip().splitlines()) == 1
