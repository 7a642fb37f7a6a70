"""Request/reply bookkeeping: one private inbox per bus and a map of the requests waiting on it."""

from __future__ import annotations

import asyncio
import logging

from amb_core.errors import BusClosedError, RequestTimeoutError
from amb_core.message import Message
from amb_core.subscription import Ack, Subscription

logger = logging.getLogger("amb")


async def _no_handler(message: Message) -> None:  # pragma: no cover - the inbox never queues
    raise AssertionError("the reply inbox resolves requests directly")


class ReplyInbox(Subscription):
    """The bus's private reply topic. Replies resolve their request at once, without queueing.

    Adapters may treat it specially (no acknowledgements, a broker resource that lives as long
    as the bus): `is_inbox` tells them.
    """

    __slots__ = ("_waiting",)
    is_inbox = True

    def __init__(self, id: str, topic: str) -> None:
        super().__init__(id, topic, _no_handler)
        self._waiting: dict[str, tuple[asyncio.Future[Message], asyncio.TimerHandle]] = {}

    def expect(self, correlation_id: str, topic: str, timeout: float) -> asyncio.Future[Message]:
        """A future that the reply to ``correlation_id`` resolves, or that fails with
        `RequestTimeoutError` after ``timeout`` seconds."""
        future: asyncio.Future[Message] = self._loop.create_future()
        timer = self._loop.call_later(timeout, self._expire, future, topic, timeout)
        self._waiting[correlation_id] = (future, timer)
        return future

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for ``correlation_id``; a reply arriving later is dropped."""
        waiting = self._waiting.pop(correlation_id, None)
        if waiting is not None:
            waiting[1].cancel()

    @staticmethod
    def _expire(future: asyncio.Future[Message], topic: str, timeout: float) -> None:
        if not future.done():
            future.set_exception(
                RequestTimeoutError(f"no reply to the request on {topic!r} within {timeout} s")
            )

    def offer(self, message: Message, ack: Ack | None = None) -> bool:
        waiting = self._waiting.pop(message.correlation_id or "", None)
        if waiting is None or waiting[0].done():
            logger.debug(
                "dropped reply %s: no request %s is waiting (it timed out or was cancelled)",
                message.id,
                message.correlation_id,
            )
        else:
            waiting[1].cancel()
            waiting[0].set_result(message)
        return True

    async def deliver(self, message: Message, ack: Ack | None = None) -> None:
        self.offer(message)
        if ack is not None:
            await ack(True)

    def fail_all(self) -> None:
        """Fail every waiting request because the bus is closing."""
        waiting, self._waiting = self._waiting, {}
        for future, timer in waiting.values():
            timer.cancel()
            if not future.done():
                future.set_exception(BusClosedError("the bus closed before the reply arrived"))
