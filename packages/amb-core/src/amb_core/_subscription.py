"""A subscription: its bounded priority queue, its workers, the calls to its handler and what
happens to each message afterwards.

Adapters put messages in with `Subscription.receive` (raw bytes) or `offer`/`deliver` (a
decoded message); the bus owns everything after that, so priority, TTL, concurrency, error
handling, retries and dead letters are the same on every broker (docs/semantics.md).
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

from amb_core._delivery import Delivery
from amb_core._errors import InvalidMessageError, RequestCancelledError
from amb_core._logs import message_fields
from amb_core._message import Message, MessagePriority
from amb_core._supervision import TaskSet
from amb_core._topics import compile_pattern
from amb_core._wire import decode, log_invalid
from amb_core.middleware import Chain, Outcome

logger = logging.getLogger("amb.bus")

#: What `MessageBus.subscribe` calls with each message: an ``async def`` function (the norm), or a
#: plain function returning None, which runs on the event loop (so it must not block). Any
#: object with such a ``__call__`` works too.
MessageHandler = Callable[[Message], "Awaitable[object] | None"]
#: How the bus answers a request whose handler failed for good (see `Subscription`).
FailureAnswer = Callable[[Message, Exception], Awaitable[None]]
_Entry = tuple[Message, "Delivery | None"]
#: What the log line of a failed handler says will happen to its message.
_SAID = {
    Outcome.RAISED: "not retried (ungrouped subscriptions see each message once)",
    Outcome.RETRIED: "delivering it again",
    Outcome.DEAD_LETTERED: "dead-lettering it",
}
#: How much of a handler's exception a dead letter keeps as its reason.
_MAX_REASON = 1000
_LEVELS = len(MessagePriority)


class Subscription:
    """One ``subscribe()`` call: what adapters see of it, and the machinery behind it.

    The queue is one FIFO per priority level (four levels, so this beats a heap: O(1) both ways
    and no tie-breaking counter). Workers are started on demand and end when the queue is empty,
    so an idle subscription costs no task, timer or CPU; and what only a busy subscription needs
    (the FIFOs, the task and waiter sets, the compiled pattern) is made when it is first needed,
    so one that never got a message costs a few hundred bytes (agents by the thousand, each with
    its own inbox, are the norm).
    """

    __slots__ = (
        "_answer_failure",
        "_chain",
        "_closed",
        "_handler",
        "_handler_is_async",
        "_idle_waiters",
        "_levels",
        "_loop",
        "_matcher",
        "_maxsize",
        "_passing",
        "_queued",
        "_running",
        "_settling",
        "_space_waiters",
        "_tasks",
        "concurrency",
        "group",
        "id",
        "max_attempts",
        "pattern",
    )

    #: True only for the bus's private reply inbox (see `amb_core._replies.ReplyInbox`).
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
        max_attempts: int = 3,
        answer_failure: FailureAnswer | None = None,
        chain: Chain | None = None,
    ) -> None:
        """``answer_failure(request, error)`` answers a request (a message with ``reply_to``)
        whose handler raised for the last time, so that its requester need not wait; ``chain``
        is the bus's middleware, run around each message (see `amb_core.middleware`)."""
        self.id = id
        self.pattern = pattern
        self.group = group
        self.concurrency = concurrency
        #: Handler calls a grouped message gets before it is dead-lettered.
        self.max_attempts = max_attempts
        # Typed loosely here: which of the two kinds it is was decided once, just below.
        self._handler: Callable[[Message], Any] = handler
        self._answer_failure = answer_failure
        self._chain = chain
        # Decided once here, not per message: a coroutine function, or an object whose __call__ is one.
        self._handler_is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__
        )
        self._matcher: Callable[[str], object] | None = None
        #: One FIFO per priority, most urgent first (``_levels[~priority]``), each made when a
        #: message of its priority first arrives.
        self._levels: list[deque[_Entry] | None] = [None] * _LEVELS
        self._queued = 0
        self._maxsize = queue_size
        self._running = 0
        #: Workers in their loop pass after a message: each looks at the queue again next.
        self._passing = 0
        #: The workers. Not a `TaskSet`: one may start per message, and each worker removes
        #: itself (with the rest of its bookkeeping) as it ends, so no done-callback is needed.
        self._tasks: set[asyncio.Task[None]] | None = None
        #: Settlements of invalid envelopes, done beside the queue so they delay nothing.
        self._settling: TaskSet | None = None
        self._space_waiters: deque[asyncio.Future[None]] | None = None
        self._idle_waiters: list[asyncio.Future[None]] | None = None
        self._closed = False
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        group = f" group={self.group!r}" if self.group else ""
        return f"<Subscription {self.id} {self.pattern!r}{group}>"

    def matches(self, topic: str) -> bool:
        """Whether a message on ``topic`` belongs to this subscription (AMQP wildcard rules)."""
        matcher = self._matcher
        if matcher is None:
            matcher = self._matcher = compile_pattern(self.pattern).fullmatch
        return matcher(topic) is not None

    @property
    def queued(self) -> int:
        """Messages waiting for a free worker."""
        return self._queued

    @property
    def closed(self) -> bool:
        return self._closed

    # -- putting messages in -----------------------------------------------------------------

    def receive(self, data: bytes, source: str, delivery: Delivery | None = None) -> Awaitable[None] | None:
        """Decode ``data`` (what arrived on ``source``: a topic, a queue, a stream) and queue it.

        Returns None when that is done, or an awaitable for the caller to await: room in a full
        queue, which is the backpressure on the adapter's consumer. Bytes that are not a valid
        envelope never reach the handler and never block: they are logged once, and their
        ``delivery`` is settled beside the queue (dead-lettered with the reason on a group,
        acknowledged otherwise).
        """
        try:
            message = decode(data)
        except InvalidMessageError as error:
            self.reject(source, error, delivery)
            return None
        if self.offer(message, delivery):
            return None
        return self.deliver(message, delivery)

    def reject(self, source: str, error: InvalidMessageError, delivery: Delivery | None) -> None:
        """What `receive` does with bytes that are not a valid envelope (for adapters that
        decode themselves)."""
        if delivery is None:
            log_invalid(source, error)
            return
        if self.group is not None:
            log_invalid(source, error, "dead-lettering it")
            settle = _dead_letter(
                delivery, str(error)[:_MAX_REASON], f"an invalid message on {source}", quiet=True
            )
        else:
            log_invalid(source, error, "acknowledged it")
            settle = _settle(delivery.ack(), "acknowledge an invalid message", source)
        if self._settling is None:
            self._settling = TaskSet(repr(self))
        self._settling.start(settle)

    def offer(self, message: Message, delivery: Delivery | None = None) -> bool:
        """Queue ``message`` if there is room and return True; return False when the queue is
        full (or the subscription closed): then await `deliver`."""
        # Every message goes in here: the in-memory broker's publish calls it directly.
        if self._queued >= self._maxsize:
            return False
        level = self._levels[~message.priority]
        if level is None:
            level = self._levels[~message.priority] = deque()
        level.append((message, delivery))
        self._queued += 1
        # A worker in its loop pass takes this message next: a new task would only cost more.
        if self._running < self.concurrency and self._queued > self._passing:
            self._running += 1
            tasks = self._tasks
            if tasks is None:
                tasks = self._tasks = set()
            # The task is referenced here until it ends (asyncio keeps only weak references).
            tasks.add(self._loop.create_task(self._work()))
        return True

    async def deliver(self, message: Message, delivery: Delivery | None = None) -> None:
        """Queue ``message``, waiting while the queue is full (backpressure on the publisher or
        the adapter's consumer). A message for a closed subscription is released to its broker
        (unacknowledged, so an at-least-once broker gives it to another member)."""
        while self._queued >= self._maxsize and not self._closed:
            waiter = self._loop.create_future()
            if self._space_waiters is None:
                self._space_waiters = deque()
            self._space_waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
        if not self._closed:
            self.offer(message, delivery)  # there is room now
        elif delivery is not None:
            await _settle(delivery.release(), "release", message.id)

    # -- handling ----------------------------------------------------------------------------

    async def _work(self) -> None:
        levels = self._levels
        try:
            while True:
                while self._queued:
                    for level in levels:
                        if level:
                            break
                    message, delivery = level.popleft()  # type: ignore[union-attr]  # _queued says one is there
                    self._queued -= 1
                    if self._space_waiters:
                        self._wake_one_publisher()
                    ttl = message.ttl
                    # Message.expired inline (requests carry a ttl by default: the hot path).
                    if ttl is not None and message.timestamp.timestamp() + ttl < time.time():
                        await self._expired(message, delivery)
                        continue
                    try:
                        if self._chain is not None:
                            await self._chain.handle(self, message, delivery, self._call_handler)
                        elif self._handler_is_async:
                            await self._handler(message)
                        else:
                            result = self._handler(message)
                            if inspect.isawaitable(result):
                                await result
                    except Exception as error:
                        await self._failed(message, delivery, error)
                    else:
                        if delivery is not None and delivery.acknowledges:
                            # Inline rather than through _settle: one coroutine less per message.
                            try:
                                await delivery.ack()
                            except Exception:
                                logger.exception(
                                    "could not acknowledge %s with the broker",
                                    message.id,
                                    extra=message_fields(message, self.group),
                                )
                # Give the loop one pass before ending: whoever the handler just woke (a
                # requester, a waiting publisher) often publishes straight back, and this worker
                # then takes that message without a new task or an extra loop iteration. It
                # still ends as soon as the queue stays empty, so idle subscriptions cost nothing.
                self._passing += 1
                try:
                    await _one_loop_pass()
                finally:
                    self._passing -= 1
                if not self._queued:
                    return
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[union-attr]  # made with this task
            self._running -= 1
            if self._idle_waiters and not self._running and (not self._queued or self._closed):
                for waiter in self._idle_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._idle_waiters.clear()

    async def _call_handler(self, message: Message) -> None:
        """The handler call alone (what the middleware's handle hooks run around)."""
        result = self._handler(message)
        if inspect.isawaitable(result):
            await result

    async def _expired(self, message: Message, delivery: Delivery | None) -> None:
        """Drop ``message``, whose ttl ran out while it waited: the handler never sees it."""
        logger.debug(
            "dropped expired message %s on %s",
            message.id,
            message.topic,
            extra=message_fields(message, self.group),
        )
        if self._chain is not None:
            await self._chain.expired(self, message, delivery)
        if delivery is not None:
            await _settle(delivery.ack(), "acknowledge an expired message", message.id)

    def outcome_of(self, error: Exception, delivery: Delivery | None) -> Outcome:
        """What becomes of a message whose handler raised ``error`` (see `_failed`)."""
        if isinstance(error, RequestCancelledError):
            return Outcome.HANDLED  # the requester of a reply stream went away: no failure
        if delivery is None or self.group is None:
            return Outcome.RAISED
        return Outcome.RETRIED if delivery.attempt < self.max_attempts else Outcome.DEAD_LETTERED

    async def _failed(self, message: Message, delivery: Delivery | None, error: Exception) -> None:
        """The handler raised: log it (one line, with the traceback) and decide what happens to
        the message. A group retries it up to ``max_attempts`` handler calls, then dead-letters
        it; an ungrouped subscription (a broadcast) sees each message once. A request that
        failed for the last time is answered with the error. `RequestCancelledError` is no
        failure: the requester of a reply stream went away, and the handler stopped."""
        about_it = message_fields(message, self.group)
        result = self.outcome_of(error, delivery)
        if isinstance(error, RequestCancelledError):
            logger.debug(
                "handler %r of %r stopped on request %s: %s",
                self._handler,
                self,
                message.id,
                error,
                extra=about_it,
            )
            if delivery is not None:
                await _settle(delivery.ack(), "acknowledge", message.id)
            return
        attempt = 1 if delivery is None else delivery.attempt
        outcome = _SAID[result] if delivery is not None else "not retried (this broker does not redeliver)"
        logger.error(
            "handler %r of %r failed on message %s (topic %s, attempt %d of %d): %s",
            self._handler,
            self,
            message.id,
            message.topic,
            attempt,
            self.max_attempts if self.group is not None else 1,
            outcome,
            exc_info=error,
            extra=about_it,
        )
        if (
            self._answer_failure is not None
            and message.reply_to is not None
            and (delivery is None or self.group is None or attempt >= self.max_attempts)
        ):
            await self._answer_failure(message, error)
        if delivery is None:
            return
        if result is Outcome.RAISED:
            await _settle(delivery.ack(), "acknowledge", message.id)
        elif result is Outcome.RETRIED:
            await _settle(delivery.retry(), "redeliver", message.id)
        else:
            reason = f"handler raised {type(error).__name__}: {error}"[:_MAX_REASON]
            await _dead_letter(delivery, reason, f"message {message.id} on {message.topic}", extra=about_it)

    def _wake_one_publisher(self) -> None:
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- ending ------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Return once every queued message was handled, no handler is running and every
        settlement has been handed to the broker."""
        if self._running or self._queued:
            waiter = self._loop.create_future()
            if self._idle_waiters is None:
                self._idle_waiters = []
            self._idle_waiters.append(waiter)
            await waiter
        if self._settling:
            await self._settling.wait()

    async def close(self, *, cancel: bool) -> int:
        """Stop taking messages and release what is queued (unacknowledged, so an at-least-once
        broker redelivers it); with ``cancel``, also cancel the handlers still running.
        Returns how many queued messages were released."""
        self._closed = True
        self._maxsize = -1  # `offer` now always refuses, so messages go through `deliver`
        dropped = [entry for level in self._levels if level for entry in level]
        for level in self._levels:
            if level:
                level.clear()
        self._queued = 0
        for waiter in self._space_waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        self._space_waiters = None
        for message, delivery in dropped:
            if delivery is not None:
                await _settle(delivery.release(), "release", message.id)
        if cancel:
            workers = list(self._tasks or ())
            for task in workers:
                task.cancel()
            if workers:
                await asyncio.gather(*workers, return_exceptions=True)
            if self._settling is not None:
                await self._settling.close()
        return len(dropped)


@types.coroutine
def _one_loop_pass() -> Generator[None, None, None]:
    """Suspend for exactly one pass of the event loop (what ``asyncio.sleep(0)`` does)."""
    yield


async def _settle(settlement: Awaitable[None], what: str, about: str) -> None:
    try:
        await settlement
    except Exception:
        logger.exception("could not %s %s with the broker", what, about)


async def _dead_letter(
    delivery: Delivery,
    reason: str,
    about: str,
    *,
    quiet: bool = False,
    extra: dict[str, object] | None = None,
) -> None:
    """Dead-letter, and log where to (at DEBUG when ``quiet``: the reason was logged already)."""
    try:
        where = await delivery.dead_letter(reason)
    except Exception:
        logger.exception("could not dead-letter %s (%s); the broker keeps it", about, reason, extra=extra)
        return
    logger.log(
        logging.DEBUG if quiet else logging.WARNING,
        "dead-lettered %s to %s after %d attempts: %s",
        about,
        where,
        delivery.attempt,
        reason,
        extra=extra,
    )
