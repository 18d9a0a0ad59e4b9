"""Grids on Ray (``--engine ray``) and ``experiments/tune.py``, on a local Ray with 2 CPUs.

The cheap checks (job failures, thread pinning) run in the default ``pytest``; the ones that
train several runs are marked ``ray`` (``pytest -m ray``; .ci/run runs them).
"""

import csv
import os
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from agents import RunConfig, read_metrics  # noqa: E402
from experiments import cli, common, compare_models, engine, tune  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _returns(run_dir):
    return [(row["trial"], row["return"]) for row in read_metrics(run_dir)]


@pytest.mark.ray
def test_failed_and_killed_jobs_are_reported_by_name_and_the_others_finish(local_ray, tmp_path):
    jobs = [engine.Job("raises", int, ("not a number",)),
            engine.Job("killed", os._exit, (3,)),  # the worker process dies mid-task
            engine.Job("ok", os.makedirs, (str(tmp_path / "made"),))]
    failed = engine.run_jobs(jobs, engine.Engine("ray"), progress=False)
    assert set(failed) == {"raises", "killed"}
    assert failed["raises"].startswith("ValueError: invalid literal for int()")
    assert "WorkerCrashedError" in failed["killed"]
    assert os.path.isdir(tmp_path / "made")
    # The in-process engine reports the same way.
    failed = engine.run_jobs(jobs[:1], engine.Engine("local"))
    assert list(failed) == ["raises"]


def _xla_threads(env):
    @ray.remote(max_calls=1, runtime_env={"env_vars": env})
    def count():
        import jax
        import jax.numpy as jnp

        x = jnp.ones((256, 256))
        jax.jit(lambda a: a @ a)(x).block_until_ready()
        names = [open(f"/proc/self/task/{t}/comm").read().strip()
                 for t in os.listdir("/proc/self/task")]
        return jax.default_backend(), sum(n == "tf_XLAEigen" for n in names)

    return ray.get(count.remote())


@pytest.mark.ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_thread_env_sizes_xla_cpu_thread_pool_to_the_task(local_ray):
    assert _xla_threads(engine.thread_env(1)) == ("cpu", 1)
    assert _xla_threads(engine.thread_env(1.5)) == ("cpu", 2)  # a started CPU counts


TINY = ["--envs", "pendulum", "--seeds", "0", "1", "--trials", "1", "--budget", "tiny",
        "--variants", "D", "DE", "--quiet"]


@pytest.mark.ray
def test_ray_grid_matches_local_and_resumes_one_deleted_run(local_ray, tmp_path):
    local, on_ray = str(tmp_path / "local"), str(tmp_path / "ray")
    compare_models.main(TINY + ["--out", local])
    text = compare_models.main(TINY + ["--out", on_ray, "--engine", "ray"])
    assert "| D | 2 |" in text and "| DE | 2 |" in text
    runs = [os.path.join("runs", "pendulum", v, f"s{s}") for v in ("D", "DE") for s in (0, 1)]
    for run in runs:
        assert len(_returns(os.path.join(local, run))) == 2  # random seed data + 1 trial
        assert _returns(os.path.join(on_ray, run)) == _returns(os.path.join(local, run))

    # Delete one run: only it reruns (the others' files are untouched), to the same returns;
    # a run that raises (an unknown model) is reported by name and does not stop the grid.
    state = {run: os.stat(os.path.join(on_ray, run, "state.json")).st_mtime_ns for run in runs}
    deleted = runs[1]
    for name in os.listdir(os.path.join(on_ray, deleted)):
        os.remove(os.path.join(on_ray, deleted, name))
    os.rmdir(os.path.join(on_ray, deleted))

    def broken(config):
        config.model.name = "no_such_model"
        return config

    variants = {"D": compare_models.VARIANTS["D"], "DE": compare_models.VARIANTS["DE"],
                "broken": broken}
    grid = common.run_grid(on_ray, variants, ["pendulum"], [0, 1], {"pendulum": 1}, "tiny",
                           engine=engine.Engine("ray"))
    assert set(grid.failed) == {"pendulum broken seed 0", "pendulum broken seed 1"}
    assert grid.failed["pendulum broken seed 0"].startswith("ValueError: Unknown model")
    assert grid["pendulum"] == {v: [os.path.join(on_ray, "runs", "pendulum", v, f"s{s}")
                                    for s in (0, 1)] for v in ("D", "DE")}
    assert _returns(os.path.join(on_ray, deleted)) == _returns(os.path.join(local, deleted))
    for run in runs:
        mtime = os.stat(os.path.join(on_ray, run, "state.json")).st_mtime_ns
        assert (mtime != state[run]) == (run == deleted)


@pytest.mark.ray
def test_tune_writes_a_best_config_that_mbrl_bayes_trains(local_ray, tmp_path):
    out = str(tmp_path / "tune")
    tune.main(["--env", "pendulum", "--budget", "tiny", "--trials", "3", "--samples", "3",
               "--window", "2", "--param", "train.learning_rate=loguniform:1e-4,1e-2",
               "--param", "planner.population=choice:8,16", "--out", out, "--quiet"])
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row in rows:
        # ASHA (grace: the window, 2 MPC trials) may stop a sample at its one rung.
        assert (row["status"], row["mpc_trials"]) in (("finished", "3"), ("stopped early", "2"))
        returns = [r["return"] for r in read_metrics(
            os.path.join(out, "ray_results", "tune", row["sample"], "run")) if r["trial"] > 0]
        assert len(returns) == int(row["mpc_trials"])
        assert float(row["mean_return"]) == pytest.approx(np.mean(returns[-2:]), rel=1e-9)
        assert float(row["last_return"]) == pytest.approx(returns[-1], rel=1e-9)
    finished = [r for r in rows if r["status"] == "finished"]
    assert rows[:len(finished)] == finished  # finished first, best score first
    scores = [float(r["mean_return"]) for r in finished]
    assert scores == sorted(scores, reverse=True)
    best = RunConfig.load(os.path.join(out, "best_config.json"))
    assert best.planner.population == int(rows[0]["planner.population"])
    assert best.train.learning_rate == float(rows[0]["train.learning_rate"])
    assert best.trials == 3 and best.model.hidden_sizes == (16,)  # the rest: the tiny budget
    assert cli.main(["train", "--config", os.path.join(out, "best_config.json"), "--trials",
                     "1", "--out", str(tmp_path / "best"), "--quiet"]) == 0
    assert len(read_metrics(str(tmp_path / "best"))) == 2
