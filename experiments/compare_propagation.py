"""Which propagation / exploration rule? ``ts1``, ``ts_inf``, ``mean``, ``thompson`` and
``optimistic`` with the probabilistic ensemble (PE), over several seeds.

    python experiments/compare_propagation.py --out docs/results/compare_propagation

Resumable: rerun the same command to continue (finished runs are skipped).
"""

from __future__ import annotations

from typing import Dict

from agents import RunConfig
from experiments.common import Variant, base_parser, command_line, run_grid, select, summarize
from experiments.engine import engine_from_args
from mbrl_bayes.planning import PROPAGATIONS

TRIALS = {"pendulum": 5, "cartpole_swingup": 10}


def _propagation(name: str, beta: float = 1.0) -> Variant:
    def variant(config: RunConfig) -> RunConfig:
        config.model.name = "pe"
        config.agent = "thompson" if name == "thompson" else "pets"
        config.planner.propagation = name
        config.planner.beta = beta
        return config
    return variant


VARIANTS: Dict[str, Variant] = {name: _propagation(name) for name in PROPAGATIONS}


def main(argv=None) -> str:
    args = base_parser(__doc__.split("\n")[0], ["pendulum", "cartpole_swingup"]).parse_args(argv)
    trials = {env: args.trials or TRIALS.get(env, 10) for env in args.envs}
    grid = run_grid(args.out, select(VARIANTS, args.variants), args.envs, args.seeds, trials,
                    args.budget, progress=not args.quiet, engine=engine_from_args(args),
                    report_only=args.report_only)
    return summarize(args.out, "Propagation modes compared (PE model, CEM)", command_line(),
                     grid)


if __name__ == "__main__":
    print(main())
