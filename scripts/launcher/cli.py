"""The command line of ``scripts/services.py``: up, down, status, restart, kill, env."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from launcher.commands import down, kill, restart, status, up
from launcher.endpoints import NAMES, env
from launcher.errors import ServiceError
from launcher.output import say

DESCRIPTION = "Start, stop and restart the real brokers AMB's tests run against."


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code: 0 done, 1 failed (the reason on stderr), 3 ``status``
    found a broker not ready, 130 interrupted."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            t0 = time.monotonic()
            up(args.names or None, docker=args.docker)
            say(f"all ready in {time.monotonic() - t0:.1f}s")
        elif args.command == "down":
            down(args.names or None, wipe=args.wipe, docker=args.docker)
        elif args.command == "restart":
            if args.kill:
                kill(args.name, docker=args.docker)
                up([args.name], docker=args.docker)
            else:
                restart(args.name, docker=args.docker)
        elif args.command == "kill":
            kill(args.name, docker=args.docker)
        elif args.command == "status":
            return 0 if all(status(args.names or None).values()) else 3
        elif args.command == "env":
            for key, value in env().items():
                print(f"{key}={value}")
    except ServiceError as exc:
        print(f"services.py: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="services.py", description=DESCRIPTION)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--docker", dest="docker", action="store_const", const=True, help="use compose.yaml")
    group.add_argument(
        "--native", dest="docker", action="store_const", const=False, help="run the brokers here"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd, help_text in (
        ("up", "start brokers and wait until they accept clients"),
        ("down", "stop brokers started by this launcher"),
        ("status", "show whether brokers accept clients"),
    ):
        p = sub.add_parser(cmd, help=help_text)
        p.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(NAMES)} (default: all)")
        if cmd == "down":
            p.add_argument("--wipe", action="store_true", help="also delete their data")
    p = sub.add_parser("restart", help="stop and start one broker, keeping its data")
    p.add_argument("--kill", action="store_true", help="stop it with SIGKILL (a crash), not gracefully")
    p.add_argument("name", choices=NAMES)
    p = sub.add_parser("kill", help="kill one broker with SIGKILL (a crash); `up` starts it again")
    p.add_argument("name", choices=NAMES)
    sub.add_parser("env", help="print AMB_*_URL=... lines")
    return parser
