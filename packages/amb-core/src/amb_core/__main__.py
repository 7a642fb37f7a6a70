"""The ``amb`` command: ``amb demo`` (or ``python -m amb_core demo``)."""

from __future__ import annotations

import argparse
import asyncio

from amb_core import __version__
from amb_core.demo import run_demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="amb", description="AMB, the Agent Message Bus")
    parser.add_argument("--version", action="version", version=f"amb-core {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="agents exchanging signals and a verification request")
    demo.add_argument("--url", default="memory://demo", help="broker URL (default: in memory)")
    arguments = parser.parse_args(argv)
    if arguments.command == "demo":
        asyncio.run(run_demo(arguments.url))


if __name__ == "__main__":
    main()
