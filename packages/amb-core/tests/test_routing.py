"""`RouteTable`: the in-memory broker's routes, found in time that does not grow with the number
of subscriptions, agree with the AMQP matching rules (`amb_core._topics.topic_matches`)."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc

from amb_core import Message, MessageBus
from amb_core.adapter import RouteTable, topic_matches

SEGMENTS = ["a", "b", "c", "_amb", "x-1"]


def _random_pattern(rng: random.Random) -> str:
    return ".".join(rng.choice([*SEGMENTS, "*", "#"]) for _ in range(rng.randint(1, 4)))


def _random_topic(rng: random.Random) -> str:
    return ".".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 5)))


def test_routes_agree_with_the_matching_rules_for_random_patterns_and_topics() -> None:
    rng = random.Random(12)
    patterns = list(dict.fromkeys(_random_pattern(rng) for _ in range(300)))
    table: RouteTable[str] = RouteTable()
    for pattern in patterns:
        table.add(pattern, pattern)
    topics = {_random_topic(rng) for _ in range(2000)} | {"_amb", "_amb.inbox.x", "a"}
    for topic in topics:
        expected = {pattern for pattern in patterns if topic_matches(pattern, topic)}
        route = table.route(topic)
        assert len(route) == len(set(route)), (topic, route)  # each target once
        assert set(route) == expected, topic
        assert table.cached(topic) == route


def test_removing_targets_leaves_an_empty_table() -> None:
    rng = random.Random(7)
    table: RouteTable[int] = RouteTable()
    added = [(_random_pattern(rng), n) for n in range(500)]
    for pattern, target in added:
        table.add(pattern, target)
    assert len(table) == 500
    rng.shuffle(added)
    for pattern, target in added:
        assert table.remove(pattern, target)
        assert not table.remove(pattern, target)
    assert len(table) == 0
    assert table.route("a.b.c") == ()
    assert table._root.empty()  # pruned: churn does not leave the trie growing


def test_an_exact_subscription_coming_or_going_keeps_every_other_cached_route() -> None:
    table: RouteTable[str] = RouteTable()
    for n in range(100):
        table.add(f"inbox.{n}", f"agent-{n}")
    table.add("inbox.*", "watcher")
    routes = {f"inbox.{n}": table.route(f"inbox.{n}") for n in range(100)}
    table.add("inbox.7", "agent-7b")
    table.remove("inbox.3", "agent-3")
    for topic, route in routes.items():
        if topic in ("inbox.3", "inbox.7"):
            assert table.cached(topic) is None
        else:
            assert table.cached(topic) is route
    assert table.route("inbox.7") == ("agent-7", "agent-7b", "watcher")
    assert table.route("inbox.3") == ("watcher",)


def test_a_wildcard_subscription_makes_cached_routes_stale_without_walking_them() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("a.b", "exact")
    assert table.route("a.b") == ("exact",)
    table.add("a.#", "wildcard")
    assert table.cached("a.b") is None
    assert table.route("a.b") == ("exact", "wildcard")
    table.remove("a.#", "wildcard")
    assert table.route("a.b") == ("exact",)


def test_an_idle_subscription_costs_well_under_a_kilobyte() -> None:
    async def main() -> float:
        async with MessageBus() as bus:

            async def handler(message: Message) -> None:
                pass

            for n in range(10):  # the first subscriptions make the tables they share
                await bus.subscribe(f"warm.{n}", handler)
            count = 5000
            topics = [f"agent.{n}.inbox" for n in range(count)]
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for n, topic in enumerate(topics):
                    await bus.subscribe(topic if n % 10 else f"agent.{n}.*", handler)
                gc.collect()
                return (tracemalloc.get_traced_memory()[0] - before) / count
            finally:
                tracemalloc.stop()

    per_subscription = asyncio.run(main())
    assert per_subscription < 800, f"{per_subscription:.0f} bytes per idle subscription"
