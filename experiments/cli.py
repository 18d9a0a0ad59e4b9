"""The ``mbrl-bayes`` command: ``train``, ``evaluate``, ``plot`` and ``config``.

    mbrl-bayes train                                   # the default quick run (see DEFAULT_RUN)
    mbrl-bayes train --env cartpole_swingup --agent pets --trials 10 --seed 0 --out runs/x
    mbrl-bayes train --resume runs/x [--trials 15]     # continue an interrupted / finished run
    mbrl-bayes train --env pendulum --network my_nets.py:network   # your own network's model
    mbrl-bayes evaluate runs/x --episodes 5 [--set planner.population=500 ...]  # other planner
    mbrl-bayes plot runs/a runs/b ... -o curves.png
    mbrl-bayes config --env pendulum > run.json        # the full default config, for --config

Bad input ends with one sentence on stderr and exit status 2; Ctrl-C ends with status 130 after
the last finished trial has been saved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from agents.config import AGENT_NAMES, FUSED_KERNELS, MODEL_NAMES
from experiments.presets import preset_config
from mbrl_bayes.planning import BONUSES, OPTIMIZERS, PROPAGATIONS

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mbrl-bayes", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train an agent (or resume a run)")
    train.add_argument("--env", help="task name (see `envs.names()`), or a named preset "
                       "(experiments.presets.NAMED_PRESETS, e.g. halfcheetah_cem); default "
                       "cartpole_swingup")
    train.add_argument("--agent", choices=AGENT_NAMES, help="default pets")
    train.add_argument("--model", choices=MODEL_NAMES, help="dynamics model; default pe")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS),
                       help="trajectory optimizer; default: the preset's")
    train.add_argument("--propagation", choices=PROPAGATIONS,
                       help="how particles meet the model's function draws; default: the "
                            "preset's")
    train.add_argument("--beta", type=float,
                       help="optimism weight of --propagation optimistic / hucrl")
    train.add_argument("--bonus", choices=tuple(BONUSES),
                       help="intrinsic reward for exploring (with --propagation mean or hucrl)")
    train.add_argument("--bonus-scale", type=float, help="weight of --bonus per step")
    train.add_argument("--trials", type=_positive_int, help="number of MPC trials")
    train.add_argument("--seed", type=int, help="random seed; default 0")
    train.add_argument("--horizon", type=_positive_int)
    train.add_argument("--population", type=_positive_int)
    train.add_argument("--elites", type=_positive_int, help="cem/icem elites (<= population)")
    train.add_argument("--particles", type=_positive_int)
    train.add_argument("--seed-steps", type=int, help="random steps before the first trial")
    train.add_argument("--fused-kernel", choices=FUSED_KERNELS, default=None,
                       help="plan through Pallas GPU kernels (pe/de/p/d): triton (any CUDA "
                            "GPU) or mosaic (Mosaic GPU, Hopper and later)")
    train.add_argument("--network", metavar="FILE.py:FUNCTION|MODULE:FUNCTION",
                       help="plan with models.NetworkDynamics of your own network (a Haiku "
                            "function or an (init, apply) pair); a run records the name, and "
                            "--resume / evaluate need it given again")
    train.add_argument("--config", help="a JSON RunConfig file (flags override it)")
    train.add_argument("--out", help="run folder; default runs/<env>-<agent>-<model>-s<seed>")
    train.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = sub.add_parser("evaluate", help="run a trained agent and report its return")
    evaluate.add_argument("run", help="run folder")
    evaluate.add_argument("--episodes", type=_positive_int, default=5)
    evaluate.add_argument("--seed", type=int, default=12345)
    evaluate.add_argument("--network", help="the run's --network (a run never imports code)")
    evaluate.add_argument("--set", dest="planner_overrides", action="append", default=[],
                          metavar="planner.FIELD=VALUE",
                          help="plan with the run's trained model under another planner, e.g. "
                               "--set planner.optimizer=cem --set planner.population=500 "
                               "(repeatable; `mbrl-bayes config` lists the fields)")

    plot = sub.add_parser("plot", help="overlay learning curves of runs")
    plot.add_argument("runs", nargs="+", help="run folders")
    plot.add_argument("-o", "--output", default="curves.png")

    from agents.validation import describe_fields

    config = sub.add_parser(
        "config", help="print the full default config as JSON (a --config file)",
        description="Prints the default RunConfig of a task as JSON: edit it and pass it to "
                    "`mbrl-bayes train --config FILE` (flags override its values; every value "
                    "is checked, and a bad one is an error naming the field).",
        epilog="fields:\n" + describe_fields(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_argument("--env", default="cartpole_swingup",
                        help="task whose preset to print, or a named preset (e.g. "
                             "halfcheetah_cem); default cartpole_swingup")
    return parser


def _run_network(run_dir: str, spec: Optional[str]):
    """The network of the run in ``run_dir`` from ``--network spec``: None for other models;
    a one-line ValueError when it is missing or differs from the one the run recorded."""
    from agents import RunConfig, load_network

    try:
        recorded = RunConfig.load(os.path.join(run_dir, "config.json")).model.network
    except (OSError, ValueError, TypeError):
        return None  # Run.resume reports the missing or broken run folder
    if recorded is None:
        if spec is not None:
            raise ValueError(f"{run_dir} does not run a custom network; drop --network.")
        return None
    if spec is None:
        raise ValueError(f"{run_dir} runs the network {recorded!r}, and a run folder never "
                         f"imports code by itself: give --network {recorded} again.")
    if spec != recorded:
        raise ValueError(f"{run_dir} runs the network {recorded!r}, not {spec!r}.")
    return load_network(spec)


def _train(args: argparse.Namespace) -> int:
    from agents import Run, RunConfig, load_network
    from agents.validation import validate_config

    network = None
    if args.resume:
        overrides = [n for n in ("env", "agent", "model", "optimizer", "propagation", "seed",
                                 "horizon", "population", "elites", "particles", "config", "out",
                                 "fused_kernel", "beta", "bonus", "bonus_scale")
                     if getattr(args, n) is not None]
        if overrides:
            flag = overrides[0].replace("_", "-")
            raise ValueError(f"--resume continues a run as configured; drop --{flag}.")
        network = _run_network(args.resume, args.network)
        run = Run.resume(args.resume, trials=args.trials, network=network)
        print(f"resuming {args.resume}: {run.trials_done if run.trials_done > 0 else 0} of "
              f"{run.config.trials} trials done")
    else:
        if args.config:
            try:
                config = RunConfig.load(args.config)
            except FileNotFoundError:
                raise ValueError(f"Config file {args.config} does not exist.") from None
            except json.JSONDecodeError:
                raise ValueError(f"Config file {args.config} is not valid JSON.") from None
            # Every value in the file must be valid, even one a flag below replaces.
            validate_config(config, fields_only=True)
        else:  # a task's preset, or a named one (its env is the task's)
            config = preset_config(args.env or "cartpole_swingup")
        if args.config and args.env is not None and args.env != config.env:
            config = _with_env(config, args.env)
        for flag, attr in (("agent", "agent"), ("trials", "trials"), ("seed", "seed"),
                           ("seed_steps", "seed_steps")):
            if getattr(args, flag) is not None:
                setattr(config, attr, getattr(args, flag))
        if args.model is not None:
            config.model.name = args.model
        if args.fused_kernel:
            config.model.fused_kernel = args.fused_kernel
        if args.network is not None:
            if args.model not in (None, "network"):
                raise ValueError(f"--network builds model 'network'; drop --model {args.model}.")
            config.model.name, config.model.network = "network", args.network
            network = load_network(args.network)  # code is imported only when asked for here
        elif config.model.name == "network":
            raise ValueError(f"The config's model is the network {config.model.network!r}; "
                             f"code is imported only from the command line: give --network.")
        for flag, attr in (("optimizer", "optimizer"), ("propagation", "propagation"),
                           ("horizon", "horizon"), ("population", "population"),
                           ("elites", "elites"), ("particles", "num_particles"), ("beta", "beta"),
                           ("bonus", "bonus"), ("bonus_scale", "bonus_scale")):
            if getattr(args, flag) is not None:
                setattr(config.planner, attr, getattr(args, flag))
        validate_config(config)  # the merged config, before anything is built
        out = args.out or os.path.join(
            "runs", f"{config.env}-{config.agent}-{config.model.name}-s{config.seed}")
        run = Run.create(out, config, network)
        print(f"run folder: {out}")
    rows = run.run(progress=not args.quiet)
    best = max(r["return"] for r in rows if r["trial"] > 0)
    print(f"done: {len(rows) - 1} trials, final return {rows[-1]['return']:.2f}, best {best:.2f}"
          f" -> {run.out_dir}")
    return 0


def _with_env(config, env: str):
    """The preset of ``env`` with the non-default fields of ``config`` kept."""
    from agents import RunConfig

    fresh = preset_config(env)
    if config.to_dict() == preset_config(config.env).to_dict():
        return fresh
    data = config.to_dict()
    data["env"] = env
    return RunConfig.from_dict(data)


def _planner_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``planner.FIELD=VALUE`` items as ``{FIELD: value}`` (VALUE JSON or a bare string)."""
    from experiments.tune import parse_value

    fields = {}
    for item in items:
        path, sep, text = item.partition("=")
        section, dot, name = path.partition(".")
        if not sep or section != "planner" or not dot or not name:
            raise ValueError(f"--set {item!r}: expected planner.FIELD=VALUE (evaluate changes "
                             f"only the planner; the model is the run's).")
        fields[name] = parse_value(text)
    return fields


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from agents import evaluate_episodes

    planner = _planner_overrides(args.planner_overrides)
    episodes = evaluate_episodes(args.run, args.episodes, seed=args.seed,
                                 network=_run_network(args.run, args.network), planner=planner)
    returns = [e["return"] for e in episodes]
    seconds = np.median([e["seconds_per_action"] for e in episodes])
    print(f"return over {len(returns)} episodes: {np.mean(returns):.2f} +- {np.std(returns):.2f}"
          f"  ({', '.join(f'{r:.1f}' for r in returns)}); planning {seconds:.3f} s per action"
          f" (median over episodes)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from agents import RunConfig, plot_returns, read_metrics

    runs, labels, groups, keys = [], [], [], []
    for run_dir in args.runs:
        rows = read_metrics(run_dir)
        config = RunConfig.load(os.path.join(run_dir, "config.json")).to_dict()
        config.pop("seed")
        key = json.dumps(config, sort_keys=True)
        if key not in keys:
            keys.append(key)
        runs.append(rows)
        groups.append(keys.index(key))
        labels.append(f"{config['env']} {config['agent']} {config['model']['name']} "
                      f"{config['planner']['propagation']}")
    plot_returns(runs, labels, args.output, groups)
    print(f"wrote {args.output} ({len(runs)} runs, {len(keys)} configs)")
    return 0


def _config(args: argparse.Namespace) -> int:
    print(json.dumps(preset_config(args.env).validate().to_dict(), indent=2, sort_keys=True))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = {"train": _train, "evaluate": _evaluate, "plot": _plot,
                   "config": _config}[args.command]
        return handler(args)
    except _UsageError as e:
        print(f"mbrl-bayes: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nmbrl-bayes: interrupted; the last finished trial is saved "
              "(continue with `mbrl-bayes train --resume RUN`).", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, KeyError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"mbrl-bayes: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cli_entry(argv: Optional[List[str]] = None) -> None:
    sys.exit(main(argv))


if __name__ == "__main__":
    cli_entry()
