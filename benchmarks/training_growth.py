"""Seconds of one trial's model training as the replay buffer grows: from scratch vs. warm.

    python benchmarks/training_growth.py --env halfcheetah --sizes 1000 5000 10000 20000

For each buffer size ``n`` (the first ``n`` of one stream of uniformly random transitions of
the real env, episodes of the task's length): the preset's model trained as an agent trains it
each trial (``ModelBasedAgent.update``, the preset's training settings: early stopping on the
holdout), once from freshly initialized params ("scratch") and once from the params the warm
agent ended the previous size with ("warm": what a run does, one trial's data later). Both
agents compile on a small buffer first (not timed). Prints a markdown table (seconds, epochs,
holdout MSE and NLL in standardized units) and, last, one JSON object with the load average.
``--set section.field=value`` overrides a config field as in ``seconds_per_action.py``.
Random transitions are not the data of a run (a planner's episodes are narrower), and other
processes' load goes straight into the seconds: compare the columns, re-time on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import envs  # noqa: E402
from agents.factory import build_agent  # noqa: E402
from benchmarks.common import preset_with, random_buffer  # noqa: E402
from mbrl_bayes.data import ReplayBuffer  # noqa: E402


def _buffer(data: dict, n: int) -> ReplayBuffer:
    buffer = ReplayBuffer(n, data["obs"].shape[1], data["act"].shape[1])
    buffer.add(**{f: v[:n] for f, v in data.items()})
    return buffer


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, choices=envs.names())
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="config override, repeatable")
    args = parser.parse_args(argv)
    if any(n < 100 for n in args.sizes) or args.sizes != sorted(args.sizes):
        raise SystemExit("--sizes must be increasing, each at least 100.")
    try:
        config = preset_with(args.env, args.overrides)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    data = random_buffer(config, args.sizes[-1]).as_dict()
    load_before = os.getloadavg()[0]
    scratch, warm = build_agent(config), build_agent(config)
    key = jax.random.PRNGKey(0)
    for agent in (scratch, warm):  # compile the update and evaluation steps
        agent.update(_buffer(data, 100), key)
        agent.params = None
    rows = []
    for i, n in enumerate(args.sizes):
        buffer, key_n = _buffer(data, n), jax.random.fold_in(key, i)
        scratch.params = None
        cold = scratch.update(buffer, key_n)
        hot = warm.update(buffer, key_n)
        rows.append({"n": n, **{f"scratch_{k}": v for k, v in cold.items()},
                     **{f"warm_{k}": v for k, v in hot.items()}})
        print(f"{n} transitions: scratch {cold['seconds']:.1f} s ({cold['epochs']} epochs), "
              f"warm {hot['seconds']:.1f} s ({hot['epochs']} epochs)", flush=True)
    print("| transitions | scratch: s | epochs | holdout MSE | NLL | warm: s | epochs "
          "| holdout MSE | NLL |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | " + " | ".join(
            f"{r[f'{w}_seconds']:.1f} | {r[f'{w}_epochs']} | {r[f'{w}_holdout_mse']:.3f} | "
            f"{r[f'{w}_holdout_nll']:.1f}" for w in ("scratch", "warm")) + " |")
    print(json.dumps({"env": config.env, "train": config.train.__dict__,
                      "load_1min": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count(),
                      "rows": rows}, default=float))
    return rows


if __name__ == "__main__":
    main()
