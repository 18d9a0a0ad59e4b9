"""Run configuration: plain dataclasses, written to and read from JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

# The names a run config (and the CLI) accepts for ``model.name`` and ``agent``; the factory
# dispatches on them. Optimizer, propagation, early-stopping, estimator and activation names live
# with what they name (``planning.OPTIMIZERS``, ``planning.PROPAGATIONS``, ...).
ENSEMBLE_MODEL_NAMES = ("pe", "de", "p", "d")  # the PETS variants
MODEL_NAMES = ENSEMBLE_MODEL_NAMES + ("vmlp", "vlstm", "dropout", "network", "gp", "dgp")
AGENT_NAMES = ("pets", "thompson", "random")


@dataclasses.dataclass
class ModelConfig:
    """Which dynamics model (see ``MODEL_NAMES``) and its size.

    ``pe``/``de``/``p``/``d``: the PETS probabilistic/deterministic (ensemble) variants;
    ``vmlp``: variational MLP (Bayesian layers, ``estimator`` reparameterization or flipout);
    ``vlstm``: variational LSTM over the history (``lstm_size``, trained on windows of
    ``sequence_length`` steps; plans from a fresh history at each action);
    ``dropout``: MC-dropout MLP.
    ``gp``: sparse variational GP dynamics (``num_inducing`` inducing points per output);
    ``dgp``: deep GP of ``dgp_depth`` layers (``hidden_sizes``/``activation`` do not apply).
    ``network``: ``models.NetworkDynamics`` of the user's network named by ``network``
    (``"path/to/file.py:function"`` or ``"package.module:function"``); the run records the
    name but never imports it by itself: whoever builds the model passes the function
    (``agents.load_network(spec)``; the CLI's ``--network``).
    ``fused_kernel`` (``pe``/``de``/``p``/``d`` on a GPU; see ``FUSED_KERNELS``): plan through
    the Pallas kernels of ``mbrl_bayes.kernels`` (a ``KernelEnsemble`` with that backend:
    ``"triton"`` or ``"mosaic"``, Hopper and later); ``None``: XLA.
    """

    name: str = "pe"
    hidden_sizes: Tuple[int, ...] = (200, 200, 200)
    ensemble_size: int = 5
    num_elites: Optional[int] = None
    learn_reward: bool = False
    activation: str = "silu"
    dropout_rate: float = 0.003
    estimator: str = "flipout"
    prior_stddev: float = 1.0
    lstm_size: int = 64
    sequence_length: int = 10
    fused_kernel: Optional[str] = None
    network: Optional[str] = None
    num_inducing: int = 128
    dgp_depth: int = 2


# The Pallas backends a model may plan with (``mbrl_bayes.kernels.BACKENDS``, which is imported
# only when a kernel is asked for).
FUSED_KERNELS = ("triton", "mosaic")


def fused_kernel_kind(model: ModelConfig) -> Optional[str]:
    """``model.fused_kernel`` as one of ``FUSED_KERNELS``, or None (``false`` and ``""`` too:
    run configs written before the kernels had names); a one-line ValueError otherwise."""
    kind = model.fused_kernel
    if kind is False or kind is None or kind == "":
        return None
    if kind not in FUSED_KERNELS:
        raise ValueError(f"fused_kernel must be one of {FUSED_KERNELS} or null, got {kind!r}.")
    return kind


def check_fused_kernel(model: ModelConfig) -> None:
    """Raises a one-line ValueError if ``model.fused_kernel`` is set where it cannot run."""
    if fused_kernel_kind(model) is None:
        return
    if model.name not in ENSEMBLE_MODEL_NAMES:
        raise ValueError(f"fused_kernel applies to the ensemble models "
                         f"({', '.join(ENSEMBLE_MODEL_NAMES)}), not "
                         f"{model.name!r}.")
    import jax

    if jax.default_backend() != "gpu":
        raise ValueError("fused_kernel needs a GPU (elsewhere the Pallas kernel only runs in its "
                         "slow interpreter).")


def check_network(model: ModelConfig) -> None:
    """Raises a one-line ValueError unless ``model.network`` is set exactly for ``network``."""
    if model.name == "network" and not model.network:
        raise ValueError("model 'network' needs the network's name, 'path/to/file.py:function' "
                         "or 'package.module:function' (--network).")
    if model.network and model.name != "network":
        raise ValueError(f"network={model.network!r} is for model 'network', not "
                         f"{model.name!r}.")


@dataclasses.dataclass
class TrainConfig:
    """Arguments of ``mbrl_bayes.models.train``."""

    batch_size: int = 32
    max_epochs: int = 50
    patience: int = 5
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5
    holdout_fraction: float = 0.1
    early_stopping: str = "mse"


@dataclasses.dataclass
class PlannerConfig:
    """MPC: trajectory optimizer (a key of ``planning.OPTIMIZERS``), horizon, particles,
    propagation (one of ``planning.PROPAGATIONS``)."""

    optimizer: str = "cem"
    horizon: int = 15
    population: int = 350
    elites: int = 35
    iterations: int = 5
    alpha: float = 0.1
    num_particles: int = 20
    propagation: str = "ts_inf"
    beta: float = 1.0  # optimism weight of the 'optimistic' and 'hucrl' propagations
    noise_beta: float = 2.0  # iCEM colored-noise exponent
    temperature: float = 1.0  # MPPI
    bonus: Optional[str] = None  # a key of planning.BONUSES (exploration bonus), or None
    bonus_scale: float = 1.0  # its weight per step


@dataclasses.dataclass
class RunConfig:
    """One training run: env, agent, model, planner and the trial loop."""

    env: str = "cartpole_swingup"
    agent: str = "pets"
    seed: int = 0
    trials: int = 10
    seed_steps: int = 200  # random-action steps collected before the first trial
    episode_length: Optional[int] = None  # None: the task's own horizon
    action_repeat: int = 1  # env steps per agent step (envs.task(env, action_repeat))
    eval_calibration: bool = True
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    planner: PlannerConfig = dataclasses.field(default_factory=PlannerConfig)

    def validate(self) -> "RunConfig":
        """Returns ``self``, or raises a one-line ValueError naming every field no run can use;
        see ``agents.validation``."""
        from agents.validation import validate_config

        return validate_config(self)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunConfig":
        return _from_dict(cls, data)

    @classmethod
    def load(cls, path: str) -> "RunConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))


T = TypeVar("T")


def _from_dict(cls: Type[T], data: Dict[str, Any]) -> T:
    """Builds dataclass ``cls`` from ``data``, recursing into nested dataclasses; unknown keys
    raise ValueError (a typo in a config file must not be silently ignored)."""
    if not isinstance(data, dict):
        raise ValueError(f"Expected a JSON object for {cls.__name__}, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} keys: {', '.join(unknown)}.")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory if fields[name].default_factory is not \
            dataclasses.MISSING else None
        if default is not None and dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(default, value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
