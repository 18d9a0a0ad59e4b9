"""Candidates sharded over two (forced host) devices plan exactly as on one device."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np
    from mbrl_bayes.models.base import Transition
    from mbrl_bayes.planning import CEM, MPC

    class NoisyLinear:
        # Function i: s' = s + W_i a + 0.1 * noise; W_i differs per function.
        obs_dim, act_dim, num_functions, learns_reward = 2, 2, 2, False
        rollout_states = None

        def sample_functions(self, params, key, k):
            return {"w": jnp.tile(params["w"], (k // 2, 1, 1))}

        def transition(self, params, fns, key, obs, act, sample_noise=True):
            nxt = obs + jnp.einsum("kma,kda->kmd", act, fns["w"])
            if sample_noise:
                nxt = nxt + 0.1 * jax.random.normal(key, nxt.shape)
            return Transition(nxt, None)

    assert jax.device_count() == 2, jax.devices()
    params = {"w": jnp.stack([jnp.eye(2), 0.5 * jnp.eye(2)])}
    reward = lambda s, a, s2: -jnp.sum((s2 - 1.0) ** 2, -1)
    out = {}
    for name, devices in (("two", None), ("one", jax.devices()[:1])):
        for propagation in ("ts_inf", "ts1"):
            mpc = MPC(NoisyLinear(), CEM(population_size=16, num_elites=4, num_iterations=3),
                      reward, None, horizon=4, num_particles=4, propagation=propagation,
                      action_low=-1.0, action_high=1.0, devices=devices)
            state = mpc.reset(params, jax.random.PRNGKey(0))
            plan, _, _ = mpc.plan(params, state, jnp.zeros(2), jax.random.PRNGKey(1))
            actions = plan[:1]
            if propagation == "ts_inf":  # a batch of environments, too
                bstate = mpc.reset(params, jax.random.PRNGKey(0), batch_size=2)
                actions, _ = mpc.act(params, bstate, jnp.zeros((2, 2)), jax.random.PRNGKey(2))
            hlo = mpc._plan_one.lower(params, state, jnp.zeros(2), jax.random.PRNGKey(1))
            out[name + "/" + propagation] = {
                "plan": np.asarray(plan).tolist(),
                "actions": np.asarray(actions).tolist(),
                "sharded": "candidates" in hlo.as_text() or "devices=[2" in hlo.as_text(),
                "num_devices": mpc.num_devices,
            }
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.heavy  # a subprocess with two host devices, ~13 s: .ci/run's second pytest
def test_two_devices_give_the_same_plan_as_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])

    for propagation in ("ts_inf", "ts1"):
        two, one = out["two/" + propagation], out["one/" + propagation]
        assert two["num_devices"] == 2 and one["num_devices"] == 1
        assert two["sharded"] and not one["sharded"]
        np.testing.assert_allclose(two["plan"], one["plan"], atol=1e-5)
        np.testing.assert_allclose(two["actions"], one["actions"], atol=1e-5)
