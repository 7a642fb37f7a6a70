"""CPU instructions per message of one scenario, counted by callgrind: a measure that does not
wobble with the machine's load, for comparing before and after a change.

    python benchmarks/instructions.py --adapter kafka --impl amb --scenario end_to_end
    python benchmarks/instructions.py --adapter kafka --impl bare --scenario end_to_end

Runs the scenario twice under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``: setup and a
warm-up only, then the same plus ``--count`` messages, and prints the difference divided by the
count. Everything in the Python process is counted (event loop, client library, AMB); the broker
is not. Needs valgrind (``apt-get install valgrind``) and, for a broker, its URL as for run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import brokers
from impl_bare import use_preserialised_payloads
from run import make_impl
from scenarios import SCENARIOS

WARMUP = 500


async def _child(adapter: str, impl: str, scenario: str, count: int) -> None:
    implementation = make_impl(impl, adapter, brokers.url_for(adapter))
    async with implementation.scenario(scenario) as run:
        await run(WARMUP)
        if count:
            await run(count)


def _instructions(args: argparse.Namespace, count: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(count),
        *("--adapter", args.adapter, "--impl", args.impl, "--scenario", args.scenario),
        *(["--bare-preserialised"] if args.bare_preserialised else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"instructions.py: the callgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapter", default="memory", choices=brokers.ADAPTERS)
    parser.add_argument("--impl", default="amb", choices=("amb", "bare", "faststream"))
    parser.add_argument("--scenario", default="end_to_end", choices=tuple(SCENARIOS))
    parser.add_argument("--count", type=int, default=10_000, help="messages counted (default 10,000)")
    parser.add_argument("--bare-preserialised", action="store_true", help="as for run.py")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_preserialised:
        use_preserialised_payloads()
    if args.child is not None:
        asyncio.run(_child(args.adapter, args.impl, args.scenario, args.child))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("instructions.py: valgrind is not installed (apt-get install valgrind)")
    baseline, measured = _instructions(args, 0), _instructions(args, args.count)
    per_message = (measured - baseline) / args.count
    print(f"{args.adapter} {args.scenario} {args.impl}: {per_message:,.0f} instructions per message")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
