"""Running a subcommand: exit codes, one-line errors, Ctrl-C.

Exit codes (also in the README and ``amb --help``): 0 done, 1 usage (bad arguments, URL,
topic or payload; an adapter that is not installed; a group that is not there or in use), 2
broker unavailable (or refusing the credentials), 3 timeout (no reply to ``amb request``, or
nobody receives it), 4 the handler of the request failed (its error is the line), 130
interrupted (Ctrl-C; `amb sub` ends with 0, Ctrl-C being how one stops watching).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from enum import IntEnum

from amb_core._errors import (
    AdapterNotInstalledError,
    BrokerRefusedError,
    BrokerUnavailableError,
    BusClosedError,
    GroupInUseError,
    InvalidPayloadError,
    InvalidTopicError,
    RemoteHandlerError,
    RequestTimeoutError,
)


class ExitCode(IntEnum):
    OK = 0
    USAGE = 1
    UNAVAILABLE = 2
    TIMEOUT = 3
    HANDLER_FAILED = 4
    INTERRUPTED = 130


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 1."""


Action = Callable[[argparse.Namespace], Awaitable[ExitCode]]

#: How long a command gets to close its bus after Ctrl-C (or SIGTERM) before the process exits
#: anyway: what it had not handed to the broker is lost, as with any interrupted publisher.
GRACE = 0.7

_EXIT_CODES: list[tuple[type[BaseException], ExitCode]] = [
    (UsageError, ExitCode.USAGE),
    (InvalidTopicError, ExitCode.USAGE),
    (InvalidPayloadError, ExitCode.USAGE),
    (AdapterNotInstalledError, ExitCode.USAGE),
    (GroupInUseError, ExitCode.USAGE),
    (NotImplementedError, ExitCode.USAGE),  # what a third-party adapter cannot do (amb groups)
    (BrokerUnavailableError, ExitCode.UNAVAILABLE),
    (BrokerRefusedError, ExitCode.UNAVAILABLE),
    (BusClosedError, ExitCode.UNAVAILABLE),
    (RequestTimeoutError, ExitCode.TIMEOUT),
    (RemoteHandlerError, ExitCode.HANDLER_FAILED),
]


def run(arguments: argparse.Namespace) -> ExitCode:
    """Run the subcommand ``arguments`` names; return its exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    try:
        return asyncio.run(_run(arguments))
    except KeyboardInterrupt:  # before the event loop took over SIGINT, or where it cannot
        return _interrupted(arguments)


async def _run(arguments: argparse.Namespace) -> ExitCode:
    action: Action = arguments.action
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: no more waiting
            _exit_now(_interrupted(arguments))
        interrupted = True
        task.cancel()
        loop.call_later(GRACE, _exit_now, _interrupted(arguments))

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows, nor outside the main thread: there KeyboardInterrupt ends it, in `run`.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal_number, on_signal)
    try:
        return await action(arguments)
    except asyncio.CancelledError:
        if interrupted:
            return _interrupted(arguments)
        raise
    except Exception as error:
        for kind, code in _EXIT_CODES:
            if isinstance(error, kind):
                fail(arguments, str(error))
                return code
        raise  # a bug: its traceback is what a report needs


def fail(arguments: argparse.Namespace, problem: str) -> None:
    """Print ``problem`` as the command's one error line."""
    print(f"{arguments.prog}: {problem}", file=sys.stderr, flush=True)


def _interrupted(arguments: argparse.Namespace) -> ExitCode:
    code: ExitCode = arguments.interrupted_exit_code
    return code


def _exit_now(code: ExitCode) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
