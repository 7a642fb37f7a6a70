"""Ordering keys and work-sharing (docs/semantics.md, "Keys and ordering"): a group spreads one
publisher's messages over its members, and messages with the same key keep their publish order
on every subscription and in every group."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pytest

from amb_core import Message, MessageBus
from conftest import BusFactory, Received

pytestmark = pytest.mark.anyio

MEMBERS = 4
COUNT = 400
KEYS = 8


def _short_handler(
    member: int, handled: list[tuple[int, Message]], done: Received
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
    make_bus: BusFactory, topic: str, received: Callable[[], Received]
) -> None:
    handled: list[tuple[int, Message]] = []
    done = received()
    await _group_of(make_bus, topic, lambda member: _short_handler(member, handled, done))
    publisher = await make_bus()
    for n in range(COUNT):
        await publisher.publish(topic, {"n": n})
    await done.wait_for(COUNT)
    assert {message.payload["n"] for _, message in handled} == set(range(COUNT))
    shares = Counter(member for member, _ in handled)
    # Round-robin gives 25% each; the broker's own balancing may be uneven, never one-sided.
    assert all(shares[member] >= COUNT // 10 for member in range(MEMBERS)), shares


async def test_keyed_messages_keep_their_order_in_a_group_and_on_every_subscription(
    make_bus: BusFactory, topic: str, received: Callable[[], Received]
) -> None:
    handling: dict[str, int] = {}  # key -> the member handling one of its messages right now
    overlaps: list[str] = []
    group_order: list[tuple[int, Message]] = []  # (member, message), as handling began
    group_done = received()

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

    await _group_of(make_bus, topic, member_handler)
    publisher = await make_bus()
    on_the_publishers_bus, on_another_bus = received(), received()
    await publisher.subscribe(topic, on_the_publishers_bus)
    await (await make_bus()).subscribe(topic, on_another_bus)

    for n in range(COUNT):
        await publisher.publish(topic, {"seq": n // KEYS}, key=f"key-{n % KEYS}")

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
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    got = received()
    await bus.subscribe(topic, got)
    for n in range(100):
        await bus.publish(topic, {"n": n})
    await got.wait_for(100)
    numbers = [p["n"] for p in got.payloads]
    if bus.capabilities.keyless_order:
        assert numbers == list(range(100))
    else:
        assert sorted(numbers) == list(range(100))  # spread for groups to share: only keys order


async def test_a_key_travels_with_the_message_and_with_a_request(
    make_bus: BusFactory, topic: str, received: Callable[[], Received]
) -> None:
    requester, responder = await make_bus(), await make_bus()
    got = received()
    await responder.subscribe(f"{topic}.signal", got)

    async def answer(message: Message) -> None:
        await responder.reply(message, {"key": message.key})

    await responder.subscribe(f"{topic}.question", answer)
    await requester.publish(f"{topic}.signal", {"n": 1}, key="conversation-7")
    await requester.publish(f"{topic}.signal", {"n": 2})
    reply = await requester.request(f"{topic}.question", {}, key="conversation-8", timeout=30)
    assert reply.payload == {"key": "conversation-8"}
    messages = await got.wait_for(2)
    assert sorted((m.payload["n"], m.key) for m in messages) == [(1, "conversation-7"), (2, None)]


@pytest.mark.parametrize("bad", ["", "k" * 257, "\ud800", 7, b"bytes"])
async def test_an_invalid_key_is_refused_before_sending(
    bus: MessageBus, topic: str, received: Callable[[], Received], bad: object
) -> None:
    got = received()
    await bus.subscribe(topic, got)
    with pytest.raises((TypeError, ValueError)):
        await bus.publish(topic, {"n": 0}, key=bad)  # type: ignore[arg-type]
    await bus.publish(topic, {"n": 1}, key="k")
    [message] = await got.wait_for(1)
    assert message.payload == {"n": 1}
