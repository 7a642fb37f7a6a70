"""Payloads from the command line: one JSON object as an argument, or one per line of stdin."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from amb_core._cli.running import UsageError
from amb_core._payload import json_object

#: The positional argument that means "read payloads from stdin".
STDIN = "-"


def parse(text: str, where: str = "the payload") -> dict[str, Any]:
    """``text`` as a JSON object, or a `UsageError` saying what is wrong with it."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UsageError(f"{where} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a JSON object ({{...}}), not {type(value).__name__}")
    return json_object(value)


async def stdin_lines() -> AsyncIterator[dict[str, Any]]:
    """Each non-blank line of stdin as a JSON object, as soon as it is read (so ``tail -f`` and
    a person typing both work); a line that is not one is a `UsageError` naming it."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        # A daemon thread, so that a blocked read never keeps Ctrl-C from ending the process.
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="amb-stdin", daemon=True).start()
    number = 0
    while (line := await lines.get()) is not None:
        number += 1
        if line.strip():
            yield parse(line, f"line {number} of stdin")
