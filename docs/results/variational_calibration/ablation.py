"""Ablation behind docs/results/variational_calibration: one row per model variant.

    PYTHONPATH=$PWD python docs/results/variational_calibration/ablation.py \
        ENV VARIANTS SEEDS [EPISODES]

VARIANTS is a comma-separated list of ``model[:option=value...]``: model ``vmlp``
(VariationalMLP), ``pe`` (ProbabilisticEnsemble), ``drop`` (MCDropoutMLP) or ``bll`` (a
NetworkDynamics whose last layer alone is Bayesian, through ``bl.bayesian``'s predicate; option
``prior``); options are constructor arguments, plus ``est`` (estimator), ``epochs``, ``pat``
(patience) and ``es`` (early stopping). Data and training as experiments/calibration.py with
``--train-episodes EPISODES --hidden-sizes 64 64 64 --max-epochs 50``: 3 held-out episodes;
c90 = 90% coverage, ce = calibration error, epi/ale = mean epistemic/aleatoric variance,
true_var = the mean true noise variance (``_noisy`` envs).
"""
import sys
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import noisy
from experiments.calibration import collect
from mbrl_bayes import layers as bl
from mbrl_bayes import metrics, models

ENV = sys.argv[1]
variants = sys.argv[2].split(",")
seeds = [int(s) for s in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0]
EPIS = int(sys.argv[4]) if len(sys.argv) > 4 else 15
spec = envs.task(ENV)
H = (64, 64, 64)

def build(v):
    kw = dict(obs_dim=spec.obs_dim, act_dim=spec.act_dim, hidden_sizes=H)
    opts = dict(x.split("=") for x in v.split(":")[1:])
    name = v.split(":")[0]
    f = {k: float(x) for k, x in opts.items() if k not in ("est", "epochs", "pat", "es", "hid")}
    if name == "vmlp":
        return models.VariationalMLP(**kw, estimator=opts.get("est", "flipout"), **f)
    if name == "pe":
        return models.ProbabilisticEnsemble(**kw, **f)
    if name == "drop":
        return models.MCDropoutMLP(**kw, **f)
    if name == "bll":  # Bayesian last layer via bl.bayesian
        ps = f.pop("prior", 1.0)
        def net(x):
            for i, h in enumerate(H):
                x = jax.nn.silu(hk.Linear(h, name=f"l{i}")(x))
            return hk.Linear(2 * spec.obs_dim, name="out")(x)
        pred = lambda m, n, s: m.endswith("out") and n == "w"
        bnet = bl.bayesian(net, predicate=pred, regularizer=bl.NormalKLDivergence(stddev=ps))
        return models.NetworkDynamics(bnet, obs_dim=spec.obs_dim, act_dim=spec.act_dim, **f)
    raise ValueError(v)

rows = {}
for seed in seeds:
    data = collect(ENV, EPIS, seed, spec.episode_length)
    test = collect(ENV, 3, 10_000 + seed, spec.episode_length).as_dict()
    for v in variants:
        opts = dict(x.split("=") for x in v.split(":")[1:])
        model = build(v)
        key = jax.random.PRNGKey(seed)
        params = model.init(key, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)))
        t0 = time.time()
        params, hist = models.train(
            model, params, data, jax.random.fold_in(key, 1), batch_size=64,
            max_epochs=int(opts.get("epochs", 50)), patience=int(opts.get("pat", 5)),
            early_stopping=opts.get("es", "mse"))
        secs = time.time() - t0
        pred = model.predict_moments(params, jax.random.fold_in(key, 2), test["obs"], test["act"])
        y = test["next_obs"]
        om, ov = (noisy.next_obs_moments(ENV, test["obs"], test["act"])
                  if ENV.endswith("noisy") else (None, None))
        r = dict(nll=float(metrics.nll(pred, y)), rmse=float(metrics.rmse(pred, y)),
                 c90=float(metrics.coverage(pred, y, 0.9)),
                 ce=float(metrics.calibration_error(pred, y)),
                 epi=float(jnp.mean(metrics.epistemic_variance(pred))),
                 ale=float(jnp.mean(metrics.aleatoric_variance(pred))),
                 ep=len(hist["epoch"]), s=secs)
        if om is not None:
            r["true_var"] = float(ov.mean())
        rows.setdefault(v, []).append(r)
        print(v, seed, {k: round(x, 5) for k, x in r.items()}, flush=True)
print("==== mean over seeds")
for v, rs in rows.items():
    print(f"{v:50s}", {k: round(float(np.mean([r[k] for r in rs])), 5) for k in rs[0]})
