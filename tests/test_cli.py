"""The `mbrl-bayes` CLI and the trial loop: train, resume after a kill, evaluate, plot, errors."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from agents import Run, RunConfig
from agents.checkpoint import load_json
from experiments.cli import main
from mbrl_bayes.data import ReplayBuffer

TINY = {
    "env": "pendulum", "agent": "pets", "seed": 0, "trials": 1, "seed_steps": 20,
    "episode_length": 12,
    "model": {"name": "pe", "hidden_sizes": [16], "ensemble_size": 2},
    "train": {"batch_size": 16, "max_epochs": 2, "patience": 2},
    "planner": {"optimizer": "cem", "horizon": 4, "population": 16, "elites": 4,
                "iterations": 2, "num_particles": 4},
}


def write_config(tmp_path, **changes):
    cfg = json.loads(json.dumps(TINY))
    cfg.update(changes)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def read_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    out = str(tmp / "run")
    assert main(["train", "--config", write_config(tmp), "--out", out, "--quiet"]) == 0
    return out


def test_train_writes_a_run_folder(trained_run):
    for name in ("config.json", "metrics.csv", "state.json", "buffer.npz", "model.ckpt",
                 "returns.png"):
        assert os.path.exists(os.path.join(trained_run, name)), name
    rows = read_rows(trained_run)
    assert [int(r["trial"]) for r in rows] == [0, 1]
    assert int(rows[1]["env_steps"]) == 20 + 12
    for column in ("return", "train_loss", "holdout_mse", "calib_coverage90", "seconds_train",
                   "seconds_plan"):
        assert np.isfinite(float(rows[1][column])), column
    assert len(ReplayBuffer.load(os.path.join(trained_run, "buffer.npz"))) == 32
    # Pendulum rewards are in [-16.3, 0] per step.
    assert -16.3 * 12 <= float(rows[1]["return"]) <= 0


def test_resume_continues_to_more_trials(trained_run, tmp_path, capsys):
    import shutil

    run_dir = str(tmp_path / "copy")
    shutil.copytree(trained_run, run_dir)
    assert main(["train", "--resume", run_dir, "--trials", "2", "--quiet"]) == 0
    rows = read_rows(run_dir)
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert rows[:2] == read_rows(trained_run)  # the first trial is kept as it was
    assert load_json(os.path.join(run_dir, "state.json")) == {"trials_done": 2, "env_steps": 44}
    assert RunConfig.load(os.path.join(run_dir, "config.json")).trials == 2


def test_killed_run_loses_nothing_before_the_last_trial(tmp_path, monkeypatch):
    """Ctrl-C in the middle of trial 2: trial 1 and its data survive; resume finishes."""
    run_dir = str(tmp_path / "killed")
    config = RunConfig.from_dict({**TINY, "trials": 2})
    run = Run.create(run_dir, config)
    calls = {"n": 0}
    import agents.loop as loop

    original = loop.run_episode

    def interrupted_episode(env, agent, key, env_seed, max_steps, buffer=None, on_step=None):
        if agent.params is not None:
            calls["n"] += 1
        if calls["n"] == 2:  # the episode of trial 2
            def stop(step, ret):
                if step == 5:
                    raise KeyboardInterrupt
            on_step = stop
        return original(env, agent, key, env_seed, max_steps, buffer, on_step)

    monkeypatch.setattr(loop, "run_episode", interrupted_episode)
    with pytest.raises(KeyboardInterrupt):
        run.run(progress=False, log=lambda s: None)
    monkeypatch.setattr(loop, "run_episode", original)
    assert [int(r["trial"]) for r in read_rows(run_dir)] == [0, 1]
    saved = ReplayBuffer.load(os.path.join(run_dir, "buffer.npz"))
    assert len(saved) == 32
    resumed = Run.resume(run_dir)
    np.testing.assert_array_equal(resumed.buffer.as_dict()["obs"], saved.as_dict()["obs"])
    rows = resumed.run(progress=False, log=lambda s: None)
    assert [r["trial"] for r in rows] == [0, 1, 2]
    assert len(resumed.buffer) == 44


def test_evaluate_and_plot(trained_run, tmp_path, capsys):
    assert main(["evaluate", trained_run, "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "return over 2 episodes:" in out and "+-" in out
    png = str(tmp_path / "curves.png")
    assert main(["plot", trained_run, trained_run, "-o", png]) == 0
    assert os.path.getsize(png) > 1000


@pytest.mark.parametrize("argv, message", [
    (["train", "--env", "nope"], "Unknown task 'nope'"),
    (["train", "--agent", "nope"], "Unknown agent 'nope'"),
    (["train", "--model", "nope"], "Unknown model 'nope'"),
    (["train", "--trials", "0"], "must be positive"),
    (["train", "--trials", "-3"], "must be positive"),
    (["evaluate", "."], "is not a run folder"),
    (["train", "--resume", "/nonexistent/run"], "is not a directory"),
    (["plot", "/nonexistent/run"], "is not a run folder"),
    (["frobnicate"], "invalid choice"),
    (["train", "--model", "vlstm", "--fused-kernel", "triton"],
     "fused_kernel applies to the ensemble"),
    (["train", "--model", "vlstm", "--fused-kernel", "mosaic"],
     "fused_kernel applies to the ensemble"),
    (["train", "--fused-kernel", "sideways"], "invalid choice: 'sideways'"),
    (["train", "--fused-kernel"], "expected one argument"),
    pytest.param(["train", "--fused-kernel", "triton"], "fused_kernel needs a GPU",
                 marks=pytest.mark.skipif(jax.default_backend() == "gpu", reason="has a GPU")),
    pytest.param(["train", "--fused-kernel", "mosaic"], "fused_kernel needs a GPU",
                 marks=pytest.mark.skipif(jax.default_backend() == "gpu", reason="has a GPU")),
])
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_corrupted_checkpoint_and_config(trained_run, tmp_path, capsys):
    import shutil

    run_dir = str(tmp_path / "corrupt")
    shutil.copytree(trained_run, run_dir)
    with open(os.path.join(run_dir, "model.ckpt"), "wb") as f:
        f.write(b"\x00garbage")
    assert main(["evaluate", run_dir]) == 2
    assert "corrupted" in capsys.readouterr().err
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write("{not json")
    assert main(["train", "--resume", run_dir]) == 2
    assert "not a valid run config" in capsys.readouterr().err
    bad = write_config(tmp_path, trials=0)
    assert main(["train", "--config", bad, "--out", str(tmp_path / "x")]) == 2
    assert "trials must be a positive number" in capsys.readouterr().err
    bad = write_config(tmp_path, planner={"horizon": 4, "typo": 1})
    assert main(["train", "--config", bad, "--out", str(tmp_path / "y")]) == 2
    assert "Unknown PlannerConfig keys: typo" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(trained_run, tmp_path, capsys):
    assert main(["train", "--config", write_config(tmp_path), "--out", trained_run]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_console_script_exits_non_zero_on_bad_input():
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", "train", "--env", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("mbrl-bayes: Unknown task")
