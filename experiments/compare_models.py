"""Which uncertainty model? D, P, DE, PE, variational MLP and LSTM, MC-dropout, GP, deep GP:
each in PETS (CEM, ``ts_inf``), over several seeds -> learning curves and final returns.

    python experiments/compare_models.py --out docs/results/compare_models
    python experiments/compare_models.py --envs pendulum --seeds 0 1 2 --out results/models

Resumable: rerun the same command to continue (finished runs are skipped).
"""

from __future__ import annotations

from typing import Dict

from agents import RunConfig
from experiments.common import Variant, base_parser, command_line, run_grid, select, summarize
from experiments.engine import engine_from_args

TRIALS = {"pendulum": 5, "cartpole_swingup": 10}


def model_variant(name: str) -> Variant:
    """The variant that runs PETS (``ts_inf``) with model ``name`` (one of ``MODEL_NAMES``)."""
    def variant(config: RunConfig) -> RunConfig:
        config.model.name = name
        config.agent = "pets"
        config.planner.propagation = "ts_inf"
        return config
    return variant


VARIANTS: Dict[str, Variant] = {
    "D": model_variant("d"), "P": model_variant("p"), "DE": model_variant("de"),
    "PE": model_variant("pe"),
    "variational MLP": model_variant("vmlp"), "variational LSTM": model_variant("vlstm"),
    "MC-dropout": model_variant("dropout"), "GP": model_variant("gp"),
    "deep GP": model_variant("dgp"),
}


def main(argv=None) -> str:
    args = base_parser(__doc__.split("\n")[0], ["pendulum", "cartpole_swingup"]).parse_args(argv)
    trials = {env: args.trials or TRIALS.get(env, 10) for env in args.envs}
    grid = run_grid(args.out, select(VARIANTS, args.variants), args.envs, args.seeds, trials,
                    args.budget, progress=not args.quiet, engine=engine_from_args(args),
                    report_only=args.report_only)
    return summarize(
        args.out, "Dynamics models compared (PETS: CEM, ts_inf)", command_line(), grid,
        extra_columns={
            "holdout MSE, last trial": lambda t: t[-1].get("holdout_mse"),
            "90% coverage, last trial": lambda t: t[-1].get("calib_coverage90"),
        },
    )


if __name__ == "__main__":
    print(main())
