#!/usr/bin/env python3
"""Where the time goes on the in-memory hot paths: cProfile over the seed-method loops.

    python benchmarks/profile_memory.py [--pattern end_to_end|request_reply|burst|fire_and_forget] [-n 20000]

Runs the same measurement code as `reproduce_results.py` (100 B payloads) under cProfile and
prints the functions with the most own time. cProfile inflates per-call costs, so read it for
the ranking, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats

import reproduce_results as rr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pattern", choices=("fire_and_forget", "end_to_end", "request_reply", "burst"), default="end_to_end"
    )
    parser.add_argument("-n", type=int, default=20_000, help="iterations (messages for burst)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    from amb_core import MessageBus

    payloads = rr.make_payloads(100, min(args.n, 1000), 42)

    async def workload() -> None:
        if args.pattern == "burst":
            await rr.measure_burst(MessageBus, payloads, 100, args.n)
            return
        measure = {
            "fire_and_forget": rr.measure_fire_and_forget,
            "end_to_end": rr.measure_end_to_end,
            "request_reply": rr.measure_request_reply,
        }[args.pattern]
        await measure(MessageBus, rr._cycle(payloads, args.n), 100)

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(workload())
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(args.top)
    print(f"# {args.pattern}, n={args.n}: top {args.top} by own time")
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
