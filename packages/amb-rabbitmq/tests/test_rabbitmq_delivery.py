"""Acknowledgements, retries, dead letters, hand-over, ordering and the broker's own interventions."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from importlib.metadata import version

import anyio
import anyio.lowlevel
import pytest

from amb_core import BrokerRefusedError, Message
from amb_core.adapter import decode
from amb_core.testing import BusFactory, Recorder
from conftest import WAIT, Admin

pytestmark = pytest.mark.anyio


def _lost_connection(caplog: pytest.LogCaptureFixture) -> bool:
    return any("lost the connection" in record.getMessage() for record in caplog.records)


class _Logged(logging.Handler):
    """Sets an event when logger ``amb`` writes a record containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_a_grouped_message_is_retried_then_dead_lettered(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str
) -> None:
    bus = await amb_make_bus(max_attempts=3)
    queue = admin.group_queue("workers", amb_topic)
    attempts: list[Message] = []
    dead_lettered = _Logged("dead-lettered")
    logging.getLogger("amb").addHandler(dead_lettered)

    async def always_fails(message: Message) -> None:
        attempts.append(message)
        raise RuntimeError("cannot handle this")

    channel = await admin.channel()
    dead = await channel.declare_queue(f"{prefix}.dlq", passive=True)
    await bus.subscribe(amb_topic, always_fails, group="workers")
    message_id = await bus.publish(amb_topic, {"n": 1})
    try:
        with anyio.fail_after(WAIT):
            async with dead.iterator() as messages:
                incoming = await anext(aiter(messages))
                await incoming.ack()
            await dead_lettered.seen.wait()  # logged once the broker confirmed the dead letter
    finally:
        logging.getLogger("amb").removeHandler(dead_lettered)
    assert [message.id for message in attempts] == [message_id] * 3
    assert incoming.routing_key == amb_topic
    assert incoming.headers["x-amb-attempt"] == 3
    assert incoming.headers["x-amb-queue"] == queue
    assert decode(incoming.body).id == message_id
    assert await admin.ready(queue) == 0


async def test_a_message_that_succeeds_on_a_retry_is_not_dead_lettered(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus(max_attempts=3)
    admin.group_queue("workers", amb_topic)
    got = amb_received()
    calls = 0

    async def fails_twice(message: Message) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("not yet")
        await got(message)

    await bus.subscribe(amb_topic, fails_twice, group="workers")
    await bus.publish(amb_topic, {"n": 1})
    await got.wait_for(1)
    assert calls == 3
    assert await admin.ready(f"{prefix}.dlq") == 0


async def test_ungrouped_subscriptions_see_a_failed_message_once(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus()
    got = amb_received()
    calls: list[int] = []

    async def fails_on_zero(message: Message) -> None:
        calls.append(message.payload["n"])
        if message.payload["n"] == 0:
            raise RuntimeError("broadcast signal handler failed")
        await got(message)

    await bus.subscribe(amb_topic, fails_on_zero)
    await bus.publish(amb_topic, {"n": 0})
    await bus.publish(amb_topic, {"n": 1})
    await got.wait_for(1)
    assert calls == [0, 1]


async def test_a_leaving_member_hands_back_what_it_had_not_handled(
    amb_make_bus: BusFactory, admin: Admin, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    leaving_bus, staying_bus = await amb_make_bus(), await amb_make_bus()
    admin.group_queue("workers", amb_topic)
    holding, release = anyio.Event(), anyio.Event()
    handled_by_leaving: list[int] = []

    async def slow(message: Message) -> None:
        holding.set()
        await release.wait()
        handled_by_leaving.append(message.payload["n"])

    staying = amb_received()
    leaving_id = await leaving_bus.subscribe(amb_topic, slow, group="workers")
    await staying_bus.subscribe(amb_topic, staying, group="workers")
    for n in range(20):
        await leaving_bus.publish(amb_topic, {"n": n})
    with anyio.fail_after(WAIT):
        await holding.wait()
    # The leaving member holds one message in its handler and has more queued locally; the
    # call in flight goes on after unsubscribe returns.
    await leaving_bus.unsubscribe(leaving_id)
    release.set()
    # Everything else reaches the staying member, with the leaving member's bus still connected.
    await staying.wait_for(19)
    assert len(handled_by_leaving) == 1
    assert sorted([p["n"] for p in staying.payloads] + handled_by_leaving) == list(range(20))


async def test_fire_and_forget_then_confirmed_keeps_publish_order(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus()
    got = amb_received()
    await bus.subscribe(amb_topic, got)
    for n in range(300):
        await bus.publish(amb_topic, {"n": n}, wait_for_confirmation=n % 100 == 99)
    await got.wait_for(300)
    assert [p["n"] for p in got.payloads] == list(range(300))


async def test_order_holds_when_prefetch_exceeds_the_local_queue(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus(queue_size=4, prefetch=64)
    got = amb_received()

    async def slow(message: Message) -> None:
        await asyncio.sleep(0)
        await got(message)

    await bus.subscribe(amb_topic, slow)
    for n in range(300):
        await bus.publish(amb_topic, {"n": n})
    await got.wait_for(300)
    assert [p["n"] for p in got.payloads] == list(range(300))


async def test_acknowledgements_out_of_order_across_subscriptions(
    amb_make_bus: BusFactory,
    admin: Admin,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Many consumers share a channel and settle in random order: the coalesced acknowledgements
    # must never name a delivery tag twice (RabbitMQ would close the channel).
    publisher, consumer = await amb_make_bus(), await amb_make_bus()
    admin.group_queue("workers", amb_topic)
    rng = random.Random(7)
    subscribers = [amb_received() for _ in range(4)]

    def jittery(record: Recorder) -> Callable[[Message], Awaitable[None]]:
        async def handle(message: Message) -> None:
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            await record(message)

        return handle

    await consumer.subscribe(amb_topic, jittery(subscribers[0]), concurrency=8)
    await consumer.subscribe(amb_topic, jittery(subscribers[1]), concurrency=3)
    await consumer.subscribe(amb_topic, jittery(subscribers[2]), group="workers", concurrency=5)
    await consumer.subscribe(amb_topic, jittery(subscribers[3]))
    for n in range(400):
        await publisher.publish(amb_topic, {"n": n})
    for record in subscribers:
        await record.wait_for(400)
        assert sorted(p["n"] for p in record.payloads) == list(range(400))
    # Nothing is left unacknowledged: a second wave flows through the same channel just as well.
    for n in range(400, 500):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=n == 499)
    for record in subscribers:
        await record.wait_for(500)
    assert not _lost_connection(caplog)


async def test_a_refused_subscription_leaves_the_bus_working(
    amb_make_bus: BusFactory,
    admin: Admin,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = await amb_make_bus()
    # Someone else owns a durable queue by the group's name, without the priority argument.
    channel = await admin.channel()
    await channel.declare_queue(admin.group_queue("taken", amb_topic), durable=True)
    # Refused for good (until someone deletes that queue): not a ConnectionError to retry.
    with pytest.raises(BrokerRefusedError) as refused:
        await bus.subscribe(amb_topic, amb_received(), group="taken")
    assert not isinstance(refused.value, ConnectionError)
    assert "inequivalent arg 'x-max-priority'" in str(refused.value)
    got = amb_received()
    await bus.subscribe(amb_topic, got)
    await bus.publish(amb_topic, {"n": 1})
    assert (await got.wait_for(1))[0].payload == {"n": 1}
    assert not _lost_connection(caplog)


@pytest.mark.skipif(
    int(version("aiormq").split(".")[0]) < 7,
    reason="aiormq < 7 (Python 3.10's aio-pika 9) does not report a consumer cancelled by the broker",
)
async def test_a_consumer_cancelled_by_the_broker_is_restored(
    amb_make_bus: BusFactory, admin: Admin, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus()
    queue = admin.group_queue("workers", amb_topic)
    got = amb_received()
    await bus.subscribe(amb_topic, got, group="workers")
    channel = await admin.channel()
    await channel.queue_delete(queue)  # an operator deletes the queue under the consumer
    with anyio.fail_after(WAIT):
        n = 0
        while not got.messages:  # the adapter declares the queue again and resumes
            n += 1
            await bus.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
            with anyio.move_on_after(0.2):
                await got.wait_for(1)


async def test_a_confirmed_publish_nobody_receives_is_logged(
    amb_make_bus: BusFactory, amb_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await amb_make_bus()
    message_id = await bus.publish(f"{amb_topic}.nobody", {"n": 1}, wait_for_confirmation=True)
    assert any(
        record.levelno == logging.WARNING
        and message_id in record.getMessage()
        and amb_topic in record.getMessage()
        for record in caplog.records
    )


async def test_many_concurrent_requests_share_one_inbox(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def answer(request: Message) -> None:
        await responder.reply(request, {"n": request.payload["n"]})

    await responder.subscribe(amb_topic, answer, concurrency=32)
    replies = await asyncio.gather(
        *(requester.request(amb_topic, {"n": n}, timeout=WAIT) for n in range(500))
    )
    assert [reply.payload["n"] for reply in replies] == list(range(500))


async def test_fire_and_forget_just_before_closing_is_not_lost(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    subscriber, publisher = await amb_make_bus(), await amb_make_bus()
    got = amb_received()
    await subscriber.subscribe(amb_topic, got)
    for n in range(500):
        await publisher.publish(amb_topic, {"n": n})
    await publisher.disconnect()  # frames may still sit in the client's write queue here
    await got.wait_for(500)
    assert [p["n"] for p in got.payloads] == list(range(500))


async def test_a_handler_finishing_while_its_bus_closes_is_acknowledged(
    amb_make_bus: BusFactory, admin: Admin, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    publisher, first_member = await amb_make_bus(), await amb_make_bus(drain_timeout=WAIT)
    admin.group_queue("workers", amb_topic)
    holding, release = anyio.Event(), anyio.Event()

    async def slow(message: Message) -> None:
        holding.set()
        await release.wait()

    await first_member.subscribe(amb_topic, slow, group="workers")
    await publisher.publish(amb_topic, {"n": "handled"})
    with anyio.fail_after(WAIT):
        await holding.wait()
    closing = asyncio.ensure_future(first_member.disconnect())
    await anyio.lowlevel.checkpoint()  # the bus starts closing: the handler finishes during its drain
    release.set()
    await closing
    later_member = amb_received()
    second_member = await amb_make_bus()
    await second_member.subscribe(amb_topic, later_member, group="workers")
    await publisher.publish(amb_topic, {"n": "last"})
    await later_member.wait_for(1)
    assert later_member.payloads == [{"n": "last"}], "a handled message came back"
