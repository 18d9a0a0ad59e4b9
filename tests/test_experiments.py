"""The comparison scripts run end to end in a tiny configuration and write tables and plots."""

import os

from experiments import calibration, compare_models, compare_propagation


def test_compare_models_tiny(tmp_path):
    out = str(tmp_path / "models")
    text = compare_models.main(["--envs", "pendulum", "--seeds", "0", "--trials", "1",
                                "--budget", "tiny", "--variants", "DE", "variational MLP",
                                "--out", out, "--quiet"])
    assert "| DE | 1 |" in text and "| variational MLP | 1 |" in text
    assert os.path.getsize(os.path.join(out, "curves_pendulum.png")) > 1000
    assert os.path.exists(os.path.join(out, "runs", "pendulum", "DE", "s0", "metrics.csv"))
    # Rerunning resumes: finished runs are skipped, the table is rewritten identically.
    again = compare_models.main(["--envs", "pendulum", "--seeds", "0", "--trials", "1",
                                 "--budget", "tiny", "--variants", "DE", "variational MLP",
                                 "--out", out, "--quiet"])
    assert again.split("Command:")[1].split("\n", 1)[1] == text.split("Command:")[1].split(
        "\n", 1)[1]


def test_compare_propagation_tiny(tmp_path):
    out = str(tmp_path / "prop")
    text = compare_propagation.main(["--envs", "pendulum", "--seeds", "0", "--trials", "1",
                                     "--budget", "tiny", "--variants", "thompson", "optimistic",
                                     "--out", out, "--quiet"])
    assert "| thompson | 1 |" in text and "| optimistic | 1 |" in text
    assert os.path.exists(os.path.join(out, "results.md"))


def test_calibration_tiny(tmp_path):
    out = str(tmp_path / "calib")
    text = calibration.main(["--envs", "pendulum", "--seeds", "0", "--models", "PE", "D",
                             "--train-episodes", "2", "--test-episodes", "1",
                             "--episode-length", "20", "--hidden-sizes", "16",
                             "--max-epochs", "2", "--horizon", "4", "--out", out])
    assert "| PE |" in text and "| D |" in text and "k=4" in text
    for png in ("reliability_pendulum.png", "kstep_pendulum.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000
