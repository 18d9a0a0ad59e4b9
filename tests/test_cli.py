"""The `mbrl-bayes` CLI and the trial loop: train, resume after a kill, evaluate, plot, errors."""

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import TINY_RUN as TINY

from agents import PlannerConfig, Run, RunConfig, factory
from agents.checkpoint import load_json
from agents.config import AGENT_NAMES, MODEL_NAMES
from experiments.cli import build_parser, main
from mbrl_bayes import planning
from mbrl_bayes.data import ReplayBuffer


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
    import agents.run as run_module

    original = run_module.run_episode

    def interrupted_episode(env, agent, key, env_seed, max_steps, buffer=None, on_step=None):
        if agent.params is not None:
            calls["n"] += 1
        if calls["n"] == 2:  # the episode of trial 2
            def stop(step, ret):
                if step == 5:
                    raise KeyboardInterrupt
            on_step = stop
        return original(env, agent, key, env_seed, max_steps, buffer, on_step)

    monkeypatch.setattr(run_module, "run_episode", interrupted_episode)
    with pytest.raises(KeyboardInterrupt):
        run.run(progress=False, log=lambda s: None)
    monkeypatch.setattr(run_module, "run_episode", original)
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


def test_evaluate_with_another_planner(trained_run, capsys):
    """``evaluate --set planner.FIELD=VALUE`` plans with the run's trained model under another
    planner, on the same episodes (env seeds) as the run's own planner."""
    from agents import evaluate_episodes

    base = evaluate_episodes(trained_run, 2)
    assert [e["steps"] for e in base] == [TINY["episode_length"]] * 2
    assert all(e["seconds_per_action"] > 0 for e in base)
    unchanged = evaluate_episodes(trained_run, 2, planner={"population": 16, "elites": 4})
    assert [e["return"] for e in unchanged] == [e["return"] for e in base]
    other = evaluate_episodes(trained_run, 2, planner={"horizon": 2, "num_particles": 2})
    assert [e["return"] for e in other] != [e["return"] for e in base]

    assert main(["evaluate", trained_run, "--episodes", "1", "--set", "planner.horizon=2",
                 "--set", "planner.num_particles=2"]) == 0
    out = capsys.readouterr().out
    assert f"({other[0]['return']:.1f})" in out and "s per action" in out
    for items, message in ((["planner.nope=1"], "planner has no field 'nope'"),
                           (["model.name=gp"], "expected planner.FIELD=VALUE"),
                           (["planner.elites=999"], "elites")):
        argv = ["evaluate", trained_run, "--episodes", "1"]
        for item in items:
            argv += ["--set", item]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv, message", [
    (["train", "--env", "nope"], "Unknown task 'nope'"),
    (["train", "--agent", "nope"], "argument --agent: invalid choice: 'nope'"),
    (["train", "--model", "nope"], "argument --model: invalid choice: 'nope'"),
    (["train", "--optimizer", "nope"], "argument --optimizer: invalid choice: 'nope'"),
    (["train", "--propagation", "nope"], "argument --propagation: invalid choice: 'nope'"),
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


@pytest.mark.parametrize("changes, message", [
    ({"agent": "nope"}, "Unknown agent 'nope'; known: pets, thompson, random."),
    ({"model": {"name": "nope"}}, "Unknown model 'nope'; known: pe, de, p, d, vmlp, vlstm, "
                                  "dropout, network, gp, dgp."),
    ({"planner": {"optimizer": "nope"}}, "Unknown optimizer 'nope'; known: cem, icem, mppi, "
                                         "random_shooting."),
    ({"planner": {"propagation": "nope"}}, "Unknown propagation 'nope'; known: ts1, ts_inf, "
                                           "mean, thompson, optimistic, hucrl."),
    ({"train": {"early_stopping": "nope"}}, "Unknown early_stopping 'nope'; known: mse, nll."),
    ({"model": {"estimator": "nope"}}, "Unknown estimator 'nope'; known: reparameterization, "
                                       "flipout."),
    ({"model": {"activation": "nope"}}, "Unknown activation 'nope'; known: "),
])
def test_unknown_names_in_a_config_file(changes, message, tmp_path, capsys):
    assert main(["train", "--config", write_config(tmp_path, **changes),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mbrl-bayes: {message}") and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "x")


def _choices(command, dest):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return tuple(next(a for a in sub.choices[command]._actions if a.dest == dest).choices)


def test_cli_choices_are_the_library_lists():
    assert _choices("train", "agent") == AGENT_NAMES == tuple(factory.AGENT_CLASSES)
    assert _choices("train", "model") == MODEL_NAMES == tuple(factory.MODEL_BUILDERS)
    assert _choices("train", "optimizer") == tuple(planning.OPTIMIZERS)
    assert _choices("train", "propagation") == planning.PROPAGATIONS


def test_the_factory_builds_every_optimizer_from_its_planner_fields():
    planner = PlannerConfig(population=12, elites=3, iterations=2, alpha=0.2, noise_beta=1.5,
                            temperature=0.5)
    for name, cls in planning.OPTIMIZERS.items():
        opt = factory.build_optimizer(dataclasses.replace(planner, optimizer=name))
        assert type(opt) is cls and opt.population_size == 12
    cem, icem, mppi = (factory.build_optimizer(dataclasses.replace(planner, optimizer=name))
                       for name in ("cem", "icem", "mppi"))
    assert (cem.num_elites, cem.num_iterations, cem.alpha) == (3, 2, 0.2)
    assert (icem.num_elites, icem.num_iterations, icem.alpha, icem.noise_beta) == (3, 2, 0.2, 1.5)
    assert (mppi.num_iterations, mppi.temperature) == (2, 0.5)


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


def _folder_bytes(run_dir):
    return {name: open(os.path.join(run_dir, name), "rb").read()
            for name in sorted(os.listdir(run_dir))}


class _Payload:
    """Unpickling this writes ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_a_pickle_checkpoint_in_a_run_folder_is_refused_without_running(trained_run, tmp_path,
                                                                       capsys):
    import pickle
    import shutil

    run_dir = str(tmp_path / "shared")
    shutil.copytree(trained_run, run_dir)
    marker = tmp_path / "ran.txt"
    with open(os.path.join(run_dir, "model.ckpt"), "wb") as f:
        pickle.dump({"magic": "mbrl_bayes.checkpoint.v1", "params": _Payload(marker)}, f)
    before = _folder_bytes(run_dir)
    for argv in (["evaluate", run_dir], ["train", "--resume", run_dir, "--trials", "3"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "old pickle-format" in err and "not loaded" in err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert not marker.exists()
    assert _folder_bytes(run_dir) == before


def test_a_bad_config_in_a_run_folder_loses_nothing(trained_run, tmp_path, capsys):
    import shutil

    run_dir = str(tmp_path / "badcfg")
    shutil.copytree(trained_run, run_dir)
    config = load_json(os.path.join(run_dir, "config.json"))
    config["model"]["hidden_sizes"] = 16
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f)
    before = _folder_bytes(run_dir)
    for argv in (["evaluate", run_dir], ["train", "--resume", run_dir]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "model.hidden_sizes must be a list of whole numbers, got 16" in err
        assert len(err.splitlines()) == 1
    assert _folder_bytes(run_dir) == before
