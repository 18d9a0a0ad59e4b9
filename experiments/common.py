"""Shared machinery of the comparison scripts: a resumable grid of runs, tables and plots.

A comparison is a set of *variants* (label -> a change to the task's preset ``RunConfig``), run on
some envs for some seeds. Each run is an ordinary run folder under
``OUT/runs/<env>/<variant>/s<seed>``, so an interrupted comparison resumes where it stopped
(finished runs are skipped, unfinished ones continue from their last trial), and each run can be
inspected or extended with ``mbrl-bayes``. Results go to ``OUT/results.md`` (tables: mean +- std
over seeds) and ``OUT/curves_<env>.png``.

``--engine ray`` runs each run as a Ray task (see ``experiments.engine``), on a local Ray or the
cluster at ``--address``; the run folders are the same, so a grid can switch engines mid-way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from agents import Run, RunConfig, plot_returns, read_metrics
from agents.checkpoint import load_json
from experiments.engine import Engine, Job, add_engine_args, run_jobs
from experiments.presets import preset_config

Variant = Callable[[RunConfig], RunConfig]


def tiny(config: RunConfig) -> RunConfig:
    """A seconds-long version of ``config`` (for tests and smoke runs)."""
    config.seed_steps = 20
    config.episode_length = 10
    config.model.hidden_sizes = (16,)
    config.model.ensemble_size = min(config.model.ensemble_size, 2)
    config.train = dataclasses.replace(config.train, batch_size=16, max_epochs=2, patience=2)
    config.planner = dataclasses.replace(config.planner, horizon=3, population=8, elites=2,
                                         iterations=1, num_particles=4)
    return config


def fast(config: RunConfig) -> RunConfig:
    """The comparison budget: a lighter planner and model than the presets, so that a grid of
    (variants x seeds) fits in hours on a 2-core CPU. Same for every variant."""
    config.model.hidden_sizes = (200, 200, 200)
    config.planner = dataclasses.replace(config.planner, population=200, elites=20,
                                         iterations=4, num_particles=20)
    return config


# --budget: the run configs a comparison can use.
BUDGETS: Dict[str, Variant] = {"fast": fast, "preset": lambda config: config, "tiny": tiny}


def base_parser(description: str, default_envs: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--envs", nargs="+", default=list(default_envs))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per run (default: the script's per-env budget)")
    parser.add_argument("--variants", nargs="+", default=None, help="subset of variants to run")
    parser.add_argument("--out", required=True, help="results folder (resumable)")
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="fast",
                        help="fast: the comparison budget; preset: the task presets; tiny: a "
                             "seconds-long smoke run")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="tabulate the finished runs only; run nothing")
    add_engine_args(parser)
    return parser


class Grid(dict):
    """``{env: {variant: [run dirs]}}`` of a grid's finished runs; ``failed`` maps the name of
    each run that did not finish to its one-line error."""

    def __init__(self, failed: Optional[Dict[str, str]] = None):
        super().__init__()
        self.failed: Dict[str, str] = dict(failed or {})


def run_grid(
    out: str,
    variants: Dict[str, Variant],
    envs: Sequence[str],
    seeds: Sequence[int],
    trials: Dict[str, int],
    budget: str = "fast",
    progress: bool = False,
    engine: Optional[Engine] = None,
    report_only: bool = False,
) -> Grid:
    """Runs (or resumes) every (env, variant, seed) on ``engine`` (default: one after another
    in this process); returns the finished runs (see ``Grid``). With ``report_only`` nothing
    runs: the unfinished runs are listed in ``failed`` as not run.

    Finished runs are skipped. A run that raises, or whose Ray task is killed, is reported by
    name (``"<env> <variant> seed <seed>"``) and left out of the result; the others go on.
    """
    if not seeds:
        raise ValueError("Give at least one seed.")
    engine = engine or Engine()
    local = engine.kind == "local"
    cells, jobs, skipped = [], [], 0
    for env in envs:
        for label, variant in variants.items():
            for seed in seeds:
                run_dir = os.path.join(out, "runs", env, label, f"s{seed}")
                config = BUDGETS[budget](preset_config(env))
                config.seed = seed
                config.trials = trials[env]
                config = variant(config)
                name = f"{env} {label} seed {seed}"
                cells.append((env, label, run_dir, name, config.trials))
                if _finished(run_dir, config.trials):
                    skipped += 1
                else:
                    # On Ray the runs are silent: the grid has one progress bar.
                    jobs.append(Job(name, _run_one, (run_dir, config, progress and local, name,
                                                     local)))
    os.makedirs(out, exist_ok=True)
    if report_only:
        grid = Grid({job.name: "not run (--report-only)" for job in jobs})
    else:
        grid = Grid(run_jobs(jobs, engine, progress, done=skipped))
    for env, label, run_dir, name, n_trials in cells:
        if name not in grid.failed and not _finished(run_dir, n_trials):
            grid.failed[name] = (f"finished, but {run_dir} is not visible here: on a "
                                 "multi-machine cluster --out must be on a shared filesystem.")
        if name not in grid.failed:
            grid.setdefault(env, {}).setdefault(label, []).append(run_dir)
    if grid.failed and report_only:
        print(f"{len(grid.failed)} of {len(cells)} runs are not finished (left out):",
              file=sys.stderr)
    elif grid.failed:
        print(f"{len(grid.failed)} of {len(cells)} runs failed (rerun the command to retry "
              "them; finished runs are kept):", file=sys.stderr)
        for name, error in grid.failed.items():
            print(f"  {name}: {error}", file=sys.stderr)
    return grid


def _finished(run_dir: str, trials: int) -> bool:
    path = os.path.join(run_dir, "state.json")
    return os.path.exists(path) and load_json(path)["trials_done"] >= trials


def _run_one(run_dir: str, config: RunConfig, progress: bool, name: str,
             verbose: bool = True) -> None:
    start = time.perf_counter()
    say = (lambda s: print(s, flush=True)) if verbose else (lambda s: None)
    if os.path.exists(os.path.join(run_dir, "state.json")):
        if _finished(run_dir, config.trials):
            return
        run = Run.resume(run_dir, trials=config.trials)
    else:
        run = Run.create(run_dir, config)
    say(f"== {name}: {run_dir}")
    run.run(progress=progress, log=lambda s: say(f"   {s}"))
    say(f"   ({time.perf_counter() - start:.0f} s wall-clock)")


def _compute_seconds(rows: List[Dict]) -> float:
    """Seconds a run spent training models and planning (from metrics.csv, so a resumed run
    counts every trial once; env stepping and start-up are not included)."""
    return float(sum((r.get("seconds_train") or 0.0) + (r.get("seconds_plan") or 0.0)
                     for r in rows))


def _mean_std(values: Sequence[float], fmt: str = ".1f") -> str:
    values = np.asarray([v for v in values if v is not None], float)
    if values.size == 0:
        return "-"
    if values.size == 1:
        return format(values[0], fmt)
    return f"{values.mean():{fmt}} ± {values.std():{fmt}}"


def summarize(
    out: str, title: str, command: str, grid: Dict[str, Dict[str, List[str]]],
    extra_columns: Optional[Dict[str, Callable[[List[Dict]], Optional[float]]]] = None,
) -> str:
    """Writes ``OUT/results.md`` and ``OUT/curves_<env>.png``; returns the markdown."""
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    extra_columns = extra_columns or {}
    for env, variants in grid.items():
        runs, labels, groups = [], [], []
        header = ["variant", "seeds", "return, first trial", "final return", "best return",
                  *extra_columns, "train + plan time per run (s)"]
        lines += [f"## {env}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for gid, (label, run_dirs) in enumerate(variants.items()):
            rows_per_run = [read_metrics(d) for d in run_dirs]
            trials = [[r for r in rows if r["trial"] > 0] for rows in rows_per_run]
            cells = [
                label, str(len(run_dirs)),
                _mean_std([t[0]["return"] for t in trials if t]),
                _mean_std([t[-1]["return"] for t in trials if t]),
                _mean_std([max(r["return"] for r in t) for t in trials if t]),
            ]
            for fn in extra_columns.values():
                cells.append(_mean_std([fn(t) for t in trials if t], ".3g"))
            cells.append(_mean_std([_compute_seconds(rows) for rows in rows_per_run], ".0f"))
            lines.append("| " + " | ".join(cells) + " |")
            runs += rows_per_run
            labels += [label] * len(run_dirs)
            groups += [gid] * len(run_dirs)
        png = f"curves_{env}.png"
        plot_returns(runs, labels, os.path.join(out, png), groups)
        lines += ["", f"![{env} learning curves]({png})", ""]
        per_trial = _per_trial_table(variants)
        lines += per_trial + [""]
    failed = getattr(grid, "failed", {})
    if failed:
        lines += ["## Runs that did not finish", "",
                  *(f"- {name}: {error}" for name, error in failed.items()), ""]
    text = "\n".join(lines)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    return text


def _per_trial_table(variants: Dict[str, List[str]]) -> List[str]:
    """Return at every trial (mean ± std over seeds), one row per variant."""
    table = {}
    max_trial = 0
    for label, run_dirs in variants.items():
        by_trial: Dict[int, List[float]] = {}
        for d in run_dirs:
            for row in read_metrics(d):
                by_trial.setdefault(row["trial"], []).append(row["return"])
        table[label] = by_trial
        max_trial = max([max_trial, *by_trial])
    header = ["variant"] + [f"trial {t}" if t else "random" for t in range(max_trial + 1)]
    lines = ["Return per trial (trial 0: the random seed data):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, by_trial in table.items():
        cells = [label] + [_mean_std(by_trial.get(t, []), ".0f") for t in range(max_trial + 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def command_line() -> str:
    """The command that is running, quoted to be pasted back into a shell; without
    ``--report-only``, so a report rewritten from finished runs names the command that made
    them."""
    args = [a for a in sys.argv[1:] if a != "--report-only"]
    return "python " + shlex.join([os.path.relpath(sys.argv[0])] + args)


def select(variants: Dict[str, Variant], names: Optional[Sequence[str]]) -> Dict[str, Variant]:
    if names is None:
        return variants
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"Unknown variants {unknown}; known: {list(variants)}.")
    return {n: variants[n] for n in names}
