"""How well calibrated is each dynamics model? Train each model on data collected by a fixed
policy, then report held-out NLL, RMSE, 50/90% coverage, calibration error, sharpness, the
epistemic/aleatoric split and the k-step open-loop rollout error for k = 1..horizon.

    python experiments/calibration.py --out docs/results/calibration
    python experiments/calibration.py --envs pendulum --seeds 0 1 2 --out results/calib
    python experiments/calibration.py --envs pendulum_noisy --models oracle PE "variational MLP" \
        --out results/calib_noisy   # noise of known std: 'oracle' is the true predictive

Writes ``results.md`` (mean ± std over seeds), ``reliability_<env>.png`` (expected vs observed
quantile coverage) and ``kstep_<env>.png``. Resumable: finished (env, model, seed) cells are
kept in ``cells/`` and skipped when the command is rerun. ``--engine ray`` evaluates each cell as
a Ray task (see ``experiments/engine.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

import envs
from agents import ModelConfig, build_model
from envs import noisy
from experiments.common import command_line
from experiments.engine import Job, add_engine_args, engine_from_args, run_jobs
from mbrl_bayes import metrics
from mbrl_bayes.data import ReplayBuffer
from mbrl_bayes.models import VariationalLSTM, train

MODELS: Dict[str, ModelConfig] = {
    "D": ModelConfig(name="d"),
    "P": ModelConfig(name="p"),
    "DE": ModelConfig(name="de"),
    "PE": ModelConfig(name="pe"),
    "variational MLP": ModelConfig(name="vmlp"),
    "MC-dropout": ModelConfig(name="dropout"),
    "variational LSTM": ModelConfig(name="vlstm"),
    "GP": ModelConfig(name="gp"),
    "deep GP": ModelConfig(name="dgp"),
}
# The true predictive of a noisy task (``envs.noisy.next_obs_moments``): what a calibrated
# model should match; a row only for the ``_noisy`` envs.
ORACLE = "oracle"


def collect(env_name: str, episodes: int, seed: int, episode_length: int) -> ReplayBuffer:
    """Episodes of a fixed exploratory policy: temporally correlated random actions
    (an Ornstein-Uhlenbeck-like process), the same for every model."""
    spec = envs.task(env_name)
    env = envs.make(env_name)
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(episodes * episode_length, spec.obs_dim, spec.act_dim)
    low, high = spec.action_low, spec.action_high
    for _ in range(episodes):
        obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
        noise = np.zeros(spec.act_dim)
        for t in range(episode_length):
            noise = 0.8 * noise + 0.6 * rng.standard_normal(spec.act_dim)
            act = np.clip((low + high) / 2 + (high - low) / 2 * noise, low, high)
            act = act.astype(np.float32)
            nxt, rew, term, trunc, _ = env.step(act)
            last = term or trunc or t == episode_length - 1
            buf.add(obs, act, nxt, rew, term, last)
            obs = nxt
            if last:
                break
    env.close()
    return buf


def _model(cfg: ModelConfig, spec, hidden, sequence_length):
    # The LSTM's head is two layers: the recurrent cell is its first hidden layer.
    hidden = hidden[:2] if cfg.name == "vlstm" else hidden
    cfg = dataclasses.replace(cfg, hidden_sizes=hidden, sequence_length=sequence_length)
    return build_model(cfg, spec.obs_dim, spec.act_dim,
                       ignored_obs_dims=spec.absolute_position_dims)


def _oracle_cell(env_name: str, seed: int, args: argparse.Namespace) -> dict:
    """The metrics of the exact next-observation moments of a ``_noisy`` task."""
    spec = envs.task(env_name)
    length = args.episode_length or spec.episode_length
    t = collect(env_name, args.test_episodes, 10_000 + seed, length).as_dict()
    mean, var = noisy.next_obs_moments(env_name, t["obs"], t["act"])
    pred, y = (mean[None], var[None]), t["next_obs"]
    expected, observed = metrics.calibration_curve(pred, y)
    return {
        "nll": float(metrics.nll(pred, y)), "rmse": float(metrics.rmse(pred, y)),
        "coverage50": float(metrics.coverage(pred, y, 0.5)),
        "coverage90": float(metrics.coverage(pred, y, 0.9)),
        "calibration_error": float(metrics.calibration_error(pred, y)),
        "sharpness": float(metrics.sharpness(pred)), "epistemic_var": 0.0,
        "aleatoric_var": float(jnp.mean(var)), "expected": np.asarray(expected).tolist(),
        "observed": np.asarray(observed).tolist(), "train_seconds": 0.0, "epochs": 0,
    }


def evaluate_cell(env_name: str, label: str, seed: int, args: argparse.Namespace) -> dict:
    if label == ORACLE:
        return _oracle_cell(env_name, seed, args)
    spec = envs.task(env_name)
    length = args.episode_length or spec.episode_length
    data = collect(env_name, args.train_episodes, seed, length)
    test = collect(env_name, args.test_episodes, 10_000 + seed, length)
    model = _model(MODELS[label], spec, tuple(args.hidden_sizes), args.sequence_length)
    key = jax.random.PRNGKey(seed)
    params = model.init(key, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)))
    start = time.perf_counter()
    params, history = train(model, params, data, jax.random.fold_in(key, 1),
                            batch_size=args.batch_size, max_epochs=args.max_epochs,
                            patience=args.patience, early_stopping=args.early_stopping)
    seconds = time.perf_counter() - start
    t = test.as_dict()
    n_ep = args.test_episodes
    obs = t["obs"].reshape(n_ep, length, -1)
    act = t["act"].reshape(n_ep, length, -1)
    nxt = t["next_obs"].reshape(n_ep, length, -1)
    eval_key = jax.random.fold_in(key, 2)
    if isinstance(model, VariationalLSTM):
        means, variances = model.predict_sequence_moments(params, eval_key, obs, act)
        means = means.reshape(means.shape[0], -1, spec.obs_dim)
        variances = variances.reshape(means.shape)
    else:
        means, variances = model.predict_moments(params, eval_key, t["obs"], t["act"])
    pred = (means, variances)
    y = t["next_obs"]
    expected, observed = metrics.calibration_curve(pred, y)
    cell = {
        "nll": float(metrics.nll(pred, y)),
        "rmse": float(metrics.rmse(pred, y)),
        "coverage50": float(metrics.coverage(pred, y, 0.5)),
        "coverage90": float(metrics.coverage(pred, y, 0.9)),
        "calibration_error": float(metrics.calibration_error(pred, y)),
        "sharpness": float(metrics.sharpness(pred)),
        "epistemic_var": float(jnp.mean(metrics.epistemic_variance(pred))),
        "aleatoric_var": float(jnp.mean(metrics.aleatoric_variance(pred))),
        "expected": np.asarray(expected).tolist(),
        "observed": np.asarray(observed).tolist(),
        "train_seconds": seconds,
        "epochs": len(history["epoch"]),
    }
    if not isinstance(model, VariationalLSTM):
        k = model.num_functions or 8
        fns = model.sample_functions(params, jax.random.fold_in(key, 3), k)

        def mean_step(o, a):  # the mean over function draws, no aleatoric noise
            o_k = jnp.broadcast_to(o, (k,) + o.shape)
            a_k = jnp.broadcast_to(a, (k,) + a.shape)
            return model.transition(params, fns, key, o_k, a_k, sample_noise=False
                                    ).next_obs.mean(0)

        traj = np.concatenate([obs, nxt[:, -1:]], axis=1)
        cell["kstep_rmse"] = np.asarray(metrics.kstep_rollout_error(
            mean_step, traj, act, horizon=args.horizon)).tolist()
    return cell


def _cell_job(path: str, env_name: str, label: str, seed: int, args: argparse.Namespace,
              verbose: bool = True) -> None:
    """Evaluates one (env, model, seed) cell and writes it to ``path`` (atomically)."""
    if verbose:
        print(f"== {env_name} {label} seed {seed}", flush=True)
    cell = evaluate_cell(env_name, label, seed, args)
    with open(path + ".tmp", "w") as f:
        json.dump(cell, f)
    os.replace(path + ".tmp", path)


def _fmt(values: List[float], fmt: str = ".3g") -> str:
    values = np.asarray(values, float)
    return format(values[0], fmt) if values.size == 1 else \
        f"{values.mean():{fmt}} ± {values.std():{fmt}}"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["pendulum", "cartpole_swingup"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        choices=list(MODELS) + [ORACLE],
                        help=f"{ORACLE!r}: the true predictive of the _noisy envs")
    parser.add_argument("--train-episodes", type=int, default=10)
    parser.add_argument("--test-episodes", type=int, default=3)
    parser.add_argument("--episode-length", type=int, default=None)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[200, 200, 200])
    parser.add_argument("--sequence-length", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--early-stopping", choices=["mse", "nll"], default="mse",
                        help="holdout score that stops training (models.train)")
    parser.add_argument("--horizon", type=int, default=15, help="k-step error for k=1..horizon")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (--engine ray)")
    add_engine_args(parser)
    args = parser.parse_args(argv)
    if ORACLE in args.models and not all(e.endswith("_noisy") for e in args.envs):
        parser.error(f"model {ORACLE!r} exists only for the _noisy envs, not for "
                     f"{[e for e in args.envs if not e.endswith('_noisy')]}.")
    engine = engine_from_args(args)
    os.makedirs(os.path.join(args.out, "cells"), exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Calibration of the dynamics models", "", f"Command: `{command_line()}`", "",
             f"Data: {args.train_episodes} training and {args.test_episodes} held-out episodes "
             "of a fixed exploratory policy (correlated random actions) per seed. Metrics on the "
             "held-out episodes' next observations; NLL in nats per transition (joint over "
             "dimensions), sharpness = mean predictive std.", ""]
    paths = {(env_name, label, seed): os.path.join(
        args.out, "cells", f"{env_name}-{label.replace(' ', '_')}-s{seed}.json")
        for env_name in args.envs for label in args.models for seed in args.seeds}
    jobs = [Job(f"{env_name} {label} seed {seed}", _cell_job,
                (path, env_name, label, seed, args, engine.kind == "local"))
            for (env_name, label, seed), path in paths.items() if not os.path.exists(path)]
    failed = run_jobs(jobs, engine, progress=not args.quiet, done=len(paths) - len(jobs))
    for env_name in args.envs:
        cells: Dict[str, List[dict]] = {}
        for label in args.models:
            for seed in args.seeds:
                path = paths[env_name, label, seed]
                if os.path.exists(path):
                    with open(path) as f:
                        cells.setdefault(label, []).append(json.load(f))
        cols = [("NLL", "nll"), ("RMSE", "rmse"), ("50% cov.", "coverage50"),
                ("90% cov.", "coverage90"), ("calib. error", "calibration_error"),
                ("sharpness", "sharpness"), ("epistemic var", "epistemic_var"),
                ("aleatoric var", "aleatoric_var"), ("train s", "train_seconds")]
        lines += [f"## {env_name}", "", "| model | " + " | ".join(c for c, _ in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for label, runs in cells.items():
            lines.append(f"| {label} | " + " | ".join(
                _fmt([r[key] for r in runs]) for _, key in cols) + " |")

        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
        for label, runs in cells.items():
            ax.plot(runs[0]["expected"], np.mean([r["observed"] for r in runs], 0), marker=".",
                    label=label)
        ax.set_xlabel("expected quantile level")
        ax.set_ylabel("observed fraction below the predicted quantile")
        ax.set_title(f"Reliability diagram: {env_name}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, f"reliability_{env_name}.png"), dpi=100)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        kstep_rows = []
        for label, runs in cells.items():
            if "kstep_rmse" not in runs[0]:
                continue
            curve = np.mean([r["kstep_rmse"] for r in runs], 0)
            ax.plot(np.arange(1, len(curve) + 1), curve, marker=".", label=label)
            kstep_rows.append((label, curve))
        ax.set_xlabel("k (open-loop steps)")
        ax.set_ylabel("RMSE of the mean prediction")
        ax.set_yscale("log")
        ax.set_title(f"k-step rollout error: {env_name}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, f"kstep_{env_name}.png"), dpi=100)
        plt.close(fig)
        if kstep_rows:
            ks = [1, 2, 5, 10, args.horizon]
            ks = sorted({k for k in ks if k <= args.horizon})
            lines += ["", "k-step open-loop RMSE (mean over seeds):", "",
                      "| model | " + " | ".join(f"k={k}" for k in ks) + " |",
                      "|---|" + "---|" * len(ks)]
            for label, curve in kstep_rows:
                lines.append(f"| {label} | " + " | ".join(f"{curve[k - 1]:.3g}" for k in ks)
                             + " |")
        lines += ["", f"![reliability {env_name}](reliability_{env_name}.png) "
                      f"![k-step {env_name}](kstep_{env_name}.png)", ""]
    if failed:
        lines += ["## Cells that did not finish", "",
                  *(f"- {name}: {error}" for name, error in failed.items()), ""]
    text = "\n".join(lines)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    print(main())
