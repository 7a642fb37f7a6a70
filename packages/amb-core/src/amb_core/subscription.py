"""A subscription: its bounded priority queue, its workers and the calls to its handler.

Adapters put messages in with `Subscription.deliver`; the bus owns everything after that, so
priority, TTL, concurrency and error handling are the same on every broker.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from amb_core.message import Message, MessagePriority
from amb_core.topics import compile_pattern

logger = logging.getLogger("amb")

MessageHandler = Callable[[Message], Awaitable[Any]]
Ack = Callable[[bool], Awaitable[None]]
_Entry = tuple[Message, "Ack | None"]


class Subscription:
    """One ``subscribe()`` call: what adapters see of it, and the machinery behind it.

    The queue is one FIFO per priority level (four levels, so this beats a heap: O(1) both ways
    and no tie-breaking counter). Workers are started on demand and end when the queue is empty,
    so an idle subscription costs no task, timer or CPU.
    """

    __slots__ = (
        "_closed",
        "_handler",
        "_handler_is_async",
        "_idle_waiters",
        "_levels",
        "_loop",
        "_matcher",
        "_maxsize",
        "_queued",
        "_running",
        "_space_waiters",
        "_tasks",
        "_urgent_first",
        "concurrency",
        "group",
        "id",
        "pattern",
    )

    #: True only for the bus's private reply inbox (see `amb_core.replies.ReplyInbox`).
    is_inbox = False

    def __init__(
        self,
        id: str,
        pattern: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        concurrency: int = 1,
        queue_size: int = 1024,
    ) -> None:
        self.id = id
        self.pattern = pattern
        self.group = group
        self.concurrency = concurrency
        self._handler = handler
        # Decided once here, not per message: a coroutine function, or an object whose __call__ is one.
        self._handler_is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__
        )
        self._matcher = compile_pattern(pattern).fullmatch
        #: One FIFO per priority, indexed by its value.
        self._levels: tuple[deque[_Entry], ...] = tuple(deque() for _ in MessagePriority)
        self._urgent_first = self._levels[::-1]
        self._queued = 0
        self._maxsize = queue_size
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        group = f" group={self.group!r}" if self.group else ""
        return f"<Subscription {self.id} {self.pattern!r}{group}>"

    def matches(self, topic: str) -> bool:
        """Whether a message on ``topic`` belongs to this subscription (AMQP wildcard rules)."""
        return self._matcher(topic) is not None

    @property
    def queued(self) -> int:
        """Messages waiting for a free worker."""
        return self._queued

    def offer(self, message: Message, ack: Ack | None = None) -> bool:
        """Queue ``message`` if there is room and return True; return False when the queue is full."""
        if self._queued >= self._maxsize:
            return False
        self._push(message, ack)
        return True

    async def deliver(self, message: Message, ack: Ack | None = None) -> None:
        """Queue ``message``, waiting while the queue is full (backpressure on the publisher or
        the adapter's consumer). A message for a closed subscription is dropped unacknowledged,
        so an at-least-once broker redelivers it."""
        while self._queued >= self._maxsize and not self._closed:
            waiter = self._loop.create_future()
            self._space_waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
        if not self._closed:
            self._push(message, ack)

    def _push(self, message: Message, ack: Ack | None) -> None:
        if self._closed:
            return
        self._levels[message.priority].append((message, ack))
        self._queued += 1
        if self._running < self.concurrency:
            self._running += 1
            # The task is referenced here until it ends (asyncio keeps only weak references).
            self._tasks.add(self._loop.create_task(self._work()))

    async def _work(self) -> None:
        levels = self._urgent_first
        try:
            while True:
                while self._queued:
                    for level in levels:
                        if level:
                            break
                    message, ack = level.popleft()
                    self._queued -= 1
                    if self._space_waiters:
                        self._wake_one_publisher()
                    if message.ttl is not None and message.expired(time.time()):
                        logger.debug("dropped expired message %s on %s", message.id, message.topic)
                        if ack is not None:
                            await _settle(ack, True, message)
                        continue
                    try:
                        if self._handler_is_async:
                            await self._handler(message)
                        else:
                            result = self._handler(message)
                            if inspect.isawaitable(result):
                                await result
                    except Exception:
                        logger.exception(
                            "handler %r of subscription %s failed on message %s (topic %s)",
                            self._handler,
                            self.id,
                            message.id,
                            message.topic,
                        )
                        if ack is not None:
                            await _settle(ack, False, message)
                    else:
                        if ack is not None:
                            await _settle(ack, True, message)
                # Give the loop one pass before ending: whoever the handler just woke (a
                # requester, a waiting publisher) often publishes straight back, and this worker
                # then takes that message without a new task or an extra loop iteration. It
                # still ends as soon as the queue stays empty, so idle subscriptions cost nothing.
                await _one_loop_pass()
                if not self._queued:
                    return
        finally:
            self._tasks.discard(asyncio.current_task())
            self._running -= 1
            if not self._running and (not self._queued or self._closed):
                for waiter in self._idle_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._idle_waiters.clear()

    def _wake_one_publisher(self) -> None:
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def drain(self) -> None:
        """Return once every queued message was handled and no handler is running."""
        if not self._running and not self._queued:
            return
        waiter = self._loop.create_future()
        self._idle_waiters.append(waiter)
        await waiter

    async def close(self, *, cancel: bool) -> int:
        """Stop taking messages and drop what is queued (unacknowledged, so an at-least-once
        broker redelivers it); with ``cancel``, also cancel the handlers still running.
        Returns how many queued messages were dropped."""
        self._closed = True
        dropped = self._queued
        for level in self._levels:
            level.clear()
        self._queued = 0
        for waiter in self._space_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._space_waiters.clear()
        if cancel and self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return dropped


@types.coroutine
def _one_loop_pass() -> Generator[None, None, None]:
    """Suspend for exactly one pass of the event loop (what ``asyncio.sleep(0)`` does)."""
    yield


async def _settle(ack: Ack, ok: bool, message: Message) -> None:
    try:
        await ack(ok)
    except Exception:
        logger.exception("could not settle message %s with the broker", message.id)
