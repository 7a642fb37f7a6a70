"""``amb pub TOPIC [JSON|-]``: publish a message (or one per line of stdin); prints each id."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from amb_core._cli import options, payloads
from amb_core._cli.output import write_line
from amb_core._cli.running import ExitCode


def register(commands: options.Commands) -> None:
    parser = options.add_command(
        commands,
        "pub",
        help="publish a message",
        description="Publish PAYLOAD (a JSON object, default {}) to TOPIC and print the message id;\n"
        "with '-', publish each line of stdin (one JSON object per line) as it is read.",
    )
    parser.add_argument("topic", type=options.topic, help="where to publish, e.g. agent.stuck")
    parser.add_argument(
        "payload", nargs="?", default="{}", metavar="JSON|-", help="the payload (default: {})"
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="return only once the broker has the message (wait_for_confirmation)",
    )
    parser.add_argument("--priority", type=options.priority, help="LOW, NORMAL (default), HIGH or URGENT")
    parser.add_argument("--sender", help="who sends it")
    parser.add_argument("--ttl", type=options.seconds, help="seconds the message may wait for delivery")
    parser.add_argument(
        "--key",
        type=options.key,
        help="ordering key: messages with the same key reach every subscription, and each group, in order",
    )
    parser.add_argument(
        "--count", type=options.positive_int, default=1, help="publish it N times (with -, each line)"
    )
    parser.set_defaults(action=publish)


def publish_options(arguments: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `MessageBus.publish` set on the command line: a new publish option
    is one ``add_argument`` above and one line here."""
    chosen: dict[str, Any] = {
        "wait_for_confirmation": arguments.confirm,
        "priority": arguments.priority,
        "sender": arguments.sender,
        "ttl": arguments.ttl,
        "key": arguments.key,
    }
    return {name: value for name, value in chosen.items() if value is not None}


async def publish(arguments: argparse.Namespace) -> ExitCode:
    # The payload argument is checked before connecting: a typo costs no broker round trip.
    given = None if arguments.payload == payloads.STDIN else payloads.parse(arguments.payload)
    keywords = publish_options(arguments)
    async with options.open_bus(arguments.url) as bus:
        async for payload in _payloads(given):
            for _ in range(arguments.count):
                write_line(await bus.publish(arguments.topic, payload, **keywords))
    return ExitCode.OK


async def _payloads(given: dict[str, Any] | None) -> AsyncIterator[dict[str, Any]]:
    if given is not None:
        yield given
        return
    async for payload in payloads.stdin_lines():
        yield payload
