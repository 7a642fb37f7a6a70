"""The command line's shape: the parser, the options every subcommand shares, argument types
that check a value before anything connects, and opening the bus ``--url`` names."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from amb_core._bus import MessageBus
from amb_core._cli.running import ExitCode, UsageError
from amb_core._errors import AdapterNotInstalledError, InvalidTopicError, scrub
from amb_core._keys import validate_key
from amb_core._message import MessagePriority
from amb_core._topics import validate_group, validate_pattern, validate_topic

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Commands = argparse._SubParsersAction

DEFAULT_URL = "memory://"
EXIT_CODES = (
    "exit codes: 0 done, 1 usage (bad arguments, URL, topic or payload), 2 broker unavailable,"
    " 3 timeout (or nobody receives the request), 4 the request's handler failed, 130 interrupted"
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 1 (argparse's own is 2,
    which ``amb`` keeps for "broker unavailable")."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


def build_parser(version: str, commands: Any) -> Parser:
    """The ``amb`` parser, with each module of ``commands`` registered as a subcommand."""
    parser = Parser(
        prog="amb",
        description="AMB, the Agent Message Bus, from a shell: publish, watch, ask, on any broker.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"amb-core {version}")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for command in commands:
        command.register(subcommands)
    return parser


def add_command(
    commands: Commands, name: str, *, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, with the options every subcommand takes (``--url``)."""
    parser = commands.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("AMB_URL", DEFAULT_URL),
        help="the broker: memory://, redis://host:6379/0, amqp://user:password@host/, kafka://host:9092"
        " (default: $AMB_URL, else memory://)",
    )
    parser.set_defaults(prog=parser.prog, interrupted_exit_code=ExitCode.INTERRUPTED)
    return parser


def open_bus(url: str) -> MessageBus:
    """The bus for ``url``, not yet connected (``async with`` it); a URL no adapter takes is a
    `UsageError` that never shows the URL's password."""
    try:
        return MessageBus.from_url(url)
    except AdapterNotInstalledError:
        raise
    except (ValueError, TypeError) as error:
        raise UsageError(scrub(str(error), _password(url))) from None


def _password(url: str) -> str | None:
    """The password in ``url``, found even where the URL is malformed (which is when the error
    quotes it): between the user name's colon and the last ``@``."""
    user_info = url.rpartition("@")[0].rpartition("/")[2]
    return user_info.partition(":")[2] or None


def _checked(check: Callable[[str], object], what: str) -> Callable[[str], str]:
    def argument(value: str) -> str:
        try:
            check(value)
        except InvalidTopicError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    argument.__name__ = what  # argparse names the type in its messages
    return argument


topic = _checked(validate_topic, "topic")
pattern = _checked(validate_pattern, "pattern")
group = _checked(validate_group, "group")


def key(value: str) -> str:
    try:
        return validate_key(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def priority(value: str) -> MessagePriority:
    try:
        return MessagePriority.coerce(int(value) if value.isdigit() else value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return number


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {value!r}")
    return number
