"""The Python examples of the repository's README run as written, and print what it says.

An example followed by a ```text block must print exactly that; the first one ("Use") prints
its audit lines in no fixed order, so its test looks for two of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"
#: (code, the output the README shows for it, or None).
EXAMPLES = [
    (code, output)
    for code, output in re.findall(
        r"```python\n(.*?)```\n(?:\n```text\n(.*?)```\n)?",
        README.read_text(encoding="utf-8"),
        flags=re.DOTALL,
    )
]


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 5
    assert all(output for _, output in EXAMPLES[1:])  # every agent pattern shows what it prints


def test_the_first_readme_example_runs() -> None:
    stdout = _run(EXAMPLES[0][0])
    assert "approved: False" in stdout
    assert "[audit] agent.stuck from agent-1" in stdout


@pytest.mark.parametrize(
    ("code", "output"), EXAMPLES[1:], ids=[f"example-{n}" for n in range(1, len(EXAMPLES))]
)
def test_a_readme_example_prints_what_the_readme_shows(code: str, output: str) -> None:
    assert _run(code) == output
