"""Runs every code block of the README's "Quickstart: Bayesian layers" section."""

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


def test_section_has_the_three_examples():
    assert len(_blocks()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_example_runs(index):
    code = _blocks()[index]
    exec(compile(code, f"README.md[layers example {index}]", "exec"), {"__name__": "readme"})
