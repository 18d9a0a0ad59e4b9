"""GP dynamics against the exact dynamics: the same planner (the task preset's CEM, ``ts_inf``)
from the same start state, after the same random seed data.

    python experiments/gp_dynamics.py --envs pendulum --trials 1 --out docs/results/gp_dynamics

For each (env, seed): the ``GP`` run (and the other ``--variants``, by default the PE ensemble)
is an ordinary resumable run folder under ``OUT/runs`` (see ``experiments/common.py``); the
``exact`` episode plans with ``envs.jax_dynamics`` from the start state of the runs' trial
``--trials`` (same env seed). Writes ``OUT/results.md``: returns per seed, the gap to the exact
dynamics, and seconds per action. Resumable (exact episodes are cached in ``OUT/exact/``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict

import jax
import numpy as np

import envs
from agents import RunConfig, read_metrics
from agents.episode import env_seed, episode_key, run_episode
from agents.factory import build_optimizer
from agents.run import _TRIAL
from experiments.common import Variant, base_parser, command_line, fast, run_grid, select, tiny
from experiments.compare_models import model_variant
from experiments.presets import preset_config
from mbrl_bayes import planning
from mbrl_bayes.models.base import Transition

VARIANTS: Dict[str, Variant] = {"GP": model_variant("gp"), "PE": model_variant("pe"),
                               "DGP": model_variant("dgp")}


def small(config: RunConfig) -> RunConfig:
    """A 2-core budget for the planner (population 100, 10 elites, 3 iterations, 10 particles),
    the same for every variant and for the exact dynamics."""
    config.planner = dataclasses.replace(config.planner, population=100, elites=10,
                                         iterations=3, num_particles=10)
    return config


class ExactDynamics:
    """The task's true dynamics as a one-function, noiseless model (for ``planning.MPC``)."""

    num_functions = 1
    learns_reward = False

    def __init__(self, env: str):
        spec = envs.task(env)
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        self._step = envs.jax_dynamics(env)

    def sample_functions(self, params, key, k):
        return {"id": jax.numpy.zeros((k,))}

    def transition(self, params, fns, key, obs, act, sample_noise=True):
        return Transition(self._step(obs, act), None)

    def step(self, params, fns, key, obs, act):
        return self.transition(params, fns, key, obs, act).next_obs


class _PlannerAgent:
    def __init__(self, mpc: planning.MPC):
        self.mpc, self._state = mpc, None

    def begin_episode(self, key):
        self._state = self.mpc.reset({}, key)

    def act(self, obs, key):
        action, self._state = self.mpc.act({}, self._state, np.asarray(obs, np.float32), key)
        return np.asarray(action)


def exact_episode(config: RunConfig, trial: int) -> dict:
    """The return of the preset planner with the exact dynamics from trial ``trial``'s start
    state of a run with ``config`` (same env seed and episode key as ``agents.run.Run``)."""
    spec = envs.task(config.env)
    model = ExactDynamics(config.env)
    p = config.planner
    mpc = planning.MPC(model, build_optimizer(p), spec.reward_fn, spec.termination_fn,
                       horizon=p.horizon, action_low=spec.action_low,
                       action_high=spec.action_high, num_particles=p.num_particles,
                       propagation=p.propagation)
    env = envs.make(config.env)
    _, key, _ = jax.random.split(episode_key(config.seed, _TRIAL, trial), 3)
    length = config.episode_length or spec.episode_length
    out = run_episode(env, _PlannerAgent(mpc), key, env_seed(config.seed, _TRIAL, trial),
                      length)
    env.close()
    return {"return": out["return"], "seconds_per_action": out["seconds_plan"] / out["steps"]}


def _then_small(variant: Variant) -> Variant:
    return lambda config: small(variant(config))


def main(argv=None) -> str:
    parser = base_parser(__doc__.split("\n")[0], ["pendulum"])
    parser.set_defaults(budget="preset", variants=["GP", "PE"])
    parser.add_argument("--small-planner", action="store_true",
                        help="plan with population 100 x 3 iterations, 10 particles (see small)")
    args = parser.parse_args(argv)
    trials = {env: args.trials or 1 for env in args.envs}
    variants = select(VARIANTS, args.variants)
    if args.small_planner:
        variants = {label: _then_small(v) for label, v in variants.items()}
    grid = run_grid(args.out, variants, args.envs, args.seeds, trials, args.budget,
                    progress=not args.quiet, report_only=args.report_only)
    budgets = {"fast": fast, "tiny": tiny, "preset": lambda c: c}
    lines = ["# GP dynamics against the exact dynamics (same planner, same start state)", "",
             f"Command: `{command_line()}`", ""]
    for env in args.envs:
        os.makedirs(os.path.join(args.out, "exact"), exist_ok=True)
        trial = trials[env]
        header = ["seed", "exact", *variants, *(f"{v} - exact" for v in variants),
                  "s/action exact", *(f"s/action {v}" for v in variants)]
        lines += [f"## {env}, trial {trial}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for i, seed in enumerate(args.seeds):
            config = budgets[args.budget](preset_config(env))
            config.seed = seed
            if args.small_planner:
                config = small(config)
            path = os.path.join(args.out, "exact", f"{env}-s{seed}-t{trial}.json")
            if not os.path.exists(path):
                print(f"== {env} exact dynamics seed {seed}", flush=True)
                with open(path + ".tmp", "w") as f:
                    json.dump(exact_episode(config, trial), f)
                os.replace(path + ".tmp", path)
            with open(path) as f:
                exact = json.load(f)
            rows = {v: [r for r in read_metrics(grid[env][v][i]) if r["trial"] == trial][0]
                    for v in variants}
            cells = [str(seed), f"{exact['return']:.1f}"]
            cells += [f"{rows[v]['return']:.1f}" for v in variants]
            cells += [f"{rows[v]['return'] - exact['return']:+.1f}" for v in variants]
            cells += [f"{exact['seconds_per_action']:.3f}"]
            cells += [f"{rows[v]['seconds_per_action']:.3f}" for v in variants]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    print(main())
