#!/usr/bin/env python3
"""The agent patterns (issue 13) measured on each broker, each beside what it replaces.

    python benchmarks/agent_patterns.py --adapters memory,redis,rabbitmq,kafka
    python benchmarks/agent_patterns.py --adapters memory --quick      # seconds

Per adapter, in one run:

- **Streaming**: ``request_stream`` of 1,000 chunks of ~100 B, several times per round: time to
  the first chunk, and chunks/s from the request to the last chunk; against a hand-written loop of 1,000 plain
  ``request()`` calls each answered by one such chunk (requests/s, and a plain request's
  latency, the yardstick of the first chunk).
- **Gather**: one ``gather`` answered by 5 subscriptions, against 5 requests one after the
  other to 5 topics with one responder each. Where the broker cannot count who received the
  request (``capabilities.counts_receivers``), the gather passes ``max_replies=5``, as an
  application would (otherwise it waits for its timeout).
- **No responders**: how long ``request()`` takes to raise `NoRespondersError` on a topic
  nobody subscribes to (brokers that cannot tell: n/a, the request waits for its timeout).
- **Cancellation**: a requester leaves a stream after 3 chunks; how long until the responder's
  next ``send`` raises `RequestCancelledError`.

Targets (the issue's): streaming at least 5x the chunk rate of request-per-chunk on every
adapter; first chunk within 1.5x of a plain request's latency.

Responders run in a child process on network brokers, as separate agents would (a producer
that never waits would otherwise share the requester's CPU); on ``memory://`` they are in the
same process, on another bus of the same named broker. Rounds alternate nothing (one
implementation each side); the report gives medians over rounds. Output:
``benchmarks/results/agent-patterns-<date>.json`` and ``benchmarks/results/agent-patterns.md``
(``--quick`` writes under ``.bench/results/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import brokers
import harness
from harness import now_ns

ADAPTERS = ("memory", "redis", "rabbitmq", "kafka")
PACKAGES = ("amb-core", "amb-redis", "amb-rabbitmq", "amb-kafka", "redis", "aio-pika", "aiokafka", "pydantic")
#: One chunk: a token-sized piece of an agent's draft, ~100 bytes as JSON.
CHUNK: dict[str, Any] = {
    "agent": "drafter-1",
    "token": "The proposal reads well; one more pass on section 3 would",
    "n": 0,
}
CHUNKS = 1000
GATHER_RESPONDERS = 5
#: Streams of CHUNKS chunks timed per round (the first chunk is one sample per stream).
STREAMS = 5
#: Gathers, sequential request batches and no-responder requests timed per round.
REPEATS = 50
#: Streams per round that the requester leaves after 3 chunks, timing the responder's
#: `RequestCancelledError` (the issue: about a second on memory, Redis and RabbitMQ, a few on Kafka).
CANCELS = 3
TIMEOUT_S = 30.0
#: Event-loop passes before each timed request and stream (see `idle`).
IDLE_PASSES = 3
QUICK_DIVISOR = 5
#: This script, run again as the responder process (``--serve``).
SCRIPT = Path(__file__).resolve()


def topics(prefix: str) -> dict[str, str]:
    return {
        "stream": f"{prefix}.stream",
        "chunk": f"{prefix}.chunk",
        "review": f"{prefix}.review",
        "nobody": f"{prefix}.nobody",
        "endless": f"{prefix}.endless",
        "cancelled": f"{prefix}.cancelled",
        **{f"ask{n}": f"{prefix}.ask.{n}" for n in range(GATHER_RESPONDERS)},
    }


async def serve(url: str, prefix: str) -> Any:
    """Connect a bus and subscribe every responder the benchmark asks; returns the bus."""
    from amb_core import Message, MessageBus, RequestCancelledError

    bus = MessageBus.from_url(url)
    await bus.connect()
    names = topics(prefix)

    async def stream(request: Message) -> None:
        async with bus.reply_stream(request) as chunks:
            for n in range(request.payload["count"]):
                await chunks.send({**CHUNK, "n": n})

    async def chunk(request: Message) -> None:
        await bus.reply(request, {**CHUNK, "n": request.payload["n"]})

    async def review(request: Message) -> None:
        await bus.reply(request, {"verdict": "approve"})

    async def endless(request: Message) -> None:
        """Streams until its requester goes away, then says when it learnt so (wall clock:
        the requester may be another process)."""
        async with bus.reply_stream(request) as chunks:
            try:
                while True:
                    await chunks.send({**CHUNK, "n": chunks.sent})
                    await asyncio.sleep(0.001)  # a fast model's token rate
            except RequestCancelledError:
                await bus.publish(names["cancelled"], {"at_ns": time.time_ns(), "id": request.id})
                raise

    await bus.subscribe(names["stream"], stream, concurrency=4)
    await bus.subscribe(names["chunk"], chunk)
    await bus.subscribe(names["endless"], endless, concurrency=CANCELS)
    for _ in range(GATHER_RESPONDERS):
        await bus.subscribe(names["review"], review)
    for n in range(GATHER_RESPONDERS):
        await bus.subscribe(names[f"ask{n}"], review)
    return bus


async def _child(url: str, prefix: str) -> None:
    bus = await serve(url, prefix)
    print("ready", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes
    finally:
        await bus.disconnect()


@asynccontextmanager
async def responders(adapter: str, url: str, prefix: str) -> AsyncIterator[None]:
    if adapter == "memory":
        bus = await serve(url, prefix)
        try:
            yield
        finally:
            await bus.disconnect()
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--serve",
        url,
        prefix,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"the responder process did not start (it said {line!r})")
        yield
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 30)
        except asyncio.TimeoutError:
            child.kill()
            await child.wait()


async def idle() -> None:
    """A few passes of the event loop, without letting the process sleep (a sleeping process
    wakes with cold caches, which would time something else): an in-memory responder's worker
    ends once its queue stays empty, so the next request finds it idle."""
    for _ in range(IDLE_PASSES):
        await asyncio.sleep(0)


async def measure_round(
    bus: Any, names: dict[str, str], count: int, repeats: int, cancelled: asyncio.Queue[int]
) -> dict[str, float]:
    """One round of every measurement, on a connected requester bus; ``cancelled`` gets the
    wall-clock time at which the responder of an ``endless`` stream learnt it was left."""
    from amb_core import NoRespondersError, RequestTimeoutError

    result: dict[str, float] = {}
    # Streaming.
    firsts, rates, singles = [], [], []
    for _ in range(STREAMS):
        # A plain request first, untimed: the stream then starts on an idle responder, as each
        # plain request of the loop below does, not behind the previous stream's tail (its
        # burst's confirmations still being read). Then the first chunk's yardstick, timed
        # alike: one plain request, alone, just before the stream. Each of the two timed
        # requests comes after the same pause, so both find their responder idle (in memory:
        # no worker running, so each pays for starting one).
        await bus.request(names["chunk"], {"n": -1}, timeout=TIMEOUT_S)
        await idle()
        start = now_ns()
        await bus.request(names["chunk"], {"n": -1}, timeout=TIMEOUT_S)
        singles.append(now_ns() - start)
        await idle()
        start = now_ns()
        first = 0
        got = 0
        async for _ in bus.request_stream(names["stream"], {"count": count}, timeout=TIMEOUT_S):
            if not got:
                first = now_ns()
            got += 1
        end = now_ns()
        assert got == count, f"{got} chunks of {count}"
        firsts.append(first - start)
        rates.append(count * 1e9 / (end - start))
    result["first_chunk_ns"] = statistics.median(firsts)
    result["request_alone_ns"] = statistics.median(singles)
    result["stream_per_s"] = statistics.median(rates)
    # The same chunks, one request each.
    latencies = []
    start = now_ns()
    for n in range(count):
        sent = now_ns()
        await bus.request(names["chunk"], {"n": n}, timeout=TIMEOUT_S)
        latencies.append(now_ns() - sent)
    result["requests_per_s"] = count * 1e9 / (now_ns() - start)
    result["request_p50_ns"] = statistics.median(latencies)
    # Gather 5 against 5 requests one after the other.
    counted = bus.capabilities.counts_receivers
    gathers = []
    for _ in range(repeats):
        start = now_ns()
        replies = await bus.gather(
            names["review"],
            {"doc": "a.md"},
            timeout=TIMEOUT_S,
            max_replies=None if counted else GATHER_RESPONDERS,
        )
        gathers.append(now_ns() - start)
        assert len(replies) == GATHER_RESPONDERS, f"{len(replies)} replies"
    result["gather_ns"] = statistics.median(gathers)
    sequential = []
    for _ in range(repeats):
        start = now_ns()
        for n in range(GATHER_RESPONDERS):
            await bus.request(names[f"ask{n}"], {"doc": "a.md"}, timeout=TIMEOUT_S)
        sequential.append(now_ns() - start)
    result["sequential_ns"] = statistics.median(sequential)
    # No responders.
    if bus.capabilities.reports_no_responders:
        waits = []
        for _ in range(repeats):
            start = now_ns()
            try:
                await bus.request(names["nobody"], timeout=TIMEOUT_S)
            except NoRespondersError:
                waits.append(now_ns() - start)
            except RequestTimeoutError as error:
                raise AssertionError("a request nobody receives timed out") from error
        result["no_responders_ns"] = statistics.median(waits)
    else:
        result["no_responders_ns"] = math.nan
    # Cancellation: leave after 3 chunks; how long until the responder's send raised.
    waits = []
    for _ in range(CANCELS):
        chunks = bus.request_stream(names["endless"], timeout=TIMEOUT_S)
        got = 0
        async for _ in chunks:
            got += 1
            if got == 3:
                break
        left = time.time_ns()
        await chunks.aclose()  # what leaving the loop does (at once, not when garbage-collected)
        waits.append(await asyncio.wait_for(cancelled.get(), TIMEOUT_S) - left)
    result["cancel_ns"] = statistics.median(waits)
    return result


async def measure_adapter(
    adapter: str, rounds: int, count: int, repeats: int, progress: harness.Progress
) -> dict[str, Any]:
    from amb_core import MessageBus

    url = (
        f"memory://agent-patterns-{os.urandom(4).hex()}" if adapter == "memory" else brokers.url_for(adapter)
    )
    broker = await brokers.probe(adapter, url)
    prefix = f"bench.patterns.{os.urandom(6).hex()}"
    names = topics(prefix)
    async with responders(adapter, url, prefix), MessageBus.from_url(url) as bus:
        cancelled: asyncio.Queue[int] = asyncio.Queue()

        async def note(message: Any) -> None:
            cancelled.put_nowait(message.payload["at_ns"])

        await bus.subscribe(names["cancelled"], note)
        progress(f"{adapter}: warming up")
        await measure_round(bus, names, max(count // 10, 10), max(repeats // 10, 2), cancelled)
        samples = []
        for index in range(rounds):
            progress(f"{adapter}: round {index + 1} of {rounds}")
            samples.append(await measure_round(bus, names, count, repeats, cancelled))
        capabilities = bus.capabilities
    medians = {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}
    return {
        "broker": broker,
        "counts_receivers": capabilities.counts_receivers,
        "reports_no_responders": capabilities.reports_no_responders,
        "rounds": samples,
        "median": medians,
    }


def report(data: dict[str, Any]) -> str:
    fmt_us, fmt_rate, fmt_ratio = harness.fmt_us, harness.fmt_rate, harness.fmt_ratio
    lines = [
        "# Agent patterns: streaming, gather, no-responders",
        "",
        f"`{data['command']}`: {data['config']['rounds']} rounds, medians; per round {STREAMS} streams of "
        f"{data['config']['chunks']} chunks of ~{data['chunk_bytes']} B, as many plain requests, "
        f"{data['config']['repeats']} gathers, request batches and no-responder requests, and {CANCELS} "
        "streams left after 3 chunks.",
        "",
        f"Machine: {harness.machine_line(data['machine'])}.",
        "",
        "Packages: "
        + ", ".join(f"{name} {ver}" for name, ver in data["machine"]["packages"].items() if ver)
        + ".",
        "",
        "Brokers: "
        + "; ".join(f"{a}: {r['broker'].get('version', '?')}" for a, r in data["results"].items())
        + ".",
        "",
        "## Streaming 1,000 chunks against one request per chunk",
        "",
    ]
    rows = []
    for adapter, result in data["results"].items():
        median = result["median"]
        rate_ratio = median["stream_per_s"] / median["requests_per_s"]
        first_ratio = median["first_chunk_ns"] / median["request_alone_ns"]
        rows.append(
            [
                adapter,
                fmt_rate(median["stream_per_s"]),
                fmt_rate(median["requests_per_s"]),
                f"{fmt_ratio(rate_ratio)} ({'met' if rate_ratio >= 5 else 'not met'})",
                fmt_us(median["first_chunk_ns"]),
                fmt_us(median["request_alone_ns"]),
                fmt_us(median["request_p50_ns"]),
                f"{fmt_ratio(first_ratio)} ({'met' if first_ratio <= 1.5 else 'not met'})",
            ]
        )
    lines.append(
        harness.markdown_table(
            [
                "adapter",
                "stream chunks/s",
                "request per chunk, chunks/s",
                "stream / requests (target ≥ 5x)",
                "first chunk µs",
                "plain request µs (alone, before each stream)",
                "plain request µs (p50 of the loop)",
                "first chunk / request (target ≤ 1.5x)",
            ],
            rows,
        )
    )
    lines += ["", "## Gather of 5 replies against 5 sequential requests, and no-responders", ""]
    rows = []
    for adapter, result in data["results"].items():
        median = result["median"]
        rows.append(
            [
                adapter,
                fmt_us(median["gather_ns"]) + ("" if result["counts_receivers"] else " (max_replies=5)"),
                fmt_us(median["sequential_ns"]),
                fmt_ratio(median["sequential_ns"] / median["gather_ns"]),
                fmt_us(median["no_responders_ns"])
                if result["reports_no_responders"]
                else "n/a (times out: the broker cannot tell)",
                harness.fmt_ms(median["cancel_ns"]),
            ]
        )
    lines.append(
        harness.markdown_table(
            [
                "adapter",
                "gather µs",
                "5 sequential requests µs",
                "gather speed-up",
                "NoRespondersError after µs",
                "RequestCancelledError at the responder after ms",
            ],
            rows,
        )
    )
    lines += [
        "",
        "Time to the first chunk is from calling `request_stream` to the first chunk in the loop; chunks/s "
        "from the same start to the last chunk. Its yardstick is a plain request timed alike: one, alone, "
        "just before each stream, each of the two after the same few event-loop passes, so that both "
        "find their responder idle (the p50 of the back-to-back loop, warmer, is shown beside it). "
        "The responders run in another process on network brokers. "
        "Cancellation: from the requester leaving its loop after 3 chunks to the responder's next `send` "
        "raising `RequestCancelledError` (wall clock across the two processes; the responder sends a chunk "
        "a millisecond).",
        "",
    ]
    return "\n".join(lines)


async def measure(args: argparse.Namespace, progress: harness.Progress) -> dict[str, Any]:
    count = CHUNKS // QUICK_DIVISOR if args.quick else CHUNKS
    repeats = REPEATS // QUICK_DIVISOR if args.quick else REPEATS
    results = {}
    for adapter in args.adapters:
        results[adapter] = await measure_adapter(adapter, args.rounds, count, repeats, progress)
    return {"results": results, "count": count, "repeats": repeats}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--adapters", default="memory", help="comma-separated: " + ",".join(ADAPTERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help=f"counts divided by {QUICK_DIVISOR}, output in .bench/"
    )
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.adapters = [name.strip() for name in args.adapters.split(",") if name.strip()]
    unknown = sorted(set(args.adapters) - set(ADAPTERS))
    if unknown:
        parser.error(f"unknown adapters: {', '.join(unknown)}")
    if args.output_dir is None:
        args.output_dir = (harness.SCRATCH_DIR if args.quick else harness.BENCH_DIR) / "results"
    return args


def main(argv: list[str] | None = None) -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        logging.basicConfig(level=logging.CRITICAL)
        asyncio.run(_child(sys.argv[2], sys.argv[3]))
        return 0
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("amb", "aiokafka", "aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    progress = harness.Progress(args.quiet)
    try:
        measured = asyncio.run(measure(args, progress))
    except brokers.BrokerUnreachable as error:
        print(f"agent_patterns.py: {error}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    data: dict[str, Any] = {
        "benchmark": "agent_patterns",
        "command": " ".join(
            ["python", "benchmarks/agent_patterns.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "config": {
            "adapters": args.adapters,
            "rounds": args.rounds,
            "quick": args.quick,
            "chunks": measured["count"],
            "repeats": measured["repeats"],
            "timer": "time.perf_counter_ns",
        },
        "chunk_bytes": len(json.dumps(CHUNK, separators=(",", ":"))),
        "machine": harness.machine_info(PACKAGES),
        "results": measured["results"],
    }
    data["markdown"] = report(data)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_path = args.output_dir / f"agent-patterns-{stamp}.json"
    harness.write_json(json_path, data)
    markdown_path = args.output_dir / "agent-patterns.md"
    markdown_path.write_text(data["markdown"])
    print(data["markdown"])
    progress(f"wrote {harness.display_path(json_path)} and {harness.display_path(markdown_path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
