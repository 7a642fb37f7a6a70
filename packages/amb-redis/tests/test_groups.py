"""Grouped subscriptions on Streams consumer groups: redelivery, dead letters, hand-over,
take-over of dead consumers, and what the adapter leaves in Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as redis

from amb_core import Message, MessageBus
from amb_core.adapter import decode, encode
from amb_core.testing import BusFactory, Recorder, eventually
from conftest import WAIT, LogWaiter

pytestmark = pytest.mark.anyio


def stream(topic: str) -> str:
    return f"amb:stream:{topic}"


def attempts_key(topic: str, group: str = "workers") -> str:
    return f"amb:attempts:{topic}:{group}"


async def _group_made_by_hand(admin: redis.Redis, topic: str) -> None:
    """Group "workers" on ``topic``, as the adapter makes it, before any bus has joined."""
    await admin.xgroup_create(stream(topic), "workers", id="$", mkstream=True)
    await admin.zadd("amb:groups", {topic: int(time.time())})
    await admin.delete("amb:routes")


async def _forget_group_made_by_hand(admin: redis.Redis, topic: str, bus: MessageBus) -> None:
    # Groups outlive their members (until group_expiry): once the test's bus has left, clean up
    # after it.
    await bus.disconnect()
    await admin.zrem("amb:groups", topic)
    await admin.hdel("amb:deadlines", f"{topic} workers")
    await admin.delete(
        stream(topic), f"amb:idle:{topic}", attempts_key(topic), f"amb:members:{topic}:workers", "amb:routes"
    )


async def _dead_letters(admin: redis.Redis, topic: str, count: int) -> list[Any]:
    """The dead letters of group "workers" on ``topic``, once there are ``count``: Redis keeps
    them where there is nothing to await, so this looks again until they are there."""
    entries: list[Any] = []

    async def enough() -> bool:
        nonlocal entries
        entries = list(await admin.xrange(f"amb:dlq:{topic}:workers"))
        return len(entries) >= count

    await eventually(enough, within=WAIT, every=0.01)
    return entries


async def test_a_failing_entry_is_retried_then_dead_lettered(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    bus = await amb_make_bus(max_attempts=3)
    dead = log_waiter("dead-lettered")
    got = Recorder(timeout=WAIT)
    attempts: list[str] = []

    async def poisoned(message: Message) -> None:
        if message.payload["n"] == 0:
            attempts.append(message.id)
            raise RuntimeError("cannot handle this one")
        await got(message)

    await bus.subscribe(amb_topic, poisoned, group="workers")
    poison_id = await bus.publish(amb_topic, {"n": 0})
    await bus.publish(amb_topic, {"n": 1})
    record = await dead.wait()
    await got.wait_for(1)
    assert attempts == [poison_id] * 3
    assert f"amb:dlq:{amb_topic}:workers" in record.getMessage()
    entries: Any = await admin.xrange(f"amb:dlq:{amb_topic}:workers")
    [(_, fields)] = entries
    assert decode(fields[b"message"]).id == poison_id
    assert (fields[b"group"], fields[b"attempts"], fields[b"stream"]) == (
        b"workers",
        b"3",
        stream(amb_topic).encode(),
    )
    assert fields[b"reason"] == b"handler raised RuntimeError: cannot handle this one"
    original: Any = await admin.xrange(stream(amb_topic), fields[b"id"], fields[b"id"])
    assert original[0][1][b"message"] == fields[b"message"]  # moved as received

    async def settled() -> bool:
        summary: Any = await admin.xpending(stream(amb_topic), "workers")
        # The failure count is forgotten once the entry is dead-lettered.
        return bool(summary["pending"] == 0) and not await admin.exists(attempts_key(amb_topic))

    await eventually(settled, within=WAIT, every=0.01)
    await admin.delete(f"amb:dlq:{amb_topic}:workers")


async def test_an_entry_that_fails_then_succeeds_leaves_no_failure_count(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    bus = await amb_make_bus(max_attempts=3)
    got = Recorder(timeout=WAIT)
    calls: list[int] = []

    async def fails_twice(message: Message) -> None:
        calls.append(message.payload["n"])
        if len(calls) < 3:
            raise RuntimeError("not yet")
        await got(message)

    await bus.subscribe(amb_topic, fails_twice, group="workers")
    await bus.publish(amb_topic, {"n": 7})
    await got.wait_for(1)
    assert calls == [7, 7, 7]

    async def settled() -> bool:
        summary: Any = await admin.xpending(stream(amb_topic), "workers")
        return bool(summary["pending"] == 0) and not await admin.exists(attempts_key(amb_topic))

    await eventually(settled, within=WAIT, every=0.01)
    assert not await admin.exists(f"amb:dlq:{amb_topic}:workers")


async def test_a_garbled_entry_is_dead_lettered_with_its_reason(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    bus = await amb_make_bus()
    invalid = log_waiter("not a valid AMB envelope")
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got, group="workers")
    await bus.adapter.publish_raw(amb_topic, b"\x00garbage")
    await bus.publish(amb_topic, {"after": True})
    await got.wait_for(1)
    assert amb_topic in (await invalid.wait()).getMessage()
    [(_, fields)] = await _dead_letters(admin, amb_topic, 1)
    assert fields[b"message"] == b"\x00garbage"
    assert b"not an AMB envelope" in fields[b"reason"]
    assert fields[b"attempts"] == b"1"

    async def nothing_pending() -> bool:
        summary: Any = await admin.xpending(stream(amb_topic), "workers")
        return bool(summary["pending"] == 0)

    await eventually(nothing_pending, within=WAIT, every=0.01)
    await admin.delete(f"amb:dlq:{amb_topic}:workers")


async def test_a_hostile_entry_read_with_good_ones_is_dead_lettered_and_they_are_handled_once(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    """Issue 11, problem 3: an envelope whose timestamp overflows used to kill the read loop,
    and the good entries read with it were claimed again and again until dead-lettered."""
    await _group_made_by_hand(admin, amb_topic)
    good = [Message(id=f"good-{n}", topic=amb_topic, payload={"n": n}) for n in range(3)]
    hostile = b'{"amb":1,"id":"hostile","topic":"x","payload":{},"timestamp":"9999-12-31T23:59:59-23:59"}'
    for data in (encode(good[0]), hostile, encode(good[1]), encode(good[2])):
        await admin.xadd(stream(amb_topic), {"message": data})
    bus = await amb_make_bus(prefetch=10)  # all four in the first read
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got, group="workers")
    await got.wait_for(3)
    [(_, fields)] = await _dead_letters(admin, amb_topic, 1)
    assert fields[b"message"] == hostile
    assert b"OverflowError" in fields[b"reason"]
    # The consumer reads on, and nothing was delivered twice.
    await bus.publish(amb_topic, {"n": 3}, wait_for_confirmation=True)
    await got.wait_for(4)
    assert [m.payload["n"] for m in got.messages] == [0, 1, 2, 3]

    async def nothing_pending() -> bool:
        summary: Any = await admin.xpending(stream(amb_topic), "workers")
        return bool(summary["pending"] == 0)

    await eventually(nothing_pending, within=WAIT, every=0.01)
    assert len(got.messages) == 4
    await admin.delete(f"amb:dlq:{amb_topic}:workers")


async def test_a_take_over_is_not_an_attempt(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    """A crashed consumer's entry taken over many times (Redis counts each take-over as a
    delivery) still gets its max_attempts handler calls."""
    await _group_made_by_hand(admin, amb_topic)
    message = Message(id="orphan-1", topic=amb_topic, payload={"n": 1})
    await admin.xadd(stream(amb_topic), {"message": encode(message)})
    await admin.xreadgroup("workers", "crashed", {stream(amb_topic): ">"}, count=1)
    [[_, [(entry_id, _)]]] = await admin.xreadgroup("workers", "crashed", {stream(amb_topic): "0"}, count=1)
    for _ in range(5):  # five more crashed consumers took it over, one after the other
        await admin.xclaim(stream(amb_topic), "workers", "crashed", 0, [entry_id])
    bus = await amb_make_bus(claim_idle=0.3, max_attempts=2)
    got = Recorder(timeout=WAIT)
    calls: list[str] = []

    async def fails_once(message: Message) -> None:
        calls.append(message.id)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        await got(message)

    await bus.subscribe(amb_topic, fails_once, group="workers")
    await got.wait_for(1)
    assert calls == ["orphan-1", "orphan-1"]
    assert not await admin.exists(f"amb:dlq:{amb_topic}:workers")
    await _forget_group_made_by_hand(admin, amb_topic, bus)


async def test_failures_before_a_crash_still_count_after_the_take_over(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    await _group_made_by_hand(admin, amb_topic)
    message = Message(id="orphan-2", topic=amb_topic, payload={"n": 2})
    entry_id = await admin.xadd(stream(amb_topic), {"message": encode(message)})
    await admin.xreadgroup("workers", "crashed", {stream(amb_topic): ">"}, count=1)
    # The crashed consumer's handler had failed once (what the adapter records on a failure).
    await admin.hset(attempts_key(amb_topic), entry_id, 1)
    bus = await amb_make_bus(claim_idle=0.3, max_attempts=2)
    calls: list[str] = []

    async def always_fails(message: Message) -> None:
        calls.append(message.id)
        raise RuntimeError("still broken")

    await bus.subscribe(amb_topic, always_fails, group="workers")
    [(_, fields)] = await _dead_letters(admin, amb_topic, 1)
    assert calls == ["orphan-2"]  # attempt 2 of 2: dead-lettered after it
    assert fields[b"attempts"] == b"2"
    assert not await admin.exists(attempts_key(amb_topic))
    await admin.delete(f"amb:dlq:{amb_topic}:workers")
    await _forget_group_made_by_hand(admin, amb_topic, bus)


async def test_an_entry_abandoned_at_shutdown_goes_to_another_member(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    leaving_bus = await amb_make_bus(drain_timeout=0.1)
    holding = anyio.Event()
    held: list[Message] = []

    async def never_finishes(message: Message) -> None:
        held.append(message)
        holding.set()
        await anyio.sleep_forever()

    await leaving_bus.subscribe(amb_topic, never_finishes, group="workers")
    await leaving_bus.publish(amb_topic, {"n": 0})
    with anyio.fail_after(WAIT):
        await holding.wait()
    staying_bus = await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await staying_bus.subscribe(amb_topic, got, group="workers")
    await leaving_bus.disconnect()  # cancels the handler: the entry was never acknowledged
    [message] = await got.wait_for(1)
    assert message.id == held[0].id


async def test_unfinished_work_waits_for_the_next_member(amb_make_bus: BusFactory, amb_topic: str) -> None:
    first = await amb_make_bus(drain_timeout=0.1)
    holding = anyio.Event()

    async def stuck(message: Message) -> None:
        holding.set()
        await anyio.sleep_forever()

    await first.subscribe(amb_topic, stuck, group="workers")
    for n in range(5):
        await first.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        await holding.wait()
    await first.disconnect()  # one handler in flight, one prefetched entry, three never read
    later = await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await later.subscribe(amb_topic, got, group="workers")
    await got.wait_for(5)
    assert sorted(p["n"] for p in got.payloads) == list(range(5))


async def test_a_dead_consumers_entries_are_taken_over(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    # A consumer that read an entry and died without a word, as a crashed process would.
    await _group_made_by_hand(admin, amb_topic)
    message = Message(id="orphan-1", topic=amb_topic, payload={"n": 1})
    await admin.xadd(stream(amb_topic), {"message": encode(message)})
    await admin.xreadgroup("workers", "crashed", {stream(amb_topic): ">"}, count=1)
    bus = await amb_make_bus(claim_idle=0.3)
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got, group="workers")
    [taken_over] = await got.wait_for(1)
    assert taken_over.id == "orphan-1"
    await _forget_group_made_by_hand(admin, amb_topic, bus)


async def test_a_group_whose_last_member_left_keeps_what_is_published_until_one_joins(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    # Issue 12: the group was deleted when its last member left, and what was published until
    # a member came back was lost with a WARNING.
    bus = await amb_make_bus(group_expiry=3600)
    got = Recorder(timeout=WAIT)
    first = await bus.subscribe(amb_topic, got, group="workers")
    second = await bus.subscribe(amb_topic, got, group="workers")
    await bus.publish(amb_topic, {"n": 1})
    await got.wait_for(1)
    await bus.unsubscribe(first)
    await bus.unsubscribe(second)

    async def left() -> bool:
        return await admin.hlen(f"amb:members:{amb_topic}:workers") == 0

    await eventually(left, within=WAIT, every=0.01)
    # It now lives group_expiry from the moment its last member left.
    deadline = float(await admin.hget("amb:deadlines", f"{amb_topic} workers") or 0)
    assert time.time() + 3600 - 5 < deadline <= time.time() + 3600 + 1
    assert await bus.publish(amb_topic, {"n": 2}, wait_for_confirmation=True)
    await bus.subscribe(amb_topic, got, group="workers")
    await bus.publish(amb_topic, {"n": 3})
    await got.wait_for(3)
    assert [p["n"] for p in got.payloads] == [1, 2, 3]


async def test_groups_nobody_vouches_for_are_forgotten(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    ghost = f"{amb_topic}.ghost"
    await admin.xadd(stream(ghost), {"message": b"x"})
    await admin.zadd("amb:groups", {ghost: 1})  # a pattern without groups, due since 1970
    bus = await amb_make_bus(claim_idle=0.2)
    await bus.subscribe(amb_topic, Recorder(timeout=WAIT), group="workers")

    async def forgotten() -> bool:
        return await admin.zscore("amb:groups", ghost) is None and not await admin.exists(stream(ghost))

    await eventually(forgotten, within=WAIT, every=0.01)
    assert await admin.zscore("amb:groups", amb_topic) is not None


async def test_a_dead_group_is_forgotten_while_a_live_one_on_the_same_stream_stays(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    """A group whose members all died would keep its backlog for good, and hold up the stream's
    publishers once it reaches stream_maxlen: it is removed group_expiry after it was last
    vouched for."""
    await admin.xgroup_create(stream(amb_topic), "dead", id="$", mkstream=True)
    await admin.hset("amb:deadlines", f"{amb_topic} dead", 1)  # due since 1970
    bus = await amb_make_bus(claim_idle=0.2)
    await bus.subscribe(amb_topic, Recorder(timeout=WAIT), group="live")

    async def only_the_live_one() -> bool:
        groups: Any = await admin.xinfo_groups(stream(amb_topic))
        return [group["name"] for group in groups] == [b"live"]

    await eventually(only_the_live_one, within=WAIT, every=0.01)
    assert await admin.hget("amb:deadlines", f"{amb_topic} dead") is None
    assert await admin.hget("amb:deadlines", f"{amb_topic} live") is not None


async def test_a_reader_that_hits_an_unexpected_error_says_so_and_goes_on(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    bus = await amb_make_bus(claim_idle=300)
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got, group="workers")
    await bus.publish(amb_topic, {"n": 0}, wait_for_confirmation=True)
    await got.wait_for(1)
    failing = log_waiter("failed; trying again")
    # Someone overwrote the stream with a string: every read now gets WRONGTYPE.
    await admin.delete(stream(amb_topic))
    await admin.set(stream(amb_topic), b"not a stream")
    await admin.publish(f"amb:wake:{amb_topic}", b"claim")
    record = await failing.wait()
    assert record.levelno == logging.ERROR and "WRONGTYPE" in str(
        record.exc_info[1] if record.exc_info else ""
    )
    recreated = log_waiter("was gone")
    await admin.delete(stream(amb_topic))  # the reader, still trying, finds the group gone and makes it again
    await recreated.wait()
    await bus.publish(amb_topic, {"n": 1}, wait_for_confirmation=True)
    await got.wait_for(2)
    assert [p["n"] for p in got.payloads] == [0, 1]


async def test_a_member_never_joins_an_expired_group_that_no_sweep_removed_yet(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    await _group_made_by_hand(admin, amb_topic)
    await admin.xadd(stream(amb_topic), {"message": b"left from long ago"})
    await admin.hset("amb:deadlines", f"{amb_topic} workers", 1)  # expired in 1970
    bus = await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got, group="workers")
    await bus.publish(amb_topic, {"n": "new"})
    await got.wait_for(1)
    assert got.payloads == [{"n": "new"}]


async def test_a_group_on_its_own_topic_keeps_the_other_topics_cached_routes(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    # Issue 12: any group coming or going dropped every cached route, and finding one matched
    # the topic against every pattern with groups: linear in the groups, on the publish path.
    bus = await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await bus.subscribe(f"{amb_topic}.a", got, group="workers")
    await bus.publish(f"{amb_topic}.a", {"n": 1}, wait_for_confirmation=True)
    await bus.subscribe(f"{amb_topic}.*", got, group="watchers")
    assert await admin.sismember("amb:wildcards", f"{amb_topic}.*")
    await bus.publish(f"{amb_topic}.a", {"n": 2}, wait_for_confirmation=True)
    await bus.publish(f"{amb_topic}.b", {"n": 3}, wait_for_confirmation=True)
    assert await admin.hget("amb:routes", f"{amb_topic}.a") in (
        f"{amb_topic}.a {amb_topic}.*".encode(),
        f"{amb_topic}.* {amb_topic}.a".encode(),
    )
    assert await admin.hget("amb:routes", f"{amb_topic}.b") == f"{amb_topic}.*".encode()
    # A group on an exact topic drops that topic's route only.
    await bus.subscribe(f"{amb_topic}.c", Recorder(timeout=WAIT), group="workers")
    assert not await admin.sismember("amb:wildcards", f"{amb_topic}.c")
    assert await admin.hexists("amb:routes", f"{amb_topic}.a")
    assert await admin.hexists("amb:routes", f"{amb_topic}.b")
    await got.wait_for(4)
    assert sorted(p["n"] for p in got.payloads) == [1, 2, 2, 3]


async def test_without_wildcard_groups_a_publish_caches_no_route(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    # Caching wrote to Redis on a topic's first publish: with appendfsync always, an fsync.
    bus = await amb_make_bus(prefix=f"{amb_topic}:")
    got = Recorder(timeout=WAIT)
    await bus.subscribe(f"{amb_topic}.a", got, group="workers")
    await bus.publish(f"{amb_topic}.a", {"n": 1}, wait_for_confirmation=True)
    await got.wait_for(1)
    assert not await admin.exists(f"{amb_topic}:routes")
