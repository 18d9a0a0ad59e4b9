"""The learning bar: PETS with default settings on cartpole_swingup and pendulum, several seeds.

    python experiments/learning_bar.py --out docs/results/learning_bar

Bars (the threshold must be reached by the given trial, for at least 2 of 3 seeds):
cartpole_swingup >= 150 (max ~200) within 15 trials; pendulum >= -200 by the 3rd trial after 200
random steps (a peer PyTorch library reaches about -134 by its 2nd trial). Resumable.
"""

from __future__ import annotations

from typing import Dict, Tuple

from agents import read_metrics
from experiments.common import base_parser, command_line, run_grid, summarize
from experiments.engine import engine_from_args

# env -> (threshold, by trial, trials run)
BARS: Dict[str, Tuple[float, int, int]] = {
    "cartpole_swingup": (150.0, 15, 15),
    "pendulum": (-200.0, 3, 3),
}


def first_trial_reaching(run_dir: str, threshold: float):
    for row in read_metrics(run_dir):
        if row["trial"] > 0 and row["return"] >= threshold:
            return row["trial"]
    return None


def main(argv=None) -> Tuple[str, Dict[str, bool]]:
    parser = base_parser(__doc__.split("\n")[0], list(BARS))
    parser.set_defaults(budget="preset")
    args = parser.parse_args(argv)
    trials = {env: args.trials or BARS[env][2] for env in args.envs}
    grid = run_grid(args.out, {"PETS": lambda c: c}, args.envs, args.seeds, trials,
                    args.budget, progress=not args.quiet, engine=engine_from_args(args),
                    report_only=args.report_only)
    text = summarize(args.out, "Learning bar: PETS with default settings", command_line(), grid)
    passed: Dict[str, bool] = {}
    lines = ["", "## Bars", "", "| env | bar | first trial reaching it, per seed | passed |",
             "|---|---|---|---|"]
    for env, variants in grid.items():
        threshold, by_trial, _ = BARS[env]
        firsts = [first_trial_reaching(d, threshold) for d in variants["PETS"]]
        hits = sum(f is not None and f <= by_trial for f in firsts)
        needed = min(2, len(firsts))
        passed[env] = hits >= needed
        lines.append(f"| {env} | >= {threshold:g} by trial {by_trial} | "
                     f"{', '.join('-' if f is None else str(f) for f in firsts)} | "
                     f"{'yes' if passed[env] else 'no'} ({hits}/{len(firsts)}) |")
    text += "\n".join(lines) + "\n"
    with open(f"{args.out}/results.md", "w") as f:
        f.write(text)
    return text, passed


if __name__ == "__main__":
    print(main()[0])
