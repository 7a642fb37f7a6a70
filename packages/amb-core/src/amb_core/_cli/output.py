"""What the commands print: messages (a readable line, or one JSON object per line), status
lines on stderr, and a quiet end when the reader of stdout goes away (``amb sub t | head``)."""

from __future__ import annotations

import json
import os
import sys

from amb_core._message import Message, MessagePriority


def readable(message: Message) -> str:
    """``12:04:05.123 agent.stuck from coder-1 [HIGH] {"reason": "..."}`` (local time)."""
    parts = [message.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3], message.topic]
    if message.sender:
        parts.append(f"from {message.sender}")
    if message.priority is not MessagePriority.NORMAL:
        parts.append(f"[{message.priority.name}]")
    if message.correlation_id:
        parts.append(f"(correlation {message.correlation_id})")
    parts.append(json.dumps(message.payload, ensure_ascii=False))
    return " ".join(parts)


def json_line(message: Message) -> str:
    """Every field of ``message`` as one JSON object (priority by name, timestamp in UTC)."""
    return message.model_dump_json()


class ReaderGone(Exception):
    """Whoever read our stdout has stopped reading (a closed pipe)."""


def write_line(line: str) -> None:
    """Print ``line`` on stdout at once (a pipe sees each message as it arrives); a closed pipe
    raises `ReaderGone` and silences stdout for good, so the exit is quiet too."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise ReaderGone from None


def status(prog: str, line: str) -> None:
    """A line for the person at the terminal, on stderr (stdout carries only messages)."""
    print(f"{prog}: {line}", file=sys.stderr, flush=True)
