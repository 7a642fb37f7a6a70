"""Does the cost of a message grow with the number of subscriptions? (issue 12)

    python benchmarks/scale.py                                  # memory: 10 ... 100,000 subscriptions
    python benchmarks/scale.py --adapters memory,redis --counts 10,1000,10000

For each count N, one bus holds N subscriptions, each on its own topic (``scale.<i>.inbox``, an
agent's inbox), plus N/10 pattern subscriptions (``scale.<j>.events.*`` and ``scale.<j>.log.#``,
each matching its own topics). Then, one message at a time, it times a publish until its one
handler has run (publish + deliver):

- **unseen**: to topics never published to before (the broker must find the route);
- **cached**: to the same topics again;
- **churn**: to those topics again, each publish after one subscription came and another went
  (a pattern one time in ten), as agents join and leave; the churn itself is timed as well.

And the memory each subscription holds while idle (tracemalloc, in this process: for a network
adapter that is the client side only). Medians; no test asserts on any of it. Results go to
``results/scale-<date>.json`` (``--output``) with the machine and versions, and a markdown table
is printed for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import brokers
import harness

import amb_core
from amb_core import Message, MessageBus

#: The largest count each adapter is run with by default: what the broker here holds in a few
#: minutes (RabbitMQ declares a queue and a binding per subscription, Kafka needs a topic each).
DEFAULT_COUNTS = {
    "memory": [10, 1_000, 10_000, 100_000],
    "redis": [10, 1_000, 10_000],
    "rabbitmq": [10, 1_000],
    "kafka": [10, 100],
}
PAYLOAD = {"text": "x" * 64}


class _Scale:
    """One bus with ``count`` idle subscriptions (and ``count // 10`` patterns), and a way to
    time one message's publish + deliver."""

    def __init__(self, bus: MessageBus, count: int, rng: random.Random) -> None:
        self.bus = bus
        self.count = count
        self.rng = rng
        # Per subscription, as little as can be (it is inside the memory figure): its id, and
        # the topic a publish reaches it on (the pattern itself for an exact subscription).
        self.ids: list[str] = []
        self.topics: list[str] = []
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._next = 0

    async def _handler(self, message: Message) -> None:
        waiter = self._waiting.pop(message.topic, None)
        if waiter is not None:
            waiter.set_result(None)

    async def add(self, pattern_every: int = 10) -> None:
        """One more subscription on a topic of its own; every ``pattern_every``-th a pattern."""
        n = self._next
        self._next += 1
        if n % pattern_every == pattern_every - 1:
            pattern, topic = (
                (f"scale.{n}.events.*", f"scale.{n}.events.created")
                if n % 2
                else (f"scale.{n}.log.#", f"scale.{n}.log.a.b")
            )
        else:
            pattern = topic = f"scale.{n}.inbox"
        self.ids.append(await self.bus.subscribe(pattern, self._handler))
        self.topics.append(topic)

    async def fill(self) -> None:
        # count on their own topics, and a tenth of that more as patterns: 11 in 110.
        while len(self.ids) < self.count + self.count // 10:
            await self.add(pattern_every=11)

    async def publish_and_deliver(self, topic: str) -> int:
        """Nanoseconds from publish until the topic's handler ran."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[topic] = waiter
        started = time.perf_counter_ns()
        await self.bus.publish(topic, PAYLOAD)
        await waiter
        return time.perf_counter_ns() - started

    async def churn(self, keep: set[str]) -> int:
        """One subscription goes and another comes; nanoseconds it took."""
        while True:
            index = self.rng.randrange(len(self.ids))
            if self.topics[index] not in keep:
                break
        started = time.perf_counter_ns()
        await self.bus.unsubscribe(self.ids[index])
        await self.add()
        elapsed = time.perf_counter_ns() - started
        self.ids[index], self.topics[index] = self.ids.pop(), self.topics.pop()
        return elapsed


async def _timed(samples: list[str], one: Callable[[str], Awaitable[int]]) -> list[int]:
    return [await one(topic) for topic in samples]


async def _one_bus(url: str, count: int, samples: int, rng: random.Random) -> dict[str, list[float]]:
    """One bus with ``count`` subscriptions: the memory they hold and the timings."""
    async with MessageBus.from_url(url) as bus:
        scale = _Scale(bus, count, rng)
        for _ in range(10):  # the tables every bus makes once, outside the figure
            await scale.add()
        baseline = len(scale.ids)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await scale.fill()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        subscribed = len(scale.ids) - baseline
        # At most half the topics: churn takes its subscriptions from the other half.
        chosen = rng.sample(scale.topics, min(samples, len(scale.topics) // 2))
        unseen = await _timed(chosen, scale.publish_and_deliver)
        cached = await _timed(chosen, scale.publish_and_deliver)
        keep = set(chosen)
        churn_ns: list[int] = []

        async def after_churn(topic: str) -> int:
            churn_ns.append(await scale.churn(keep))
            return await scale.publish_and_deliver(topic)

        churned = await _timed(chosen, after_churn)
    return {
        "bytes": [held / subscribed],
        "unseen": [float(ns) for ns in unseen],
        "cached": [float(ns) for ns in cached],
        "churn": [float(ns) for ns in churned],
        "churn_operation": [float(ns) for ns in churn_ns],
    }


async def measure(adapter: str, url: str, count: int, samples: int, seed: int) -> dict[str, Any]:
    """A row: ``count`` subscriptions on fresh buses until ``samples`` messages were timed per
    column (a small count has few topics to time, so it takes several buses, at most 20)."""
    rng = random.Random(seed)
    found: dict[str, list[float]] = {}
    buses = 0
    while buses < 20 and len(found.get("unseen", ())) < samples:
        for name, values in (await _one_bus(url, count, samples, rng)).items():
            found.setdefault(name, []).extend(values)
        buses += 1
    return {
        "adapter": adapter,
        "subscriptions": count,
        "patterns": count // 10,
        "buses": buses,
        "samples": len(found["unseen"]),
        "bytes_per_idle_subscription": statistics.median(found["bytes"]),
        **{
            f"{name}_ns": statistics.median(found[name])
            for name in ("unseen", "cached", "churn", "churn_operation")
        },
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = []
    for adapter in dict.fromkeys(row["adapter"] for row in rows):
        mine = [row for row in rows if row["adapter"] == adapter]
        first = mine[0]
        table = [
            [
                f"{row['subscriptions']:,} + {row['patterns']:,}",
                harness.fmt_us(row["unseen_ns"]),
                harness.fmt_us(row["cached_ns"]),
                harness.fmt_us(row["churn_ns"]),
                harness.fmt_us(row["churn_operation_ns"]),
                f"{row['bytes_per_idle_subscription']:,.0f} B",
                f"{row['unseen_ns'] / first['unseen_ns']:.2f}x / {row['cached_ns'] / first['cached_ns']:.2f}x",
            ]
            for row in mine
        ]
        lines.append(f"**{adapter}**\n")
        lines.append(
            harness.markdown_table(
                [
                    "subscriptions + patterns",
                    "publish+deliver, unseen topic (µs)",
                    "cached topic (µs)",
                    "cached topic, after churn (µs)",
                    "one unsubscribe + subscribe (µs)",
                    "memory per idle subscription",
                    f"unseen / cached vs the {first['subscriptions']:,} row",
                ],
                table,
                "lrrrrrr",
            )
        )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapters", default="memory", help="comma-separated (default: memory)")
    parser.add_argument(
        "--counts", default=None, help="comma-separated subscription counts (default per adapter)"
    )
    parser.add_argument("--samples", type=int, default=1000, help="messages timed per column (default 1,000)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--output", type=Path, default=None, help="JSON (default results/scale-<date>.json)")
    args = parser.parse_args(argv)
    args.adapters = [name.strip() for name in args.adapters.split(",") if name.strip()]
    unknown = set(args.adapters) - set(brokers.ADAPTERS)
    if unknown:
        parser.error(f"unknown adapters {sorted(unknown)}; choose from {', '.join(brokers.ADAPTERS)}")
    if args.counts is not None:
        args.counts = [int(count.replace("_", "")) for count in args.counts.split(",")]
    return args


async def run(args: argparse.Namespace, progress: harness.Progress) -> dict[str, Any]:
    rows = []
    versions: dict[str, Any] = {}
    for adapter in args.adapters:
        url = brokers.url_for(adapter)
        versions[adapter] = await brokers.probe(adapter, url)
        await measure(adapter, url, 10, 20, args.seed)  # warm-up: the process's first messages
        for count in args.counts or DEFAULT_COUNTS[adapter]:
            progress(f"{adapter}: {count:,} subscriptions + {count // 10:,} patterns")
            row = await measure(adapter, url, count, args.samples, args.seed)
            progress(
                f"  unseen {harness.fmt_us(row['unseen_ns'])} µs, cached {harness.fmt_us(row['cached_ns'])} µs, "
                f"after churn {harness.fmt_us(row['churn_ns'])} µs, "
                f"{row['bytes_per_idle_subscription']:,.0f} B per idle subscription"
            )
            rows.append(row)
    packages = ["amb-core", "pydantic", "anyio"] + [
        f"amb-{name}" for name in args.adapters if name != "memory"
    ]
    machine = harness.machine_info(packages)
    machine["amb_core_source"] = str(Path(amb_core.__file__).parent)  # which code was measured
    return {"machine": machine, "brokers": versions, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = harness.Progress()
    data = asyncio.run(run(args, progress))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    output = args.output or harness.BENCH_DIR / "results" / f"scale-{stamp}.json"
    harness.write_json(output, data)
    print(
        f"Measured on {harness.machine_line(data['machine'])}; amb-core {data['machine']['packages']['amb-core']}"
    )
    print(
        f"(source {data['machine']['source_revision']}; {args.samples:,} messages timed per column, medians)\n"
    )
    print(markdown(data["rows"]))
    progress(f"wrote {harness.display_path(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
