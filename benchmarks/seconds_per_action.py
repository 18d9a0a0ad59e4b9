"""Seconds per action of a task preset's planner with each dynamics model, as the agents run it.

    python benchmarks/seconds_per_action.py --env cartpole_swingup --models pe gp
    python benchmarks/seconds_per_action.py --env halfcheetah --set planner.num_particles=10

For each model: the preset of ``--env`` (a task or a named preset such as ``halfcheetah_cem``,
``experiments/presets.py``) with ``model.name`` set, trained by the agent
(``ModelBasedAgent.update``, the preset's training settings) on the preset's
``seed_steps`` random steps of the real env, then one episode from the env's start state in which
the first action (the compile) is excluded and the next ``--actions`` are timed one by one
(wall clock, ``mpc.act`` including the transfer of the action to the host; and the process's
CPU seconds over them, all threads, which other processes' load does not inflate as much).
Prints a markdown table (median and min seconds per action, CPU seconds per action, the
training seconds) and, last, one JSON object with the 1-minute load average before and after.
``--set section.field=value`` overrides a config field (JSON or a bare string), for every model.
Run it on an otherwise idle machine: other processes' load goes straight into the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import envs  # noqa: E402
from agents.episode import env_seed  # noqa: E402
from agents.factory import build_agent  # noqa: E402
from benchmarks.common import preset_with, random_buffer  # noqa: E402
from experiments.presets import NAMED_PRESETS  # noqa: E402


def seconds_per_action(env_name: str, model: str, actions: int, overrides: list,
                       seed: int = 0) -> dict:
    """Trains ``model`` on the preset's seed data and times ``actions`` actions after the first."""
    config = preset_with(env_name, [f"model.name={model}", *overrides])
    env = envs.make(config.env, action_repeat=config.action_repeat)
    agent = build_agent(config)
    buffer = random_buffer(config, config.seed_steps, seed)
    key = jax.random.PRNGKey(seed)
    train = agent.update(buffer, key)
    agent.begin_episode(key)
    obs, _ = env.reset(seed=env_seed(seed, 1, 1))
    times, cpu = [], 0.0
    for t in range(actions + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        action = agent.act(obs, jax.random.fold_in(key, t))
        times.append(time.perf_counter() - start)
        cpu += (time.process_time() - start_cpu) if t else 0.0
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset(seed=env_seed(seed, 1, t + 2))
    timed = np.asarray(times[1:])
    planner = config.planner
    return {
        "env": config.env, "model": model, "optimizer": planner.optimizer,
        "propagation": planner.propagation, "horizon": planner.horizon,
        "population": planner.population, "iterations": planner.iterations,
        "particles": planner.num_particles, "action_repeat": config.action_repeat,
        "median_s": float(np.median(timed)), "min_s": float(timed.min()),
        "cpu_s": cpu / actions,
        "first_action_s": times[0], "train_s": train["seconds"], "actions": actions,
    }


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, choices=envs.names() + sorted(NAMED_PRESETS),
                        help="a task (its preset) or a named preset, e.g. halfcheetah_cem")
    parser.add_argument("--models", nargs="+", default=["pe"])
    parser.add_argument("--actions", type=int, default=20, help="timed actions per model")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="config override, repeatable")
    return parser


def main(argv=None) -> None:
    args = make_parser().parse_args(argv)
    if args.actions < 1:
        raise SystemExit("--actions must be at least 1.")
    rows, load_before = [], os.getloadavg()[0]
    for model in args.models:
        try:
            rows.append(seconds_per_action(args.env, model, args.actions, args.overrides))
        except ValueError as error:
            raise SystemExit(str(error)) from None
    print("| env | model | planner | s/action (median) | s/action (min) | CPU s/action "
          "| first action (compile) | training (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        planner = (f"{r['optimizer']} {r['population']}x{r['iterations']}, horizon "
                   f"{r['horizon']}, {r['particles']} particles, {r['propagation']}")
        print(f"| {r['env']} | {r['model']} | {planner} | {r['median_s']:.3f} | "
              f"{r['min_s']:.3f} | {r['cpu_s']:.3f} | {r['first_action_s']:.1f} | "
              f"{r['train_s']:.1f} |")
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "backend": jax.default_backend(),
                      "load_1min": [load_before, os.getloadavg()[0]], "rows": rows}))


if __name__ == "__main__":
    main()
