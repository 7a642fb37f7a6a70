"""``amb demo``: agents talking over the bus, in memory unless ``--url`` names a broker."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from amb_core.cli import options
from amb_core.cli.running import ExitCode
from amb_core.demo import run_demo

#: The scenarios ``--scenario`` offers: a new one is a coroutine taking the URL, added here.
SCENARIOS: dict[str, Callable[[str], Awaitable[None]]] = {"signals": run_demo}


def register(commands: options.Commands) -> None:
    parser = options.add_command(
        commands,
        "demo",
        help="agents exchanging signals and a verification request",
        description="Agents exchange thinking/stuck signals and an approver answers verification\n"
        "requests, in memory unless --url names a broker.",
    )
    parser.add_argument(
        "--scenario", choices=sorted(SCENARIOS), default="signals", help="which demo (default: signals)"
    )
    parser.set_defaults(action=demo)


async def demo(arguments: argparse.Namespace) -> ExitCode:
    await SCENARIOS[arguments.scenario](arguments.url)
    return ExitCode.OK
