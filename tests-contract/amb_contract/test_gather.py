"""Scatter-gather: one request every subscription may answer (docs/semantics.md, "Gather")."""

from __future__ import annotations

import time

import anyio
import pytest

from amb_contract.suite import WAIT
from amb_core import Message, MessageBus, RemoteHandlerError, Replies
from amb_core.testing import BusFactory

pytestmark = pytest.mark.anyio


async def _answer_as(bus: MessageBus, topic: str, name: str, group: str | None = None) -> None:
    async def answer(request: Message) -> None:
        await bus.reply(request, {"from": name, "q": request.payload.get("q")}, sender=name)

    await bus.subscribe(topic, answer, group=group)


async def _three_ungrouped_and_two_groups(make_bus: BusFactory, topic: str) -> MessageBus:
    """Three ungrouped subscriptions (two on one bus) and two groups of two members each."""
    one, two, three = await make_bus(), await make_bus(), await make_bus()
    await _answer_as(one, topic, "solo-1")
    await _answer_as(one, topic, "solo-2")
    await _answer_as(two, topic, "solo-3")
    for bus in (two, three):
        await _answer_as(bus, topic, "reviewers", group="reviewers")
        await _answer_as(bus, topic, "auditors", group="auditors")
    return await make_bus()


async def test_gather_across_three_subscriptions_and_two_groups_gets_five_replies(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester = await _three_ungrouped_and_two_groups(amb_make_bus, amb_topic)
    counted = requester.capabilities.counts_receivers
    started = time.monotonic()
    # Where the broker counts who received the request, gather returns once all of them
    # answered; elsewhere max_replies stops it.
    replies = await requester.gather(amb_topic, {"q": 1}, timeout=WAIT, max_replies=None if counted else 5)
    assert time.monotonic() - started < WAIT
    assert isinstance(replies, Replies)
    assert sorted(reply.payload["from"] for reply in replies) == [
        "auditors",
        "reviewers",
        "solo-1",
        "solo-2",
        "solo-3",
    ]
    assert {reply.payload["q"] for reply in replies} == {1}
    assert replies.failures == []


async def test_gather_without_a_count_waits_for_its_timeout(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester = await _three_ungrouped_and_two_groups(amb_make_bus, amb_topic)
    if requester.capabilities.counts_receivers:
        # Counted: one reply short of the count (a silent subscriber), it waits for the timeout.
        silent = await amb_make_bus()

        async def never(request: Message) -> None:
            pass

        await silent.subscribe(amb_topic, never)
    timeout = 3.0
    started = time.monotonic()
    replies = await requester.gather(amb_topic, {"q": 2}, timeout=timeout)
    assert time.monotonic() - started >= timeout * 0.9
    assert len(replies) == 5


async def test_max_replies_returns_the_first_ones(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester = await _three_ungrouped_and_two_groups(amb_make_bus, amb_topic)
    replies = await requester.gather(amb_topic, timeout=WAIT, max_replies=2)
    assert len(replies) == 2


async def test_gather_that_nobody_answers_is_an_empty_list(amb_make_bus: BusFactory, amb_topic: str) -> None:
    bus = await amb_make_bus()
    timeout = WAIT if bus.capabilities.reports_no_responders else 1.0
    started = time.monotonic()
    replies = await bus.gather(amb_topic, timeout=timeout)
    assert replies == []
    if bus.capabilities.reports_no_responders:
        assert time.monotonic() - started < WAIT  # at once: the broker said nobody receives it


async def test_gather_keeps_the_replies_and_records_the_failures(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responders = await amb_make_bus(), await amb_make_bus()
    await _answer_as(responders, amb_topic, "good")

    async def broken(request: Message) -> None:
        raise RuntimeError("reviewer crashed")

    await responders.subscribe(amb_topic, broken)
    counted = requester.capabilities.counts_receivers
    replies = await requester.gather(amb_topic, timeout=WAIT if counted else 5.0)
    assert [reply.payload["from"] for reply in replies] == ["good"]
    [failure] = replies.failures
    assert isinstance(failure, RemoteHandlerError)
    assert (failure.error_type, failure.error_message) == ("RuntimeError", "reviewer crashed")


async def test_replies_that_come_too_late_are_left_out(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responders = await amb_make_bus(), await amb_make_bus()
    await _answer_as(responders, amb_topic, "fast")
    release = anyio.Event()

    async def slow(request: Message) -> None:
        await release.wait()
        await responders.reply(request, {"from": "slow"})

    await responders.subscribe(amb_topic, slow)
    try:
        replies = await requester.gather(amb_topic, timeout=2.0)
    finally:
        release.set()
    assert [reply.payload["from"] for reply in replies] == ["fast"]


async def test_max_replies_must_be_positive(amb_bus: MessageBus, amb_topic: str) -> None:
    with pytest.raises(ValueError, match="max_replies"):
        await amb_bus.gather(amb_topic, max_replies=0)
