"""The Python examples of the repository's README and of amb-core's run as written, print what
they say, and log nothing at WARNING or above (docs/semantics.md: a normal run is quiet).

An example of the repository's README followed by a ```text block must print exactly that; the
first one ("Use") prints its audit lines in no fixed order, so its test looks for two of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
README = PACKAGE.parents[1] / "README.md"
#: (code, the output the README shows for it, or None).
EXAMPLES = [
    (code, output)
    for code, output in re.findall(
        r"```python\n(.*?)```\n(?:\n```text\n(.*?)```\n)?",
        README.read_text(encoding="utf-8"),
        flags=re.DOTALL,
    )
]
CORE_EXAMPLES = re.findall(
    r"```python\n(.*?)```", (PACKAGE / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL
)
#: Run before each example: every WARNING+ record, from any logger, is printed with this mark.
WATCH_LOGS = (
    "import logging\n"
    "logging.basicConfig(level=logging.WARNING, format='LOGGED %(levelname)s %(name)s: %(message)s')\n"
)

#: A run that logs a WARNING on amb.bus: a handler still running when the drain timeout ends.
HANDLER_CUT_OFF_AT_CLOSE = """
import asyncio
from amb_core import MessageBus

async def main():
    bus = MessageBus(drain_timeout=0.01)
    await bus.connect()

    async def stuck(message):
        await asyncio.sleep(10)

    await bus.subscribe("t", stuck)
    await bus.publish("t", {})
    await asyncio.sleep(0.05)
    await bus.disconnect()

asyncio.run(main())
"""


#: The one WARNING+ record an example may log: the ERROR of a handler it makes fail on purpose.
HANDLER_FAILED = re.compile(r"LOGGED ERROR amb\.bus: handler .* failed on message ")


def _run(code: str) -> str:
    """Run ``code``; return what it printed, failing on any WARNING+ log record (but the ERROR of
    a handler that raises on purpose, in an example that shows error answers)."""
    result = subprocess.run(
        [sys.executable, "-c", WATCH_LOGS + code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    logged = [line for line in result.stderr.splitlines() if line.startswith("LOGGED")]
    allowed = HANDLER_FAILED if "raise " in code else None
    assert all(allowed is not None and allowed.match(line) for line in logged), result.stderr
    return result.stdout


def test_the_readmes_have_examples() -> None:
    assert len(EXAMPLES) >= 5 and CORE_EXAMPLES
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


@pytest.mark.parametrize("code", CORE_EXAMPLES, ids=[f"example-{n}" for n in range(len(CORE_EXAMPLES))])
def test_an_amb_core_readme_example_runs_quietly(code: str) -> None:
    _run(code)


def test_warnings_would_be_seen() -> None:
    """The check above sees what AMB logs at WARNING (through the `amb` logger's children)."""
    with pytest.raises(AssertionError, match=r"LOGGED WARNING amb\.bus"):
        _run(HANDLER_CUT_OFF_AT_CLOSE)


def test_nothing_is_printed_without_logging_configured() -> None:
    """`amb` has a NullHandler: Python's last-resort handler never prints AMB's warnings."""
    result = subprocess.run(
        [sys.executable, "-c", HANDLER_CUT_OFF_AT_CLOSE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == ""
