"""Hyperparameter search over any ``RunConfig`` field with Ray Tune.

    python experiments/tune.py --env pendulum --trials 5 --samples 16 --out results/tune \\
        --param model.name=choice:vmlp --param model.prior_stddev=loguniform:0.1,3 \\
        --param train.learning_rate=loguniform:1e-4,1e-2 --param planner.population=choice:200,400

Each sample is one training run (one seed) of the base config (``--config FILE``, else the preset
of ``--env`` at ``--budget``) with the sampled fields set, run as a Tune trial that reports after
every MPC trial. Parameters are ``PATH=KIND:ARGS``, PATH a dotted ``RunConfig`` field
(``train.learning_rate``, ``planner.horizon``, ``seed_steps``, ...) and KIND one of
``uniform:LOW,HIGH``, ``loguniform:LOW,HIGH``, ``randint:LOW,HIGH`` (HIGH excluded),
``lograndint:LOW,HIGH``, ``choice:V1,V2,...`` (random pick) or ``grid:V1,V2,...`` (every value,
``--samples`` times); values are JSON (``choice:[200,200],[100,100]`` for tuples), else strings.
Samples are drawn by Tune's random/grid search (``BasicVariantGenerator``).

The score (``--metric``) is steadier than one episode's return: ``mean_return``, the mean return
of the last ``--window`` MPC trials, or ``holdout_nll``, the model's held-out NLL after the last
training (for model hyperparameters). ASHA stops the worst runs early on that score, after
``--grace`` MPC trials (``--no-early-stopping`` runs every sample to the end). The best of the
runs that reached the last MPC trial is written as ``OUT/best_config.json`` (a ``RunConfig``:
``mbrl-bayes train --config OUT/best_config.json`` runs it) with every sample in
``OUT/results.md`` and ``OUT/results.csv``; Tune's own records and each sample's run folder are
under ``OUT/ray_results``. Needs the ray extra: ``pip install 'mbrl-bayes[ray]'``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agents import Run, RunConfig
from experiments.common import BUDGETS, command_line
from experiments.engine import (
    Engine,
    EngineError,
    add_ray_args,
    import_ray,
    ray_session,
    thread_env,
)
from experiments.presets import preset_config

KINDS = ("uniform", "loguniform", "randint", "lograndint", "choice", "grid")
METRICS = {"mean_return": "max", "holdout_nll": "min"}


# ---------------------------------------------------------------------------- search space
def set_field(config: RunConfig, path: str, value: Any) -> RunConfig:
    """Sets the dotted field ``path`` of ``config`` (in place; lists become tuples) and returns
    it; a one-line ValueError names the known fields if ``path`` is not one."""
    node, parts = config, path.split(".")
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            where = ".".join(parts[:i]) or "RunConfig"
            raise ValueError(f"{where} has no field {part!r}; known: {', '.join(names)}.")
        if i < len(parts) - 1:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise ValueError(f"{'.'.join(parts[:i + 1])} is not a section; drop "
                                 f"{'.'.join(parts[i + 1:])!r}.")
    if dataclasses.is_dataclass(getattr(node, parts[-1])):
        raise ValueError(f"{path} is a section; name one of its fields.")
    setattr(node, parts[-1], tuple(value) if isinstance(value, list) else value)
    return config


def with_params(base: RunConfig, params: Dict[str, Any]) -> RunConfig:
    """A copy of ``base`` with the dotted fields of ``params`` set, checked by ``validate``.

    A population searched below the elites keeps a tenth of it as elites (unless
    ``planner.elites`` is searched too), so that a search's small samples still run;
    ``mbrl-bayes train`` refuses such a config instead."""
    config = copy.deepcopy(base)
    for path, value in params.items():
        set_field(config, path, value)
    if "planner.elites" not in params and config.planner.elites > config.planner.population:
        config.planner.elites = max(1, config.planner.population // 10)
    return config.validate()


def parse_value(text: str) -> Any:
    """A field value given as text: JSON (``3``, ``0.1``, ``[200, 200]``, ``true``) or, if
    that fails, the text itself (``cem``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _values(text: str) -> List[Any]:
    try:
        values = json.loads(f"[{text}]")
    except json.JSONDecodeError:
        values = [parse_value(v.strip()) for v in text.split(",")]
    if not values:
        raise ValueError("give at least one value")
    return values


def parse_param(spec: str) -> Tuple[str, str, List[Any]]:
    """``"PATH=KIND:ARGS"`` -> ``(path, kind, values)`` (see the module docstring)."""
    path, sep, rest = spec.partition("=")
    kind, colon, args = rest.partition(":")
    if not sep or not colon or not path:
        raise ValueError(f"--param {spec!r}: expected PATH=KIND:ARGS, e.g. "
                         "train.learning_rate=loguniform:1e-4,1e-2.")
    if kind not in KINDS:
        raise ValueError(f"--param {spec!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}.")
    try:
        values = _values(args)
    except ValueError as e:
        raise ValueError(f"--param {spec!r}: {e}.") from None
    if kind not in ("choice", "grid"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
            raise ValueError(f"--param {spec!r}: {kind} takes two numbers LOW,HIGH.")
        low, high = values
        if not low < high or (kind.startswith("log") and low <= 0):
            raise ValueError(f"--param {spec!r}: need {'0 < ' if 'log' in kind else ''}"
                             "LOW < HIGH.")
        if kind.endswith("randint") and not all(isinstance(v, int) for v in values):
            raise ValueError(f"--param {spec!r}: {kind} takes whole numbers.")
    return path, kind, values


def search_space(specs: Sequence[Tuple[str, str, List[Any]]]) -> Dict[str, Any]:
    """Tune's ``param_space`` (keys: the dotted paths) of parsed ``--param`` specs."""
    from ray import tune

    space = {}
    for path, kind, values in specs:
        if kind == "grid":
            space[path] = tune.grid_search(values)
        elif kind == "choice":
            space[path] = tune.choice(values)
        else:
            space[path] = getattr(tune, kind)(*values)
    return space


def _check_space(base: RunConfig, specs: Sequence[Tuple[str, str, List[Any]]]) -> None:
    """Every value named by a spec (each choice, both ends of a range) gives a valid config."""
    for path, kind, values in specs:
        ends = values if kind in ("choice", "grid") else [values[0],
                                                           values[1] - (kind.endswith("int"))]
        for value in ends:
            try:
                with_params(base, {path: value})
            except (ValueError, TypeError) as e:
                raise ValueError(f"--param {path}={value!r}: {e}") from None


# ---------------------------------------------------------------------------- one sample
def score(returns: Sequence[float], window: int) -> float:
    """The mean return of the last ``window`` MPC trials."""
    return float(np.mean(returns[-window:]))


def _trainable(params: Dict[str, Any], base: Dict[str, Any], window: int,
               env: Dict[str, str]) -> None:
    """One Tune trial: the run of ``base`` with ``params``, reported after every MPC trial."""
    # Where this Ray was not started with these variables (--address, or an initialized Ray):
    # a trial is a fresh actor whose JAX has not started its backends yet, so they still apply.
    os.environ.update(env)
    if "JAX_PLATFORMS" in env:  # read when jax was imported
        import jax

        jax.config.update("jax_platforms", env["JAX_PLATFORMS"])
    from ray import tune

    config = with_params(RunConfig.from_dict(base), params)
    run_dir = os.path.join(tune.get_context().get_trial_dir(), "run")
    if os.path.exists(os.path.join(run_dir, "state.json")):
        run = Run.resume(run_dir)
    else:
        run = Run.create(run_dir, config)
    total = config.trials
    returns = [r["return"] for r in run.rows if r["trial"] > 0]
    while run.trials_done < total:
        # Run.run goes on until config.trials trials are done: one more per call.
        run.config.trials = max(run.trials_done, 0) + 1
        row = run.run(progress=False, log=lambda s: None)[-1]
        returns.append(row["return"])
        nll = row.get("holdout_nll")
        tune.report({
            "mean_return": score(returns, window),
            "holdout_nll": float("nan") if nll is None else float(nll),
            "return": float(row["return"]),
            "mpc_trial": int(row["trial"]),
            "run_dir": run_dir,
        })
    run.config.trials = total


# ---------------------------------------------------------------------------- driver
def tune_configs(
    base: RunConfig, specs: Sequence[Tuple[str, str, List[Any]]], out: str, samples: int,
    metric: str = "mean_return", window: int = 3, grace: Optional[int] = None,
    early_stopping: bool = True, engine: Optional[Engine] = None, seed: int = 0,
    verbose: int = 1,
) -> Tuple[RunConfig, List[Dict[str, Any]]]:
    """Runs the search; returns the best config and one row per sample (best first)."""
    from ray import tune

    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; known: {', '.join(METRICS)}.")
    if samples <= 0 or window <= 0:
        raise ValueError("samples and window must be positive.")
    base.validate()
    _check_space(base, specs)
    engine = engine or Engine("ray")
    mode, total = METRICS[metric], base.trials
    grace = min(grace or window, total)
    env = thread_env(engine.cpus_per_run, engine.gpus_per_run)
    scheduler = tune.schedulers.ASHAScheduler(
        time_attr="training_iteration", max_t=total, grace_period=grace,
        reduction_factor=2) if early_stopping and grace < total else None
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, base=base.to_dict(), window=window, env=env),
        {"cpu": engine.cpus_per_run, "gpu": engine.gpus_per_run})
    with ray_session(engine, runtime_env={"env_vars": env}):
        tuner = tune.Tuner(
            trainable, param_space=search_space(specs),
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, num_samples=samples, scheduler=scheduler,
                search_alg=tune.search.BasicVariantGenerator(random_state=seed),
                trial_dirname_creator=lambda trial: trial.trial_id),
            run_config=tune.RunConfig(name="tune", verbose=verbose,
                                      storage_path=os.path.abspath(
                                          os.path.join(out, "ray_results"))))
        results = tuner.fit()
    rows = []
    for result in results:
        m = result.metrics or {}
        params = {k: result.config[k] for k in (p for p, _, _ in specs)}
        done = int(m.get("mpc_trial", 0))
        status = (f"error: {str(result.error).strip().splitlines()[-1]}" if result.error
                  else "finished" if done >= total else "stopped early")
        rows.append({"sample": os.path.basename(result.path or "") or "-", **params,
                     "mpc_trials": done, metric: m.get(metric),
                     **({} if metric == "mean_return" else {"mean_return": m.get("mean_return")}),
                     "last_return": m.get("return"), "status": status, "_params": params})
    ranked = [r for r in rows if r["status"] == "finished" and _finite(r[metric])]
    if not ranked:
        raise RuntimeError("No sample reached the last MPC trial; see OUT/results.md.")
    rows.sort(key=lambda r: (r["status"] != "finished", not _finite(r[metric]),
                             (-1 if mode == "max" else 1) * (r[metric] if _finite(r[metric])
                                                             else 0)))
    best = with_params(base, rows[0]["_params"])
    return best, rows


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def write_results(out: str, best: RunConfig, rows: List[Dict[str, Any]], metric: str,
                  specs: Sequence[Tuple[str, str, List[Any]]], command: str) -> str:
    """``OUT/best_config.json``, ``OUT/results.csv`` and ``OUT/results.md``; returns the
    markdown."""
    os.makedirs(out, exist_ok=True)
    best.save(os.path.join(out, "best_config.json"))
    columns = [k for k in rows[0] if not k.startswith("_")]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)

    lines = ["# Hyperparameter search", "", f"Command: `{command}`", "",
             "Space: " + ", ".join(f"`{p}` {k} {v}" for p, k, v in specs), "",
             f"Score: {metric} ({METRICS[metric]}), after the last MPC trial. Best: "
             f"`{rows[0]['sample']}` -> `best_config.json`.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", help="task whose preset is the base config")
    parser.add_argument("--config", help="base RunConfig JSON (instead of --env's preset)")
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="fast",
                        help="with --env: fast (the comparison budget), preset or tiny")
    parser.add_argument("--param", action="append", default=[], metavar="PATH=KIND:ARGS",
                        help="a searched field (repeat the flag for several)")
    parser.add_argument("--samples", type=int, default=8, help="Tune samples (runs); default 8")
    parser.add_argument("--trials", type=int, default=None, help="MPC trials per run")
    parser.add_argument("--seed", type=int, default=None, help="the runs' seed")
    parser.add_argument("--metric", choices=tuple(METRICS), default="mean_return")
    parser.add_argument("--window", type=int, default=3,
                        help="mean_return: mean over the last WINDOW MPC trials; default 3")
    parser.add_argument("--grace", type=int, default=None,
                        help="MPC trials before ASHA may stop a run; default WINDOW")
    parser.add_argument("--no-early-stopping", action="store_true")
    parser.add_argument("--search-seed", type=int, default=0, help="seed of the sampling")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quiet", action="store_true")
    add_ray_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = build_parser().parse_args(argv)
    prog = os.path.basename(sys.argv[0]) or "tune.py"
    try:
        engine = Engine("ray", args.address, args.cpus_per_run, args.gpus_per_run)
        import_ray()
        if not args.param:
            raise ValueError("Give at least one --param PATH=KIND:ARGS to search.")
        if args.config:
            base = RunConfig.load(args.config)
        elif args.env:
            base = BUDGETS[args.budget](preset_config(args.env))
        else:
            raise ValueError("Give --env or --config.")
        if args.trials is not None:
            base.trials = args.trials
        if args.seed is not None:
            base.seed = args.seed
        specs = [parse_param(p) for p in args.param]
        base.validate()
        _check_space(base, specs)
    except (EngineError, ValueError, FileNotFoundError) as e:
        print(f"{prog}: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None
    best, rows = tune_configs(base, specs, args.out, args.samples, args.metric, args.window,
                              args.grace, not args.no_early_stopping, engine, args.search_seed,
                              verbose=0 if args.quiet else 1)
    return write_results(args.out, best, rows, args.metric, specs, command_line())


if __name__ == "__main__":
    print(main())
