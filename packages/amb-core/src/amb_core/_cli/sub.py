"""``amb sub PATTERN``: print each message as it arrives, until Ctrl-C or ``--count``."""

from __future__ import annotations

import argparse

import anyio

from amb_core._cli import options
from amb_core._cli.output import ReaderGone, json_line, readable, status, write_line
from amb_core._cli.running import ExitCode
from amb_core._message import Message


def register(commands: options.Commands) -> None:
    parser = options.add_command(
        commands,
        "sub",
        help="print messages as they arrive",
        description="Print each message on PATTERN as it arrives (a readable line, or one JSON\n"
        "object per line with --json), until Ctrl-C or --count messages.",
    )
    parser.add_argument("pattern", type=options.pattern, help="a topic, or a pattern: * one segment, # any")
    parser.add_argument(
        "--group", type=options.group, help="share the messages with the group's other members"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument("--count", type=options.positive_int, help="exit after N messages")
    # Ctrl-C is how one stops watching: not a failure.
    parser.set_defaults(action=subscribe, interrupted_exit_code=ExitCode.OK)


async def subscribe(arguments: argparse.Namespace) -> ExitCode:
    show = json_line if arguments.json else readable
    remaining: int | None = arguments.count
    done = anyio.Event()
    subscription_id = ""
    async with options.open_bus(arguments.url) as bus:

        async def handle(message: Message) -> None:
            nonlocal remaining
            try:
                write_line(show(message))
            except ReaderGone:
                remaining = 1
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    # Before returning: the messages queued behind this one go back to the
                    # broker (to the group's other members) instead of being taken and dropped.
                    await bus.unsubscribe(subscription_id)
                    done.set()

        subscription_id = await bus.subscribe(arguments.pattern, handle, group=arguments.group)
        in_group = f" in group {arguments.group}" if arguments.group else ""
        status(arguments.prog, f"subscribed to {arguments.pattern}{in_group} on {bus.adapter.describe()}")
        try:
            await done.wait()
        finally:
            await bus.unsubscribe(subscription_id)  # as above, on Ctrl-C too
    return ExitCode.OK
