"""The README's example means what it says on every adapter: run twice on the same topics (as a
user reruns a program), it prints the same lines, because its group keeps no backlog between
runs and its ungrouped subscription watches every message of the run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from amb_contract.suite import URL, readme_example

# The example as written, on the broker under test, its topics moved under a prefix of this test's
# own (the same for both runs) so that other tests and earlier runs stay out of it.
_RUN = """
import os, sys
source = sys.stdin.read().replace('"memory://"', repr(os.environ["AMB_URL"]))
source = source.replace('"agent.', '"' + os.environ["AMB_PREFIX"] + '.agent.')
exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
"""


def _run(prefix: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN],
        input=readme_example(),
        capture_output=True,
        text=True,
        env={**os.environ, "AMB_URL": URL, "AMB_PREFIX": prefix},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted(done.stdout.splitlines())  # handlers run side by side: lines come in any order


def test_the_readme_example_prints_the_same_lines_when_run_again() -> None:
    prefix = f"readme{uuid.uuid4().hex[:10]}"
    first = _run(prefix)
    assert first == sorted(
        [
            f"[audit] {prefix}.agent.thinking from agent-1: {{'thought': 'Analyzing user request...'}}",
            f"[audit] {prefix}.agent.stuck from agent-1: {{'reason': 'Insufficient context'}}",
            f"[audit] {prefix}.agent.help from helper-1: {{'for': 'agent-1'}}",
            f"[audit] {prefix}.agent.verification from agent-1: {{'action': 'delete_file'}}",
            "approved: False",
        ]
    )
    assert _run(prefix) == first
