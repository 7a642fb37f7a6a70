"""``amb demo``: agents talking over the bus, in memory unless ``--url`` names a broker."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from amb_core._cli import options
from amb_core._cli.demo_review import run_review
from amb_core._cli.running import ExitCode
from amb_core._demo import run_demo

#: The scenarios ``--scenario`` offers: a new one is a coroutine taking the URL, added here.
SCENARIOS: dict[str, Callable[[str], Awaitable[None]]] = {"signals": run_demo, "review": run_review}


def register(commands: options.Commands) -> None:
    parser = options.add_command(
        commands,
        "demo",
        help="agents exchanging signals and a verification request, or reviewing a streamed draft",
        description="signals: agents exchange thinking/stuck signals and an approver answers\n"
        "verification requests. review: a coordinator streams a drafting agent's tokens, then\n"
        "gathers verdicts from three reviewers, one failing and one too slow. In memory unless\n"
        "--url names a broker.",
    )
    parser.add_argument(
        "--scenario", choices=sorted(SCENARIOS), default="signals", help="which demo (default: signals)"
    )
    parser.set_defaults(action=demo)


async def demo(arguments: argparse.Namespace) -> ExitCode:
    await SCENARIOS[arguments.scenario](arguments.url)
    return ExitCode.OK
