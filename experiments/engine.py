"""Where a grid's independent jobs run: one after another in this process, or as Ray tasks.

``Engine("local")`` runs the jobs in order in this process. ``Engine("ray")`` submits each job as
one Ray task (``cpus_per_run`` CPUs, ``gpus_per_run`` GPUs) to the cluster at ``address``, or to
a local Ray started for the call (or the one already initialized in this process), and shows one
progress bar for the whole grid. XLA's own CPU thread pool is sized to the task's CPUs (see
``thread_env``) so that concurrent runs do not oversubscribe the cores. Either way a job that
raises (or whose worker is killed) is reported by name and the other jobs go on.

Jobs write their results to files (run folders); on a multi-machine cluster those must be on a
filesystem that every node and the driver share. Ray is an optional extra (``pip install
'mbrl-bayes[ray]'``); nothing here imports it unless ``Engine("ray")`` is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import traceback
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

ENGINES = ("local", "ray")
RAY_MISSING = ("--engine ray needs Ray, an optional extra: pip install 'mbrl-bayes[ray]' "
               "(from a checkout: pip install -e '.[ray]').")


class EngineError(ValueError):
    """An engine that cannot be used (e.g. Ray asked for but not installed)."""


@dataclasses.dataclass(frozen=True)
class Engine:
    """How to run a grid's jobs.

    ``kind``: ``"local"`` (in this process, in order) or ``"ray"`` (one Ray task per job);
    ``address``: a Ray cluster to join (``None``: the Ray already initialized in this process,
    else a local one started for the call); ``cpus_per_run`` / ``gpus_per_run``: resources of
    each task (fractions allowed; a fraction of a GPU lets runs share it).
    """

    kind: str = "local"
    address: Optional[str] = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise EngineError(f"Unknown engine {self.kind!r}; known: {', '.join(ENGINES)}.")
        if self.address is not None and self.kind != "ray":
            raise EngineError("--address is for --engine ray.")
        if not self.cpus_per_run > 0:
            raise EngineError(f"cpus_per_run must be positive, got {self.cpus_per_run}.")
        if not self.gpus_per_run >= 0:
            raise EngineError(f"gpus_per_run must be >= 0, got {self.gpus_per_run}.")


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of a grid: ``fn(*args)`` under the name ``name`` (unique in its grid).

    ``fn`` must be a module-level function (Ray pickles it by reference), and must leave its
    result in files: its return value is not kept.
    """

    name: str
    fn: Callable[..., Any]
    args: Tuple[Any, ...] = ()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    """``--address``, ``--cpus-per-run`` and ``--gpus-per-run``."""
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (e.g. auto, or ray://HOST:10001); default: a "
                             "local Ray started for this command")
    parser.add_argument("--cpus-per-run", type=_positive_float, default=1.0,
                        help="CPUs of each Ray task (XLA's thread pool is sized to it); default 1")
    parser.add_argument("--gpus-per-run", type=_non_negative_float, default=0.0,
                        help="GPUs of each Ray task (0.5: two runs share a GPU); default 0")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """``--engine {local,ray}`` and the Ray options (see ``add_ray_args``)."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: runs one after another in this process; ray: each run a "
                             "Ray task (needs the ray extra)")
    add_ray_args(parser)


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The ``Engine`` of parsed ``add_engine_args`` flags. Bad flags, or ``--engine ray``
    without Ray installed, end the program with one line on stderr and exit status 2."""
    try:
        engine = Engine(args.engine, args.address, args.cpus_per_run, args.gpus_per_run)
        if engine.kind == "ray":
            import_ray()
    except EngineError as e:
        print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return engine


def import_ray():
    """The ``ray`` module, or an ``EngineError`` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise EngineError(RAY_MISSING) from None
    return ray


def thread_env(cpus: float, gpus: float = 0.0) -> Dict[str, str]:
    """Environment variables that fit a JAX process to ``cpus`` CPUs and ``gpus`` GPUs.

    XLA's CPU client sizes its intra-op thread pool from ``PJRT_NPROC`` (else the machine's core
    count); with one CPU, Eigen's matrix products also stay on the calling thread. Without a GPU
    the process does not touch the GPUs (JAX would otherwise grab 75% of each one's memory);
    with a fraction of a GPU it preallocates only that fraction of JAX's default 75%. These
    must be set before JAX initializes its backends, i.e. in the worker's environment.
    """
    threads = max(1, math.ceil(cpus))
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_cpu_multi_thread_eigen")]
    if threads == 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    env = {"XLA_FLAGS": " ".join(flags), "PJRT_NPROC": str(threads), "NPROC": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    if gpus == 0:
        env["JAX_PLATFORMS"] = "cpu"
    elif gpus < 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.75 * gpus:.3f}"
    return env


class _RaySession:
    """Joins the Ray of ``engine``; shuts it down on exit only if it was started here."""

    def __init__(self, engine: Engine, runtime_env: Optional[Dict[str, Any]] = None):
        self.ray = import_ray()
        self.engine = engine
        self.runtime_env = runtime_env
        self.started = False

    def __enter__(self):
        if not self.ray.is_initialized():
            self.ray.init(address=self.engine.address, log_to_driver=False,
                          logging_level=logging.WARNING, runtime_env=self.runtime_env)
            self.started = True
        return self.ray

    def __exit__(self, *exc) -> None:
        if self.started:
            self.ray.shutdown()


def ray_session(engine: Engine, runtime_env: Optional[Dict[str, Any]] = None) -> _RaySession:
    """Context manager: the ``ray`` module, initialized for ``engine`` (see ``Engine``)."""
    return _RaySession(engine, runtime_env)


def run_jobs(jobs: Sequence[Job], engine: Engine = Engine(), progress: bool = True,
             done: int = 0) -> Dict[str, str]:
    """Runs ``jobs`` on ``engine``; returns ``{name: one-line error}`` of the jobs that failed.

    ``done``: jobs of the grid already finished before this call (they count in the progress
    bar's total). A KeyboardInterrupt stops the grid (Ray tasks are cancelled).
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError("Job names must be unique.")
    if engine.kind == "local":
        failed = {}
        for job in jobs:
            try:
                job.fn(*job.args)
            except Exception as e:
                traceback.print_exc()
                failed[job.name] = _one_line(e)
                print(f"FAILED {job.name}: {failed[job.name]}", file=sys.stderr, flush=True)
        return failed
    return _run_on_ray(jobs, engine, progress, done)


def _run_on_ray(jobs: Sequence[Job], engine: Engine, progress: bool,
                done: int) -> Dict[str, str]:
    from tqdm.auto import tqdm

    failed: Dict[str, str] = {}
    with ray_session(engine) as ray:
        # max_calls=1: a fresh worker per run, so the thread environment applies and no JAX
        # state or memory carries over; no retries: a rerun of the grid resumes instead.
        task = ray.remote(max_calls=1)(_call).options(
            num_cpus=engine.cpus_per_run, num_gpus=engine.gpus_per_run, max_retries=0,
            runtime_env={"env_vars": thread_env(engine.cpus_per_run, engine.gpus_per_run)})
        pending = {task.remote(job.fn, job.args): job.name for job in jobs}
        bar = tqdm(total=done + len(jobs), initial=done, desc="grid", unit="run",
                   disable=not progress, dynamic_ncols=True)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    name = pending.pop(ref)
                    try:
                        ray.get(ref)
                    except Exception as e:  # the job raised, or its worker or node died
                        failed[name] = _one_line(getattr(e, "cause", None) or e)
                        (bar.write if progress else print)(f"FAILED {name}: {failed[name]}")
                    bar.update(1)
                    bar.set_postfix(failed=len(failed), refresh=False)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
    return failed


def _call(fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    fn(*args)


def _one_line(error: BaseException) -> str:
    lines = [s for s in str(error).strip().splitlines() if s.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
