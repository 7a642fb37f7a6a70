"""The README's examples run as written, log nothing at WARNING or above, and the console example
prints the demo's spans, each request and its reply in one trace."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
WATCH_LOGS = (
    "import logging\n"
    "logging.basicConfig(level=logging.WARNING, format='LOGGED %(levelname)s %(name)s: %(message)s')\n"
)


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", WATCH_LOGS + code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "LOGGED" not in result.stderr, result.stderr
    return result.stdout


def test_the_examples_run_quietly() -> None:
    assert len(EXAMPLES) == 2
    _run(EXAMPLES[0])


def test_the_console_example_prints_each_request_as_one_trace() -> None:
    lines = [line.split() for line in _run(EXAMPLES[1]).splitlines() if " trace " in line]
    spans = {fields[6]: fields for fields in lines}  # by span id
    requests = [fields for fields in lines if fields[0] == "request"]
    assert len(requests) == 2  # the coder asks twice
    for request in requests:
        trace_id = request[4]
        in_trace = [fields for fields in lines if fields[4] == trace_id]
        kinds = sorted(f"{fields[0]} {fields[2]}" for fields in in_trace)
        assert "send PRODUCER" in kinds and "process CONSUMER" in kinds
        for fields in in_trace:
            if fields is not request:
                assert fields[8] in spans  # its parent is in the trace printed
