"""Which exploration finds a sparse reward? ``ts_inf``, ``mean``, ``thompson``, ``optimistic``,
``hucrl``, the disagreement bonus and random actions, on the sparse-reward tasks.

    python experiments/compare_exploration.py --envs mountaincar --seeds 0 1 2 3 4 \\
        --out docs/results/compare_exploration

Every model-based variant plans with the probabilistic ensemble (PE) and CEM of the task's preset
(``--budget preset``, the default here: the presets set the horizon and action repeat these tasks
need); only the propagation / bonus differs. ``--action-repeat`` and ``--particles`` change the
preset for every variant alike, and ``--beta`` the optimism weight of ``optimistic`` and
``hucrl`` (default 1), e.g. ``--action-repeat 1`` makes ``mountaincar`` the classic task in
which a 30-step horizon cannot see the flag from the valley (give each its own ``--out``).
Resumable: rerun the same command to continue (finished runs are skipped); ``--engine ray`` runs
the grid on Ray.

An episode *succeeds* when it reaches the sparse reward: ``mountaincar`` when it ends at the flag
before the time limit, the other tasks when its return is above 0 (reward 1 was earned at least
once). ``OUT/results.md`` reports, per variant: the seeds that ever succeeded, with a Wilson 95%
interval; the episodes (trials) to the first success; the success rate over all trials; seconds
per action (median over trials); plus the return curves and per-trial returns of
``experiments.common.summarize``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

import envs
from agents import RunConfig, read_metrics
from experiments.cli import _positive_int
from experiments.common import (
    Variant,
    base_parser,
    command_line,
    run_grid,
    select,
    summarize,
)
from experiments.engine import _positive_float, engine_from_args

SPARSE_TASKS = ("mountaincar", "cartpole_swingup_sparse", "pendulum_sparse")
TRIALS = {"mountaincar": 5, "cartpole_swingup_sparse": 10, "pendulum_sparse": 10}
# The bonus is in the state's units per step; its weight puts it on the scale of the task's
# reward (mountaincar: the flag is worth 100 and an action costs up to 0.5 per 5-step block;
# the others: 1 per step in the target band). Not tuned.
BONUS_SCALE = {"mountaincar": 100.0}
DEFAULT_BONUS_SCALE = 10.0


def _planner(agent: str, propagation: str, bonus: Optional[str] = None) -> Variant:
    def variant(config: RunConfig) -> RunConfig:
        config.model.name = "pe"
        config.agent = agent
        config.planner.propagation = propagation
        config.planner.beta = 1.0
        if bonus is not None:
            config.planner.bonus = bonus
            config.planner.bonus_scale = BONUS_SCALE.get(config.env, DEFAULT_BONUS_SCALE)
        return config
    return variant


def _random(config: RunConfig) -> RunConfig:
    config.agent = "random"
    return config


VARIANTS: Dict[str, Variant] = {
    "ts_inf": _planner("pets", "ts_inf"),
    "mean": _planner("pets", "mean"),
    "thompson": _planner("thompson", "ts_inf"),
    "optimistic": _planner("pets", "optimistic"),
    "hucrl": _planner("pets", "hucrl"),
    "disagreement": _planner("pets", "mean", bonus="disagreement"),
    "random": _random,
}


def with_overrides(variants: Dict[str, Variant], action_repeat: Optional[int] = None,
                   particles: Optional[int] = None,
                   beta: Optional[float] = None) -> Dict[str, Variant]:
    """``variants``, each first setting the preset's action repeat and planner particles to the
    given values, and then the optimism weight ``beta`` of ``optimistic`` and ``hucrl`` (which
    the other variants do not read; ``None``: the preset's, and 1 for those two)."""
    def override(variant: Variant) -> Variant:
        def changed(config: RunConfig) -> RunConfig:
            if action_repeat is not None:
                config.action_repeat = action_repeat
            if particles is not None:
                config.planner = dataclasses.replace(config.planner, num_particles=particles)
            config = variant(config)
            if beta is not None:
                config.planner = dataclasses.replace(config.planner, beta=beta)
            return config
        return changed
    return {label: override(variant) for label, variant in variants.items()}


def episode_successes(run_dir: str) -> List[bool]:
    """Whether each trial (episode) of the run in ``run_dir`` reached the sparse reward."""
    config = RunConfig.load(os.path.join(run_dir, "config.json"))
    length = config.episode_length or envs.task(config.env, config.action_repeat).episode_length
    rows = [r for r in read_metrics(run_dir) if r["trial"] > 0]
    if config.env == "mountaincar":  # the only termination is the flag
        return [int(r["episode_steps"]) < length for r in rows]
    return [float(r["return"]) > 0.0 for r in rows]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for ``z = 1.96``)."""
    if n <= 0:
        raise ValueError("n must be positive.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def exploration_table(grid: Dict[str, Dict[str, List[str]]]) -> List[str]:
    lines: List[str] = []
    for env, variants in grid.items():
        lines += [f"## {env}: sparse-reward success", "",
                  "| variant | seeds that succeeded (Wilson 95% CI) | episodes to first success "
                  "(per seed) | episodes that succeeded | seconds per action (median) |",
                  "|---|---|---|---|---|"]
        for label, run_dirs in variants.items():
            firsts, hits, total, seconds = [], 0, 0, []
            for d in run_dirs:
                succ = episode_successes(d)
                firsts.append(next((i + 1 for i, s in enumerate(succ) if s), None))
                hits, total = hits + sum(succ), total + len(succ)
                seconds += [r["seconds_per_action"] for r in read_metrics(d)
                            if r["trial"] > 0 and r.get("seconds_per_action") is not None]
            ever = sum(f is not None for f in firsts)
            low, high = wilson_interval(ever, len(run_dirs))
            per_seed = ", ".join("-" if f is None else str(f) for f in firsts)
            spa = f"{float(np.median(seconds)):.3f}" if seconds else "-"
            lines.append(f"| {label} | {ever}/{len(run_dirs)} ({low:.2f}-{high:.2f}) | "
                         f"{per_seed} | {hits}/{total} | {spa} |")
        lines += ["", "(`-`: no success within the run's trials. Seconds per action: median over "
                  "the trials of all seeds, so the first trial's compile does not count.)", ""]
    return lines


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = base_parser(__doc__.split("\n")[0], list(SPARSE_TASKS))
    parser.set_defaults(budget="preset", seeds=[0, 1, 2, 3, 4])
    parser.add_argument("--action-repeat", type=_positive_int, default=None,
                        help="env steps per action for every variant; default: the preset's")
    parser.add_argument("--particles", type=_positive_int, default=None,
                        help="planner particles for every variant; default: the preset's")
    parser.add_argument("--beta", type=_positive_float, default=None,
                        help="optimism weight of optimistic and hucrl (default 1)")
    args = parser.parse_args(argv)
    trials = {env: args.trials or TRIALS.get(env, 10) for env in args.envs}
    variants = with_overrides(select(VARIANTS, args.variants), args.action_repeat,
                              args.particles, args.beta)
    grid = run_grid(args.out, variants, args.envs, args.seeds, trials, args.budget,
                    progress=not args.quiet, engine=engine_from_args(args),
                    report_only=args.report_only)
    text = summarize(args.out, "Exploration on sparse tasks (PE model, the presets' planner)",
                     command_line(), grid)
    text = "\n".join([text, *exploration_table(grid)])
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    print(main())
