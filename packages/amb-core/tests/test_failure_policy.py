"""The failure policy of the bus (docs/semantics.md, "When things go wrong"), where the in-memory
broker or the bus alone can show it. tests-contract/amb_contract/test_chaos.py checks the same rules against
every real broker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import pytest

from amb_core import (
    BrokerUnavailableError,
    BusClosedError,
    DeadLetter,
    InMemoryBroker,
    InvalidPayloadError,
    Link,
    Message,
    MessageBus,
)
from amb_core.adapter import MAX_DEPTH
from amb_core.testing import Recorder, nested_payload

pytestmark = pytest.mark.anyio


# -- limits at publish --------------------------------------------------------------------------


async def test_payloads_nest_up_to_the_limit_and_no_deeper() -> None:
    got = Recorder(timeout=5)
    async with MessageBus() as bus:
        await bus.subscribe("deep", got)
        await bus.publish("deep", nested_payload(MAX_DEPTH))
        with pytest.raises(InvalidPayloadError, match="levels deep"):
            await bus.publish("deep", nested_payload(MAX_DEPTH + 1))
        with pytest.raises(InvalidPayloadError, match="levels deep"):
            await bus.publish("deep", {"ok": 1}, metadata=nested_payload(MAX_DEPTH + 1))
        endless: dict[str, Any] = {}
        endless["again"] = endless
        with pytest.raises(InvalidPayloadError):
            await bus.publish("deep", endless)
        await bus.publish("deep", {"after": True})
        await got.wait_for(2)
    assert got.payloads[1] == {"after": True}


# -- handler failures, retries and dead letters in memory ----------------------------------------


async def test_a_group_retries_a_failing_message_then_dead_letters_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = InMemoryBroker(max_attempts=4)
    calls: list[int] = []

    async def always_fails(message: Message) -> None:
        calls.append(message.payload["n"])
        raise RuntimeError("cannot do it")

    async with MessageBus(broker) as bus:
        await bus.subscribe("work", always_fails, group="workers")
        await bus.publish("work", {"n": 1})
    # Leaving the bus drained it: every attempt and the dead-lettering are done.
    assert calls == [1, 1, 1, 1]
    [dead] = broker.dead_letters
    assert isinstance(dead, DeadLetter)
    assert (dead.topic, dead.group, dead.pattern, dead.attempts) == ("work", "workers", "work", 4)
    assert dead.reason == "handler raised RuntimeError: cannot do it"
    assert dead.message is not None and dead.message.payload == {"n": 1}
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("amb")]
    assert [r.exc_info is not None for r in failures] == [True] * 4
    assert "attempt 1 of 4" in failures[0].getMessage() and "delivering it again" in failures[0].getMessage()
    assert "attempt 4 of 4" in failures[3].getMessage() and "dead-lettering it" in failures[3].getMessage()
    assert any(
        r.levelno == logging.WARNING
        and "dead-lettered" in r.getMessage()
        and "dead_letters" in r.getMessage()
        for r in caplog.records
    )


async def test_a_group_message_that_succeeds_on_a_later_attempt_is_not_dead_lettered() -> None:
    broker = InMemoryBroker()
    got = Recorder(timeout=5)
    attempts: list[int] = []

    async def flaky(message: Message) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        await got(message)

    async with MessageBus(broker) as bus:
        await bus.subscribe("work", flaky, group="workers")
        await bus.publish("work", {"n": 1})
        await got.wait_for(1)
    assert len(attempts) == 3
    assert not broker.dead_letters


async def test_max_attempts_one_means_never_retried() -> None:
    bus = MessageBus.from_url("memory://policy-one", max_attempts=1)
    calls = 0

    async def fails(message: Message) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("no")

    async with bus:
        assert bus.policy.max_attempts == 1
        await bus.subscribe("work", fails, group="g")
        await bus.publish("work", {})
    broker = bus.adapter
    assert isinstance(broker, InMemoryBroker)
    assert calls == 1
    assert [dead.attempts for dead in broker.dead_letters] == [1]
    broker.dead_letters.clear()


async def test_an_ungrouped_subscription_sees_a_failing_message_once() -> None:
    calls = 0
    got = Recorder(timeout=5)

    async def fails_first(message: Message) -> None:
        nonlocal calls
        calls += 1
        if message.payload["n"] == 0:
            raise RuntimeError("no")
        await got(message)

    broker = InMemoryBroker()
    async with MessageBus(broker) as bus:
        await bus.subscribe("signal", fails_first)
        await bus.publish("signal", {"n": 0})
        await bus.publish("signal", {"n": 1})
        await got.wait_for(1)
    assert calls == 2
    assert not broker.dead_letters


async def test_invalid_bytes_are_dead_lettered_on_a_group_and_skipped_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = InMemoryBroker()
    grouped, ungrouped = Recorder(timeout=5), Recorder(timeout=5)
    hostile = b'{"amb":1,"id":"x","topic":"work","payload":{},"timestamp":"9999-12-31T23:59:59-23:59"}'
    async with MessageBus(broker) as bus:
        await bus.subscribe("work", grouped, group="workers")
        await bus.subscribe("work", ungrouped)
        await broker.publish_raw("work", hostile)
        await bus.publish("work", {"good": True})
        await grouped.wait_for(1)
        await ungrouped.wait_for(1)
    # The dead-lettering went on beside the queue; leaving the bus waited for it.
    [dead] = broker.dead_letters
    assert dead.data == hostile and dead.message is None and dead.group == "workers"
    assert "OverflowError" in dead.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not a valid AMB envelope" in line and "dead-lettering it" in line for line in warnings)


async def test_a_member_that_leaves_hands_its_queue_to_the_rest_of_the_group() -> None:
    release = anyio.Event()
    first, second = Recorder(timeout=5), Recorder(timeout=5)

    async def stuck(message: Message) -> None:
        await release.wait()
        await first(message)

    async with MessageBus.from_url("memory://leaving") as one, MessageBus.from_url("memory://leaving") as two:
        stuck_id = await one.subscribe("jobs", stuck, group="g")
        await two.subscribe("jobs", second, group="g")
        for n in range(6):
            await one.publish("jobs", {"n": n})
        await second.wait_for(3)  # every other message went to the stuck member
        await one.unsubscribe(stuck_id)  # its queued messages go back to the group
        await second.wait_for(5)
        release.set()
        await first.wait_for(1)
    assert sorted(m.payload["n"] for m in [*first.messages, *second.messages]) == list(range(6))


# -- connecting and outages: the bus over an adapter whose connection can be switched off --------


class Switchable(InMemoryBroker):
    """The in-memory broker behind a connection the test switches off and on (a stand-in for
    a network adapter's lost connection; the chaos suite does it with real brokers)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.link = Link(self.describe())
        self.down = False
        self.hang_connect = False
        self.connect_cancelled = False

    def describe(self) -> str:
        return "the switchable broker"

    async def connect(self) -> None:
        if self.hang_connect:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.connect_cancelled = True
                raise

    async def publish(self, message: Message, *, confirm: bool) -> None:
        if self.down:
            assert self.link is not None
            self.link.lost("switched off")
            raise BrokerUnavailableError("switched off")
        await super().publish(message, confirm=confirm)

    def switch_off(self) -> None:
        self.down = True

    def switch_on(self) -> None:
        self.down = False
        assert self.link is not None
        self.link.restored()


async def test_connect_gives_up_within_connect_timeout_and_leaves_nothing_running() -> None:
    broker = Switchable(connect_timeout=0.2)
    broker.hang_connect = True
    bus = MessageBus(broker)
    with pytest.raises(BrokerUnavailableError, match="connect_timeout"):
        await bus.connect()
    assert broker.connect_cancelled
    assert not bus.is_connected


async def test_fire_and_forget_during_an_outage_is_kept_and_sent_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Switchable()
    got = Recorder(timeout=5)
    async with MessageBus(broker) as bus:
        await bus.subscribe("events", got)
        await bus.publish("events", {"n": 0})
        broker.switch_off()
        for n in range(1, 50):
            await bus.publish("events", {"n": n})  # returns at once: kept by the bus
        assert len(got.messages) <= 1
        broker.switch_on()
        for n in range(50, 60):
            await bus.publish("events", {"n": n})
        await got.wait_for(60)
    assert [m.payload["n"] for m in got.messages] == list(range(60))
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("lost the connection to the switchable broker" in line for line in lines) == 1
    assert sum("is back after" in line for line in lines) == 1


async def test_a_full_outage_buffer_makes_publishers_wait_then_raise_after_outage_timeout() -> None:
    broker = Switchable(outage_buffer=3, outage_timeout=0.5)
    got = Recorder(timeout=5)
    async with MessageBus(broker) as bus:
        await bus.subscribe("events", got)
        broker.switch_off()
        for n in range(3):
            await bus.publish("events", {"n": n})
        waiting = asyncio.ensure_future(bus.publish("events", {"n": 3}))
        await asyncio.sleep(0.05)
        assert not waiting.done(), "a publish waits for room in a full outage buffer"
        with pytest.raises(BrokerUnavailableError, match="outage buffer is full"):
            await waiting
        with pytest.raises(BrokerUnavailableError, match="unreachable"):
            await bus.publish("events", {"n": 4})  # the outage is older than outage_timeout now
        broker.switch_on()
        await bus.publish("events", {"n": 5})
        await got.wait_for(4)
    # What was kept went out first, in order; what was refused never did.
    assert [m.payload["n"] for m in got.messages] == [0, 1, 2, 5]


async def test_a_confirmed_publish_waits_for_the_broker_and_raises_after_outage_timeout() -> None:
    broker = Switchable(outage_timeout=0.5)
    got = Recorder(timeout=5)
    async with MessageBus(broker) as bus:
        await bus.subscribe("events", got)
        broker.switch_off()
        with pytest.raises(BrokerUnavailableError):
            await bus.publish("events", {"n": 0}, wait_for_confirmation=True)
        broker.switch_on()
        await bus.publish("events", {"n": 1}, wait_for_confirmation=True)
        broker.switch_off()
        confirmed = asyncio.ensure_future(bus.publish("events", {"n": 2}, wait_for_confirmation=True))
        await asyncio.sleep(0.05)
        assert not confirmed.done()
        broker.switch_on()
        await confirmed
        await got.wait_for(2)
    # The one that raised was withdrawn, not sent later behind the caller's back.
    assert [m.payload["n"] for m in got.messages] == [1, 2]


async def test_messages_still_kept_when_the_bus_closes_are_logged_with_their_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Switchable()
    bus = MessageBus(broker, drain_timeout=0.1)
    await bus.connect()
    broker.switch_off()
    ids = [await bus.publish("events", {"n": n}) for n in range(3)]
    await bus.disconnect()
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "3 messages" in line and all(message_id in line for message_id in ids)


async def test_a_confirmed_publish_kept_at_close_fails_with_bus_closed() -> None:
    broker = Switchable()
    bus = MessageBus(broker, drain_timeout=0.1)
    await bus.connect()
    broker.switch_off()
    confirmed = asyncio.ensure_future(bus.publish("events", {}, wait_for_confirmation=True))
    await asyncio.sleep(0.05)
    await bus.disconnect()
    with pytest.raises(BusClosedError):
        await confirmed


async def test_a_confirmed_publish_that_gave_up_leaves_the_outbox_clean() -> None:
    """The only kept message was a confirmed publish that raised (withdrawn): when the broker
    is back the sender finds nothing to send, and ends without an error (it used to die with
    IndexError)."""
    broker = Switchable(outage_timeout=0.2)
    got = Recorder(timeout=5)
    async with MessageBus(broker) as bus:
        await bus.subscribe("events", got)
        broker.switch_off()
        with pytest.raises(BrokerUnavailableError):
            await bus.publish("events", {"n": 0}, wait_for_confirmation=True)
        assert bus._outbox is not None
        sender = bus._outbox._sender
        assert sender is not None
        broker.switch_on()
        with anyio.fail_after(5):
            await asyncio.wait({sender})
        assert sender.exception() is None
        await bus.publish("events", {"n": 1})
        await got.wait_for(1)
    assert got.payloads == [{"n": 1}]
