"""The GPU kernels are opt-in: importing the library, the planner, the agents and the CLI loads
neither ``mbrl_bayes.kernels`` nor Pallas (checked in a fresh interpreter, since other tests
import the kernels)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loaded_after(statement: str) -> list:
    code = (f"import json, sys; {statement}; print(json.dumps(sorted(m for m in sys.modules "
            f"if m.startswith(('jax.experimental.pallas', 'mbrl_bayes.kernels')))))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_models_planning_agents_and_cli_import_no_kernel():
    assert _loaded_after("import mbrl_bayes.models, mbrl_bayes.planning, agents, "
                         "experiments.cli") == []
    # What the check looks for: asking for a kernel loads the package (Pallas itself only once
    # a kernel is traced).
    assert "mbrl_bayes.kernels.fused_rollout" in _loaded_after("import mbrl_bayes.kernels")
