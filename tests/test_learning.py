"""Learning bars (slow: tens of minutes on a 2-core CPU; run with `pytest -m slow`)."""

import pytest

from experiments import learning_bar


@pytest.mark.slow
@pytest.mark.parametrize("env", ["pendulum", "cartpole_swingup"])
def test_pets_reaches_the_learning_bar(env, tmp_path):
    _, passed = learning_bar.main(["--envs", env, "--seeds", "0", "1", "2",
                                   "--out", str(tmp_path), "--quiet"])
    assert passed[env]
