"""Model-training throughput: transitions per second through the jitted update step.

    python benchmarks/training.py                       # PETS halfcheetah model size
    python benchmarks/training.py --model vmlp --batch-size 256

Builds the model at the PETS halfcheetah size (obs 18, act 6, 4 x 200 SiLU, ensemble 5 for
``pe``), runs ``mbrl_bayes.models.train`` once on random data to compile, then times epochs of the
same jitted update step that ``train`` uses, on [members, batch, ...] bootstrap batches. A
"sample" is one transition seen by one member (an ensemble of 5 on a batch of 256 processes
1280 samples per update). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from agents import ModelConfig, build_model
from agents.config import MODEL_NAMES
from mbrl_bayes.models import train


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Every model but the variational LSTM (not timed by this script).
    parser.add_argument("--model", default="pe",
                        choices=[name for name in MODEL_NAMES if name != "vlstm"])
    parser.add_argument("--obs-dim", type=int, default=18)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200, 200, 200, 200])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-data", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs")
    args = parser.parse_args(argv)

    model = build_model(ModelConfig(name=args.model, hidden_sizes=tuple(args.hidden)),
                        args.obs_dim, args.act_dim)
    rng = np.random.default_rng(0)
    n = args.num_data
    obs = rng.normal(size=(n, args.obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, args.act_dim)).astype(np.float32)
    data = {"obs": obs, "act": act, "next_obs": obs + 0.1 * np.tanh(obs + act.sum(-1)[:, None]),
            "reward": np.zeros(n, np.float32)}
    params = model.init(jax.random.PRNGKey(0), obs[:1], act[:1])
    kwargs = dict(batch_size=args.batch_size, holdout_fraction=0.05, patience=10**6)
    # Compile (one epoch), then time full epochs with the same compiled step.
    params, _ = train(model, params, data, jax.random.PRNGKey(1), max_epochs=1, **kwargs)
    start = time.perf_counter()
    params, history = train(model, params, data, jax.random.PRNGKey(2), max_epochs=args.epochs,
                            **kwargs)
    seconds = time.perf_counter() - start
    members = getattr(model, "num_members", 1)
    updates_per_epoch = history["num_train"][0] // args.batch_size
    updates = updates_per_epoch * len(history["epoch"])
    samples = updates * args.batch_size * members
    dev = jax.devices()[0]
    result = {
        "model": args.model,
        "members": members,
        "hidden": args.hidden,
        "batch_size": args.batch_size,
        "updates": updates,
        "seconds": seconds,
        "updates_per_second": updates / seconds,
        "samples_per_second": samples / seconds,
        "device": f"{dev.platform}:{dev.device_kind} ({platform.machine()}, "
                  f"{os.cpu_count()} cpus)",
        "note": "seconds include the per-epoch holdout evaluation and host-side batching",
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
