"""Request/reply bookkeeping: one private inbox per bus and a map of the requests waiting on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from heapq import heapify, heappop, heappush
from typing import NamedTuple

from amb_core.delivery import Delivery
from amb_core.errors import BusClosedError, RequestTimeoutError
from amb_core.message import Message
from amb_core.subscription import Subscription
from amb_core.wire import decode_or_log

logger = logging.getLogger("amb")


async def _no_handler(message: Message) -> None:  # pragma: no cover - the inbox never queues
    raise AssertionError("the reply inbox resolves requests directly")


class _Waiting(NamedTuple):
    future: asyncio.Future[Message]
    deadline: float
    topic: str
    timeout: float


class ReplyInbox(Subscription):
    """The bus's private reply topic. Replies resolve their request at once, without queueing.

    Timeouts share one timer, armed for the earliest deadline: a timer per request cost more
    than the rest of a request on the in-memory broker. Adapters may treat the inbox specially
    (no acknowledgements, a broker resource that lives as long as the bus): `is_inbox` says so.
    """

    __slots__ = ("_deadlines", "_timer", "_timer_at", "_waiting")
    is_inbox = True

    def __init__(self, id: str, topic: str) -> None:
        super().__init__(id, topic, _no_handler)
        self._waiting: dict[str, _Waiting] = {}
        # (deadline, correlation id); entries of answered requests stay until popped or compacted.
        self._deadlines: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def expect(self, correlation_id: str, topic: str, timeout: float) -> asyncio.Future[Message]:
        """A future that the reply to ``correlation_id`` resolves, or that fails with
        `RequestTimeoutError` after ``timeout`` seconds."""
        loop = self._loop
        future: asyncio.Future[Message] = loop.create_future()
        deadline = loop.time() + timeout
        self._waiting[correlation_id] = _Waiting(future, deadline, topic, timeout)
        if len(self._deadlines) > 2 * len(self._waiting) + 64:
            self._compact()
        heappush(self._deadlines, (deadline, correlation_id))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        return future

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for ``correlation_id``; a reply arriving later is dropped."""
        self._waiting.pop(correlation_id, None)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._expire_due)
        self._timer_at = deadline

    def _compact(self) -> None:
        self._deadlines = [(waiting.deadline, key) for key, waiting in self._waiting.items()]
        heapify(self._deadlines)

    def _expire_due(self) -> None:
        self._timer = None
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            waiting = self._waiting.pop(heappop(deadlines)[1], None)
            if waiting is not None and not waiting.future.done():
                waiting.future.set_exception(
                    RequestTimeoutError(
                        f"no reply to the request on {waiting.topic!r} within {waiting.timeout} s"
                    )
                )
        while deadlines and deadlines[0][1] not in self._waiting:
            heappop(deadlines)
        if deadlines:
            self._arm(deadlines[0][0])

    def offer(self, message: Message, delivery: Delivery | None = None) -> bool:
        waiting = self._waiting.pop(message.correlation_id or "", None)
        if waiting is None or waiting.future.done():
            logger.debug(
                "dropped reply %s: no request %s is waiting (it timed out or was cancelled)",
                message.id,
                message.correlation_id,
            )
        else:
            waiting.future.set_result(message)
        return True

    def receive(self, data: bytes, source: str, delivery: Delivery | None = None) -> Awaitable[None] | None:
        message = decode_or_log(data, source)
        if message is not None:
            self.offer(message)
        return None if delivery is None else delivery.ack()

    async def deliver(self, message: Message, delivery: Delivery | None = None) -> None:
        self.offer(message)
        if delivery is not None:
            await delivery.ack()

    def fail_all(self) -> None:
        """Fail every waiting request because the bus is closing."""
        waiting, self._waiting = self._waiting, {}
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in waiting.values():
            if not entry.future.done():
                entry.future.set_exception(BusClosedError("the bus closed before the reply arrived"))
