"""Shape and finiteness checks at the models' entry points, the runtime-checkable
DynamicsModel protocol and ``models.check_model``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrl_bayes import models, planning
from mbrl_bayes.data import ReplayBuffer
from mbrl_bayes.models import DynamicsModel, check_model

KEY = jax.random.PRNGKey(0)
D, A = 3, 1


def make(name):
    kwargs = dict(obs_dim=D, act_dim=A, hidden_sizes=(4,))
    return {
        "pe": lambda: models.ProbabilisticEnsemble(**kwargs, ensemble_size=2),
        "vmlp": lambda: models.VariationalMLP(**kwargs),
        "dropout": lambda: models.MCDropoutMLP(**kwargs),
        "vlstm": lambda: models.VariationalLSTM(**kwargs, lstm_size=2, sequence_length=3),
    }[name]()


def abstract(model, k=2):
    """Params and ``k`` draws as shapes only (``jax.eval_shape``): the checks read shapes, so
    these tests compute nothing."""
    params = jax.eval_shape(lambda: model.init(KEY, np.zeros((2, D)), np.zeros((2, A))))
    return params, jax.eval_shape(lambda p: model.sample_functions(p, KEY, k), params)


def one_line_error(fn, message):
    with pytest.raises(ValueError, match=message) as info:
        fn()
    assert len(str(info.value).splitlines()) == 1
    return str(info.value)


@pytest.mark.parametrize("name", ["pe", "vmlp", "dropout", "vlstm"])
@pytest.mark.parametrize("method", ["step", "transition"])
def test_step_and_transition_want_the_function_axis_first(name, method):
    model = make(name)
    params, fns = abstract(model)
    fn, cls = getattr(model, method), type(model).__name__
    rows, acts = np.zeros((5, D)), np.zeros((5, A))  # [m, d]: the function axis is missing
    one_line_error(lambda: fn(params, fns, KEY, rows, acts),
                   rf"{cls}.{method}: obs must have shape \[k, m, 3\], got \(5, 3\)")
    # The same line while tracing (as under jit), instead of an error from inside JAX.
    one_line_error(lambda: jax.eval_shape(fn, params, fns, KEY, rows, acts),
                   rf"{cls}.{method}: obs must have shape \[k, m, 3\]")
    one_line_error(lambda: fn(params, fns, KEY, np.zeros((3, 5, D)), np.zeros((3, 5, A))),
                   r"obs \(3, 5, 3\) must have one row block per function draw, \[k=2, m, 3\]")
    one_line_error(lambda: fn(params, fns, KEY, np.zeros((2, 5, D)), np.zeros((2, 5, 2))),
                   r"act must have shape \[k, m, 1\], got \(2, 5, 2\)")
    one_line_error(lambda: fn(params, {"key": np.zeros((2, 2)), "x": np.zeros((3, 1))}, KEY,
                              np.zeros((2, 5, D)), np.zeros((2, 5, A))),
                   r"fns must be k function draws .* got leading axes \[2, 3\]")
    out = jax.eval_shape(fn, params, fns, KEY, np.zeros((2, 5, D)), np.zeros((2, 5, A)))
    assert (out if method == "step" else out.next_obs).shape == (2, 5, D)


@pytest.mark.parametrize("name", ["pe", "vlstm"])
def test_init_predict_and_sample_functions_check_their_inputs(name):
    model = make(name)
    cls = type(model).__name__
    one_line_error(lambda: model.init(KEY, np.zeros(D), np.zeros(A)),
                   rf"{cls}.init: obs must have shape \[n, 3\], got \(3,\)")
    params, _ = abstract(model)
    one_line_error(lambda: model.predict(params, KEY, np.zeros(D), np.zeros(A)),
                   rf"{cls}.predict: obs must have shape \[n, 3\], got \(3,\)")
    one_line_error(lambda: model.predict(params, KEY, np.zeros((2, 4, D)), np.zeros((2, 4, A))),
                   r"obs must have shape \[n, 3\], got \(2, 4, 3\)")
    nan_obs = np.zeros((4, D), np.float32)
    nan_obs[1, 2] = np.nan
    one_line_error(lambda: model.predict(params, KEY, nan_obs, np.zeros((4, A))),
                   rf"{cls}.predict: obs contains NaN or inf")
    for k in (0, 2.0, True):
        one_line_error(lambda k=k: model.sample_functions(params, KEY, k),
                       rf"{cls}.sample_functions: k must be an int >= 1")
    mean = jax.eval_shape(lambda p: model.predict(p, KEY, np.zeros((4, D)),
                                                  np.zeros((4, A))).mean(), params)
    assert mean.shape == (4, D)


def test_a_recurrent_carry_must_match_the_rows():
    model = make("vlstm")
    params, fns = abstract(model)
    carry = {"hidden": np.zeros((2, 4, 2)), "cell": np.zeros((2, 4, 2))}
    obs, act = np.zeros((2, 5, D)), np.zeros((2, 5, A))
    one_line_error(lambda: model.transition(params, fns, KEY, obs, act, carry=carry),
                   r"carry leaves must be \[k, m, \.\.\.\] = \[2, 5\], got \(2, 4, 2\)")
    one_line_error(lambda: model.predict_sequence_moments(params, KEY, np.zeros((4, D)),
                                                          np.zeros((4, A))),
                   r"obs must have shape \[n, T, 3\], got \(4, 3\)")
    tr = jax.eval_shape(lambda p, f: model.transition(p, f, KEY, obs, act,
                                                      carry=model.initial_carry(p, f, 5)),
                        params, fns)
    assert tr.carry["hidden"].shape == (2, 5, 2)


def test_non_finite_data_is_refused_where_it_enters():
    model = make("pe")
    params, _ = abstract(model)
    mpc = planning.MPC(model, planning.RandomShooting(population_size=4),
                       lambda o, a, n: -jnp.sum(n**2, -1), horizon=2, num_particles=2,
                       action_low=-1.0, action_high=1.0)
    state = jax.eval_shape(mpc._reset_impl, params, KEY)  # reset's shapes, nothing compiled
    # A jax array (not only numpy) with a NaN is refused before the jitted plan.
    one_line_error(lambda: mpc.act(params, state, jnp.array([0.0, jnp.nan, 0.0]), KEY),
                   "MPC: obs contains NaN or inf")
    buffer = ReplayBuffer(8, D, A)
    one_line_error(lambda: buffer.add(np.zeros(D), np.array([np.inf]), np.zeros(D), 0.0, False,
                                      False), "act contains NaN or inf")
    data = {"obs": np.zeros((6, D), np.float32), "act": np.zeros((6, A), np.float32),
            "next_obs": np.zeros((6, D), np.float32), "reward": np.zeros(6, np.float32)}
    data["reward"][2] = np.nan
    one_line_error(lambda: models.train(model, params, data, KEY, max_epochs=1),
                   "reward contains NaN or inf")
    assert len(buffer) == 0


@pytest.mark.parametrize("name", ["pe", "vmlp", "dropout", "vlstm"])
def test_every_model_is_a_dynamics_model(name):
    model = make(name)
    assert isinstance(model, DynamicsModel)
    assert check_model(model) == []


@pytest.mark.parametrize("name", ["pe", "vlstm"])
def test_check_model_runs_a_complete_model_cleanly(name):
    assert check_model(make(name), KEY) == []


def test_check_model_runs_fit_stats_on_the_host_as_train_does():
    # The GP's fit_stats reads values (it places inducing points on data rows): not traceable,
    # and it need not be (models.train calls it outside jit).
    model = models.GaussianProcessDynamics(obs_dim=D, act_dim=A, num_inducing=4,
                                           hyperparameter_steps=2)
    assert check_model(model, KEY) == []


class Sketch:
    """A model author's first draft: no reward flag, no fit_stats, evaluate or predict."""

    obs_dim, act_dim, num_functions = D, 0, None

    def init(self, key, obs, act):
        return {"w": jnp.zeros((D + A, D))}

    def loss(self, params, key, batch):
        return jnp.zeros(()), {}

    def sample_functions(self, params, key, k):
        return {"key": jax.random.split(key, k)}

    def transition(self, params, fns, key, obs, act, sample_noise=True):
        return models.Transition(obs, None)

    def step(self, params, fns, key, obs, act):
        return obs


def test_check_model_lists_each_missing_piece():
    assert not isinstance(Sketch(), DynamicsModel)
    assert check_model(Sketch()) == [
        "Sketch.act_dim must be a positive int (the act size), got 0.",
        "Sketch.rollout_states is missing: None (the planner steps transition), or a "
        "whole-horizon rollout (see DynamicsModel).",
        "Sketch.learns_reward is missing: a bool (MPC needs a reward_fn when it is False).",
        "Sketch.predict() is missing (the DynamicsModel contract).",
        "Sketch.fit_stats() is missing (models.train calls it).",
        "Sketch.evaluate() is missing (models.train calls it).",
    ]


class WrongOutputs(models.ProbabilisticEnsemble):
    """Every method present, but loss, evaluate and transition return what train/MPC cannot
    use."""

    def loss(self, params, key, batch):
        loss, aux = super().loss(params, key, batch)
        return loss, {"nll": aux["nll"]}

    def evaluate(self, params, key, batch):
        return {"score": super().evaluate(params, key, batch)["score"]}

    def transition(self, params, fns, key, obs, act, sample_noise=True):
        return models.Transition(obs[..., :1], None)


def test_check_model_runs_the_model_to_find_wrong_outputs():
    model = WrongOutputs(obs_dim=D, act_dim=A, hidden_sizes=(4,), ensemble_size=2)
    assert isinstance(model, DynamicsModel) and check_model(model) == []
    problems = check_model(model, KEY)
    assert problems == [
        "WrongOutputs.loss must return (scalar loss, metrics dict with 'mse'); models.train "
        "logs metrics['mse'].",
        "WrongOutputs.evaluate must return a dict with ['score', 'nll_score', 'mse', 'nll'] "
        "(models.train stops early on them); missing ['nll_score', 'mse', 'nll'].",
        "WrongOutputs.transition must return a Transition with next_obs [k, m, d] = [2, 3, 3], "
        "got (2, 3, 1).",
    ]
