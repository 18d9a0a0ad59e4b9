"""Which planner for the MuJoCo tasks? The iCEM preset (200 x 3, 10 particles) against PETS's
CEM (500 x 5, 20 particles) and cheaper iCEM settings, at equal data: returns per trial and
seconds per action side by side, same seeds.

    python experiments/compare_planners.py --envs reacher --seeds 0 1 2 --trials 15 \\
        --out docs/results/compare_planners_reacher

Every variant trains the task preset's model (PE, ``--budget preset``, the default here) on the
data its own planner collects; only the planner differs (the preset's horizon). Resumable: rerun
the same command to continue (finished runs are skipped); ``--engine ray`` runs the grid on Ray.
``OUT/results.md`` adds the median seconds per action over a run's trials (planning only, on the
machine that ran it: compare rows made on the same machine).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from agents import RunConfig
from experiments.common import Variant, base_parser, command_line, run_grid, select, summarize
from experiments.engine import engine_from_args

TRIALS = {"reacher": 15, "pusher": 15, "halfcheetah": 30}


def _planner(optimizer: str, population: int, elites: int, iterations: int, particles: int,
             propagation: str = "ts_inf") -> Variant:
    def variant(config: RunConfig) -> RunConfig:
        config.agent = "pets"
        config.model.name = "pe"
        planner = config.planner
        planner.optimizer, planner.population, planner.elites = optimizer, population, elites
        planner.iterations, planner.num_particles = iterations, particles
        planner.propagation = propagation
        return config
    return variant


VARIANTS: Dict[str, Variant] = {
    "iCEM 200x3, 10 particles": _planner("icem", 200, 20, 3, 10),
    "CEM 500x5, 20 particles": _planner("cem", 500, 50, 5, 20),
    "iCEM 200x3, 5 particles": _planner("icem", 200, 20, 3, 5),
    "iCEM 200x3, mean": _planner("icem", 200, 20, 3, 10, propagation="mean"),
}


def _median_seconds_per_action(trials: List[Dict]) -> Optional[float]:
    values = [t["seconds_per_action"] for t in trials
              if t.get("seconds_per_action") is not None]
    return float(np.median(values)) if values else None


def main(argv=None) -> str:
    parser = base_parser(__doc__.split("\n")[0], ["reacher"])
    parser.set_defaults(budget="preset")
    args = parser.parse_args(argv)
    trials = {env: args.trials or TRIALS.get(env, 15) for env in args.envs}
    grid = run_grid(args.out, select(VARIANTS, args.variants), args.envs, args.seeds, trials,
                    args.budget, progress=not args.quiet, engine=engine_from_args(args),
                    report_only=args.report_only)
    return summarize(
        args.out, "Planners compared (PE model, the task preset's horizon)", command_line(),
        grid, extra_columns={"seconds per action (median)": _median_seconds_per_action},
    )


if __name__ == "__main__":
    print(main())
