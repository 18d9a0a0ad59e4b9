"""Runs every code block of the README's quickstart sections."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Quickstart: Bayesian layers"
MARKER = "<!-- readme-test: layers -->"


def _blocks():
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else None]
    pattern = re.escape(MARKER) + r"\s*```python\n(.*?)```"
    return re.findall(pattern, section, flags=re.DOTALL)


def test_section_has_the_four_examples():
    assert len(_blocks()) == 4


@pytest.mark.parametrize("index", range(4))
def test_readme_example_runs(index):
    code = _blocks()[index]
    exec(compile(code, f"README.md[layers example {index}]", "exec"), {"__name__": "readme"})


MODELS_SECTION = "## Quickstart: Bayesian dynamics and planning"


def _section_blocks(marker):
    text = README.read_text()
    start = text.index(MODELS_SECTION)
    end = text.find("\n## ", start + len(MODELS_SECTION))
    section = text[start:end if end != -1 else None]
    return re.findall(re.escape(marker) + r"\s*```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.parametrize("name", ["models", "network"])
def test_models_quickstart_runs(name):
    """The planning quickstart and "Your own network" (a custom network planned with)."""
    blocks = _section_blocks(f"<!-- readme-test: {name} -->")
    assert len(blocks) == 1
    exec(compile(blocks[0], f"README.md[{name} example]", "exec"), {"__name__": "readme"})
