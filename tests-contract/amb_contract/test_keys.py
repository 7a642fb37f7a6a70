"""Ordering keys and work-sharing (docs/semantics.md, "Keys and ordering"): a group spreads one
publisher's messages over its members, and messages with the same key keep their publish order
on every subscription and in every group."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pytest

from amb_core import Message, MessageBus
from amb_core.testing import BusFactory, Recorder

pytestmark = pytest.mark.anyio

MEMBERS = 4
COUNT = 400
KEYS = 8


def _short_handler(
    member: int, handled: list[tuple[int, Message]], done: Recorder
) -> Callable[[Message], Awaitable[None]]:
    """A member's handler: a little work (so that no member can take everything while the
    others are busy), then it records which member handled what, in the order handled."""

    async def handle(message: Message) -> None:
        await anyio.sleep(0.002)
        handled.append((member, message))
        await done(message)

    return handle


async def _group_of(
    make_bus: BusFactory, topic: str, handler: Callable[[int], Callable[[Message], Awaitable[None]]]
) -> None:
    """``MEMBERS`` members of group ``workers`` on ``topic``, each on its own bus (as workers in
    their own processes would be), all subscribed before anything is published."""
    for member in range(MEMBERS):
        worker = await make_bus()
        await worker.subscribe(topic, handler(member), group="workers")


async def test_a_group_shares_one_publishers_work_fairly(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    handled: list[tuple[int, Message]] = []
    done = amb_received()
    await _group_of(amb_make_bus, amb_topic, lambda member: _short_handler(member, handled, done))
    publisher = await amb_make_bus()
    for n in range(COUNT):
        await publisher.publish(amb_topic, {"n": n})
    await done.wait_for(COUNT)
    assert {message.payload["n"] for _, message in handled} == set(range(COUNT))
    shares = Counter(member for member, _ in handled)
    # Round-robin gives 25% each; the broker's own balancing may be uneven, never one-sided.
    assert all(shares[member] >= COUNT // 10 for member in range(MEMBERS)), shares


async def test_keyed_messages_keep_their_order_in_a_group_and_on_every_subscription(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    handling: dict[str, int] = {}  # key -> the member handling one of its messages right now
    overlaps: list[str] = []
    group_order: list[tuple[int, Message]] = []  # (member, message), as handling began
    group_done = amb_received()

    def member_handler(member: int) -> Callable[[Message], Awaitable[None]]:
        async def handle(message: Message) -> None:
            key = message.key
            assert key is not None
            if key in handling:
                overlaps.append(f"{key}: member {member} began while member {handling[key]} was busy")
            handling[key] = member
            group_order.append((member, message))
            await anyio.sleep(0.002)
            del handling[key]
            await group_done(message)

        return handle

    await _group_of(amb_make_bus, amb_topic, member_handler)
    publisher = await amb_make_bus()
    on_the_publishers_bus, on_another_bus = amb_received(), amb_received()
    await publisher.subscribe(amb_topic, on_the_publishers_bus)
    await (await amb_make_bus()).subscribe(amb_topic, on_another_bus)

    for n in range(COUNT):
        await publisher.publish(amb_topic, {"seq": n // KEYS}, key=f"key-{n % KEYS}")

    for got in (on_the_publishers_bus, on_another_bus):
        await got.wait_for(COUNT)
        _assert_in_order_per_key(got.messages)
    await group_done.wait_for(COUNT)
    if publisher.capabilities.group_key_order:
        # One key's messages are handled one at a time, in publish order, by the group as a whole.
        assert overlaps == []
        _assert_in_order_per_key([message for _, message in group_order])
    else:
        # Each member sees its share of a key's messages in publish order.
        for member in range(MEMBERS):
            _assert_in_order_per_key([m for who, m in group_order if who == member], complete=False)


def _assert_in_order_per_key(messages: list[Message], *, complete: bool = True) -> None:
    """Each key's ``seq`` numbers come in publish order (and all of them, if ``complete``)."""
    per_key: dict[str, list[int]] = {}
    for message in messages:
        assert message.key is not None
        per_key.setdefault(message.key, []).append(message.payload["seq"])
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), f"{key}: {seqs}"
        if complete:
            assert seqs == list(range(COUNT // KEYS)), f"{key}: {seqs}"
    if complete:
        assert sorted(per_key) == sorted(f"key-{k}" for k in range(KEYS))


async def test_without_a_key_one_publishers_order_is_kept_where_the_adapter_says_so(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    got = amb_received()
    await amb_bus.subscribe(amb_topic, got)
    for n in range(100):
        await amb_bus.publish(amb_topic, {"n": n})
    await got.wait_for(100)
    numbers = [p["n"] for p in got.payloads]
    if amb_bus.capabilities.keyless_order:
        assert numbers == list(range(100))
    else:
        assert sorted(numbers) == list(range(100))  # spread for groups to share: only keys order


async def test_a_key_travels_with_the_message_and_with_a_request(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    got = amb_received()
    await responder.subscribe(f"{amb_topic}.signal", got)

    async def answer(message: Message) -> None:
        await responder.reply(message, {"key": message.key})

    await responder.subscribe(f"{amb_topic}.question", answer)
    await requester.publish(f"{amb_topic}.signal", {"n": 1}, key="conversation-7")
    await requester.publish(f"{amb_topic}.signal", {"n": 2})
    reply = await requester.request(f"{amb_topic}.question", {}, key="conversation-8", timeout=30)
    assert reply.payload == {"key": "conversation-8"}
    messages = await got.wait_for(2)
    assert sorted((m.payload["n"], m.key) for m in messages) == [(1, "conversation-7"), (2, None)]


@pytest.mark.parametrize("bad", ["", "k" * 257, "\ud800", 7, b"bytes"])
async def test_an_invalid_key_is_refused_before_sending(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder], bad: object
) -> None:
    got = amb_received()
    await amb_bus.subscribe(amb_topic, got)
    with pytest.raises((TypeError, ValueError)):
        await amb_bus.publish(amb_topic, {"n": 0}, key=bad)  # type: ignore[arg-type]
    await amb_bus.publish(amb_topic, {"n": 1}, key="k")
    [message] = await got.wait_for(1)
    assert message.payload == {"n": 1}
