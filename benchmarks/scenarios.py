"""The scenarios of `run.py` and the pieces every implementation shares to drive them.

An implementation (`impl_amb`, `impl_bare`, `impl_faststream`) is a class with one async
context manager per scenario. Entering it does the untimed setup (connect, declare, subscribe)
and yields a `Runner`: ``await run(n)`` does the scenario's work for ``n`` messages or requests
and returns a `Sample`. Leaving it tears everything down. The publishing loops, the counting of
handled messages and the request driver below are the same code for every implementation, so
the only thing that differs between rows is the client doing the work.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from harness import now_ns

#: The message every scenario sends: a small agent signal, 100 bytes as JSON.
PAYLOAD: dict[str, Any] = {
    "agent_id": "agent-7",
    "kind": "thinking",
    "seq": 1,
    "thought": "analysing the user's request, step 3 of 5",
}
PAYLOAD_BYTES = json.dumps(PAYLOAD, separators=(",", ":")).encode()
REPLY: dict[str, Any] = {"ok": True, "verdict": "approved"}
REPLY_BYTES = json.dumps(REPLY, separators=(",", ":")).encode()
FAN_OUT_SUBSCRIBERS = 10
GROUP_MEMBERS = 4
REQUEST_TIMEOUT_S = 30.0
PRIME_TIMEOUT_S = 20.0  # how long subscribers may take to become ready (Kafka rebalances)


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    label: str
    description: str
    latency: bool  # whether per-request latencies are recorded


SCENARIOS: dict[str, ScenarioSpec] = {
    spec.name: spec
    for spec in (
        ScenarioSpec(
            "publish",
            "Publish",
            "N publishes back to back on a topic nobody subscribes to, until the broker has accepted all",
            False,
        ),
        ScenarioSpec(
            "end_to_end",
            "End-to-end",
            "N publishes back to back, until one subscriber's handler has seen all N",
            False,
        ),
        ScenarioSpec(
            "fan_out",
            f"Fan-out x{FAN_OUT_SUBSCRIBERS}",
            f"N publishes, until each of {FAN_OUT_SUBSCRIBERS} subscribers has seen all N (msg/s counts deliveries)",
            False,
        ),
        ScenarioSpec(
            "competing",
            f"Competing consumers x{GROUP_MEMBERS}",
            f"N publishes shared by a group of {GROUP_MEMBERS} consumers, until N were handled",
            False,
        ),
        ScenarioSpec("request_reply_1", "Request/reply, 1 in flight", "N requests one after the other", True),
        ScenarioSpec(
            "request_reply_100",
            "Request/reply, 100 in flight",
            "N requests, 100 outstanding at any time",
            True,
        ),
    )
}


@dataclass
class Sample:
    """What one timed run produced."""

    handled: int  # messages handled (deliveries for fan-out) or requests answered
    elapsed_ns: int
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.handled * 1e9 / self.elapsed_ns if self.elapsed_ns else float("nan")


Runner = Callable[[int], Awaitable[Sample]]
ScenarioContext = AbstractAsyncContextManager[Runner]


class NotApplicable(Exception):
    """The implementation cannot do this scenario on this broker (the reason is the message)."""


class Implementation:
    """Base of the implementations compared by `run.py`; each method is one scenario."""

    name = "?"

    def __init__(self, adapter: str, url: str) -> None:
        self.adapter = adapter
        self.url = url

    def describe(self) -> str:
        """What this implementation is, with versions, for the report."""
        return self.name

    async def check(self) -> None:
        """Raise if this implementation cannot run at all on this broker (not installed, ...)."""

    def publish(self) -> ScenarioContext:
        raise NotApplicable("not implemented")

    def end_to_end(self) -> ScenarioContext:
        raise NotApplicable("not implemented")

    def fan_out(self, subscribers: int) -> ScenarioContext:
        raise NotApplicable("not implemented")

    def competing(self, members: int) -> ScenarioContext:
        raise NotApplicable("not implemented")

    def request_reply(self, in_flight: int) -> ScenarioContext:
        raise NotApplicable("not implemented")

    def scenario(self, name: str) -> ScenarioContext:
        if name == "publish":
            return self.publish()
        if name == "end_to_end":
            return self.end_to_end()
        if name == "fan_out":
            return self.fan_out(FAN_OUT_SUBSCRIBERS)
        if name == "competing":
            return self.competing(GROUP_MEMBERS)
        if name == "request_reply_1":
            return self.request_reply(1)
        if name == "request_reply_100":
            return self.request_reply(100)
        raise ValueError(f"unknown scenario {name!r}")


class ConsumerScenarios(Implementation):
    """An implementation whose end-to-end, fan-out and competing scenarios are one setup:
    ``count`` consumers of one topic, sharing the work (``grouped``) or each getting every message."""

    def _consumers(self, count: int, grouped: bool) -> ScenarioContext:
        raise NotApplicable("not implemented")

    def end_to_end(self) -> ScenarioContext:
        return self._consumers(1, False)

    def fan_out(self, subscribers: int) -> ScenarioContext:
        return self._consumers(subscribers, False)

    def competing(self, members: int) -> ScenarioContext:
        return self._consumers(members, True)


def unique_name(kind: str) -> str:
    """A topic/queue/group name no other run uses (brokers are shared between runs)."""
    return f"bench.{kind}.{os.urandom(4).hex()}"


class Countdown:
    """Counts handler calls and wakes the publisher when the expected number has arrived."""

    def __init__(self) -> None:
        self.seen = 0
        self._target = 0
        self._done: asyncio.Future[int] | None = None

    def arm(self, target: int) -> None:
        self.seen = 0
        self._target = target
        self._done = asyncio.get_running_loop().create_future()

    def hit(self) -> None:
        self.seen += 1
        if self.seen == self._target and self._done is not None and not self._done.done():
            self._done.set_result(now_ns())

    async def finished(self) -> int:
        """The perf_counter_ns at which the last expected call happened."""
        assert self._done is not None, "arm() first"
        try:
            return await self._done
        except asyncio.CancelledError:
            raise asyncio.CancelledError(f"{self.seen} of {self._target} handled") from None


Publish = Callable[[], Awaitable[Any]]


async def prime(publish: Publish, countdown: Countdown, per_message: int) -> None:
    """Publish single messages until one reaches every subscriber: brokers (Redis pub/sub,
    Kafka group joins) may take a moment after subscribe() to really deliver, and timing must
    not start before they do. Same procedure for every implementation; never timed."""
    deadline = now_ns() + int(PRIME_TIMEOUT_S * 1e9)
    while now_ns() < deadline:
        countdown.arm(per_message)
        await publish()
        try:
            await asyncio.wait_for(countdown.finished(), 0.25)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            continue
        await asyncio.sleep(0.05)  # let stragglers of earlier attempts arrive before counting
        return
    raise TimeoutError(f"subscribers were not receiving after {PRIME_TIMEOUT_S} s")


def publish_runner(publish: Publish, countdown: Countdown, per_message: int) -> Runner:
    """N publishes back to back; the clock stops when handlers have seen N x ``per_message``."""

    async def run(n: int) -> Sample:
        countdown.arm(n * per_message)
        start = now_ns()
        for _ in range(n):
            await publish()
        finished = await countdown.finished()
        return Sample(n * per_message, finished - start)

    return run


def request_runner(request: Callable[[], Awaitable[Any]], in_flight: int) -> Runner:
    """N requests with at most ``in_flight`` outstanding, each one's latency recorded."""

    async def run(n: int) -> Sample:
        latencies: list[int] = []
        remaining = n

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                sent = now_ns()
                await request()
                latencies.append(now_ns() - sent)

        start = now_ns()
        await asyncio.gather(*(client() for _ in range(min(in_flight, n))))
        return Sample(n, now_ns() - start, latencies)

    return run


class Replies:
    """Correlation ids to the futures of waiting requests: what a bare request/reply needs."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._next = 0

    def expect(self) -> tuple[str, asyncio.Future[bytes]]:
        self._next += 1
        correlation_id = f"{self._next:x}"
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        return correlation_id, future

    def resolve(self, correlation_id: str | None, body: bytes) -> None:
        future = self._waiting.pop(correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(body)

    async def wait(self, correlation_id: str, future: asyncio.Future[bytes]) -> bytes:
        # A timer rather than asyncio.wait_for, as lean as the bus's own request timeout.
        timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT_S, future.cancel)
        try:
            return await future
        finally:
            timer.cancel()
            self._waiting.pop(correlation_id, None)


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
