"""``amb request TOPIC [JSON]``: ask, wait for the first reply, print it."""

from __future__ import annotations

import argparse

from amb_core._cli import options, payloads
from amb_core._cli.output import json_line, readable, write_line
from amb_core._cli.running import ExitCode


def register(commands: options.Commands) -> None:
    parser = options.add_command(
        commands,
        "request",
        help="send a request and print the reply",
        description="Publish PAYLOAD (a JSON object, default {}) to TOPIC as a request and print the\n"
        "first reply; exit code 3 when none comes within --timeout (at once where the broker\n"
        "reports that nobody receives it), 4 when the handler failed (its error on stderr).",
    )
    parser.add_argument("topic", type=options.topic, help="where to ask, e.g. agent.verification")
    parser.add_argument("payload", nargs="?", default="{}", metavar="JSON", help="the request (default: {})")
    parser.add_argument(
        "--timeout", type=options.seconds, default=10.0, help="seconds to wait for a reply (default: 10)"
    )
    parser.add_argument("--sender", help="who asks")
    parser.add_argument("--json", action="store_true", help="print the reply as one JSON object")
    parser.set_defaults(action=ask)


async def ask(arguments: argparse.Namespace) -> ExitCode:
    payload = payloads.parse(arguments.payload)
    async with options.open_bus(arguments.url) as bus:
        reply = await bus.request(
            arguments.topic, payload, timeout=arguments.timeout, sender=arguments.sender
        )
    write_line(json_line(reply) if arguments.json else readable(reply))
    return ExitCode.OK
