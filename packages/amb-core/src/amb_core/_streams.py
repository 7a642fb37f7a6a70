"""Streamed replies: `MessageBus.request_stream` (the requester's side) and `ReplyStream`, what
`MessageBus.reply_stream` gives the responder.

A stream is a request answered by numbered chunks, then an end mark (docs/semantics.md, "Reply
streams"). Each chunk's ``reply_to`` is the responder's own inbox: a requester that stops
listening (it left its loop, timed out, or its bus closed) sends a cancellation there, and the
responder's next `ReplyStream.send` raises `RequestCancelledError`. A chunk that arrives for a
stream nobody listens to any more is answered the same way (`amb_core._replies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from amb_core._control import END, ERROR, SEQ, error_mark, remote_error
from amb_core._errors import RequestCancelledError, RequestTimeoutError, StreamSequenceError
from amb_core._ids import new_id
from amb_core._logs import message_fields
from amb_core._message import Message, MessagePriority, message_of
from amb_core._payload import json_object
from amb_core._replies import ReplyInbox, nobody

if TYPE_CHECKING:
    from amb_core._bus import MessageBus

logger = logging.getLogger("amb.bus")

_utc = timezone.utc
_now = datetime.now
_monotonic = time.monotonic
_EPOCH = datetime(1970, 1, 1, tzinfo=_utc)
#: Longest a `ReplyStream` keeps the event loop without a pass (seconds).
_YIELD_INTERVAL = 0.001
#: How long a `ReplyStream` stamps its chunks with the same time (seconds): reading the
#: wall clock into a datetime costs a twentieth of a chunk in memory, and a burst of chunks
#: needs no finer stamps than a network broker keeps (Kafka: a millisecond).
_STAMP_INTERVAL = 0.0001
#: Set on an exception that `ReplyStream` already sent to the requester as the stream's error
#: end, so that the bus does not answer the request with it a second time.
ANSWERED = "_amb_answered"


class _Chunks:
    """The chunks of one stream, as they arrive in the requester's inbox, and the wait for the next.

    The timeout is watched on the inbox's timer (`ReplyInbox.watch`), once per stream, not per
    wait: each wait only notes when it began (``_active``), and at the deadline `_expire` puts
    it off until ``timeout`` after that. A chunk notes nothing: one that comes while nobody
    waits is taken without waiting, and one that ends a wait ends it before its timeout. (A
    timer of the stream's own, armed and cancelled per stream, cost a fifth of a plain
    request's latency in memory.)
    """

    __slots__ = (
        "_active",
        "_correlation_id",
        "_error",
        "_inbox",
        "_loop",
        "_timeout",
        "_topic",
        "_waiter",
        "_watched",
        "arrived",
        "responder",
    )

    def __init__(self, inbox: ReplyInbox, correlation_id: str, topic: str, timeout: float) -> None:
        self._inbox = inbox
        self._correlation_id = correlation_id
        self._topic = topic
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        #: Chunks that came and are not taken yet: the requester takes them from here without
        #: a call to `next` (one coroutine less per chunk).
        self.arrived: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        #: Whether the inbox watches this stream's deadline.
        self._watched = False
        #: When the requester began waiting for the next chunk (loop time).
        self._active = 0.0
        #: The responder's inbox, learnt from its first chunk: where a cancellation goes.
        self.responder: str | None = None

    def add(self, message: Message) -> None:
        if self.responder is None and message.reply_to is not None:
            self.responder = message.reply_to
        self.arrived.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def receivers(self, count: int) -> None:
        if count == 0 and self._error is None:
            self._error = nobody(self._topic)
            self._wake()

    def fail(self, error: Exception) -> None:
        self._error = error
        self.leave()
        self._wake()

    def leave(self) -> None:
        """The requester stops listening: tell the responder, if it is known yet (otherwise
        its first chunk finds nobody listening, and the inbox tells it then)."""
        if self.responder is not None:
            self._inbox.cancel_stream(self._correlation_id, self.responder)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> Message:
        """The next chunk; raises the stream's error, or `RequestTimeoutError` when none comes
        within ``timeout``."""
        if self.arrived:
            return self.arrived.popleft()
        if self._error is None:
            self._active = self._loop.time()
            if not self._watched:
                self._watched = True
                self._inbox.watch(self._correlation_id, self._active + self._timeout, self._expire)
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            if self.arrived:
                return self.arrived.popleft()
        if self._error is not None:
            raise self._error
        raise RequestTimeoutError(
            f"no chunk of the reply stream to the request on {self._topic!r} within {self._timeout} s"
        )

    def _expire(self, now: float) -> float | None:
        """At the deadline: expire the wait if nothing came for ``timeout`` and return None, else
        return the wait's own deadline (or None while nobody waits: the next wait watches again)."""
        due = self._active + self._timeout
        if self._waiter is not None and now < due:
            return due
        self._watched = False
        self._wake()
        return None


async def request_stream(
    bus: MessageBus,
    topic: str,
    payload: Mapping[str, Any] | None,
    *,
    timeout: float,
    priority: MessagePriority,
    sender: str | None,
    ttl: float | None,
    metadata: Mapping[str, Any] | None,
    key: str | None = None,
) -> AsyncIterator[Message]:
    """What `MessageBus.request_stream` returns (see there)."""
    inbox = bus._inbox_if_open() or await bus._inbox_for_requests()
    request = bus._request_message(inbox, topic, payload, timeout, priority, sender, ttl, metadata, key)
    correlation_id = request.id
    chunks = _Chunks(inbox, correlation_id, topic, timeout)
    inbox.collect(correlation_id, chunks)
    finished = False
    try:
        await bus._publish_request(request, inbox)
        expected = 0
        arrived = chunks.arrived
        while True:
            chunk = arrived.popleft() if arrived else await chunks.next()
            marks = chunk.metadata
            number = marks.get(SEQ)
            if number == expected and len(marks) == 1 and type(number) is int:
                # The next chunk, with nothing but its number: the common case, first.
                expected += 1
                yield chunk
                continue
            if marks:
                if ERROR in marks:
                    error = remote_error(chunk, topic)
                    if error is not None:
                        finished = True
                        raise error
                if number is not None:
                    if number != expected or type(number) is not int:
                        raise StreamSequenceError(_out_of_sequence(topic, expected, number))
                    if marks.get(END) is True:
                        finished = True
                        return
                    expected += 1
                    yield chunk
                    continue
            # A plain reply (the responder used reply(), not reply_stream()): the whole answer.
            finished = True
            yield chunk
            return
    finally:
        inbox.stop_collecting(correlation_id)
        if not finished:
            chunks.leave()


def _out_of_sequence(topic: str, expected: int, number: object) -> str:
    if isinstance(number, int) and number > expected:
        what = f"chunk {number} arrived: {number - expected} missing"
    else:
        what = f"chunk {number!r} arrived again or out of order"
    return f"the reply stream to the request on {topic!r} expected chunk {expected}, but {what}"


class ReplyStream:
    """The responder's side of a reply stream: ``async with bus.reply_stream(request) as stream``,
    then ``await stream.send(payload)`` per chunk.

    Leaving the block normally ends the stream (the requester's loop ends); leaving it with an
    exception ends it with that error (the requester's loop raises `RemoteHandlerError`), and
    the exception goes on. Once the requester has gone away, `send` raises
    `RequestCancelledError`: stop the work (a handler that lets it propagate ends quietly).
    """

    __slots__ = (
        "_bus",
        "_cancelled",
        "_ended",
        "_fields",
        "_ids",
        "_inbox",
        "_open",
        "_priority",
        "_reply_to",
        "_request",
        "_restamp_at",
        "_sender",
        "_stamp",
        "_yield_at",
        "sent",
    )

    def __init__(self, bus: MessageBus, request: Message, sender: str | None) -> None:
        if not request.correlation_id:
            raise ValueError(f"message {request.id} is not a request: it has no correlation_id")
        self._bus = bus
        self._request = request
        self._reply_to = request.reply_to or request.topic
        self._priority = request.priority
        self._sender = sender
        self._inbox: ReplyInbox | None = None
        #: Every chunk's envelope fields but its own (id, payload, timestamp, marks), set on entry.
        self._fields: dict[str, Any] = {}
        self._ids = ""
        self._cancelled = False
        self._ended = False
        #: Whether `send` may send: inside the block, until the requester goes away.
        self._open = False
        self._yield_at = 0.0
        #: The time the chunks carry, and when (monotonic) it is read again: at the first chunk.
        self._stamp = _EPOCH
        self._restamp_at = -math.inf
        #: Chunks sent so far.
        self.sent = 0

    def __repr__(self) -> str:
        return (
            f"<ReplyStream to request {self._request.id} on {self._request.topic!r}: {self.sent} chunks sent>"
        )

    @property
    def cancelled(self) -> bool:
        """Whether the requester has gone away (then `send` raises `RequestCancelledError`)."""
        return self._cancelled

    def cancel(self) -> None:
        """The requester stopped listening (called by the bus's inbox)."""
        self._cancelled = True
        self._open = False

    async def __aenter__(self) -> ReplyStream:
        # The inbox receives the requester's cancellation: it must be open before any chunk
        # names it.
        self._inbox = self._bus._inbox_if_open() or await self._bus._inbox_for_requests()
        self._inbox.sending(self._request.correlation_id or "", self)
        self._fields = {
            "id": "",
            "topic": self._reply_to,
            "payload": None,
            "priority": self._priority,
            "sender": self._sender,
            "correlation_id": self._request.correlation_id,
            "reply_to": self._inbox.pattern,
            "timestamp": None,
            "ttl": None,
            "metadata": None,
            "key": None,
        }
        # Each chunk's id: this stream's own, unique like any other, and the chunk's number
        # (half the cost of a new id per chunk).
        self._ids = f"{new_id()}."
        self._open = not (self._cancelled or self._ended)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        if self._inbox is not None:
            self._inbox.sending(self._request.correlation_id or "", None)
        if self._ended or self._cancelled or isinstance(exc, RequestCancelledError):
            self._ended = True
            return
        self._ended = True
        marks: dict[str, Any] = {SEQ: self.sent, END: True}
        if exc is None:
            await self._publish(None, marks)
            return
        marks[ERROR] = error_mark(exc)
        if isinstance(exc, Exception):
            try:
                await self._publish(None, marks)
            except Exception:  # the handler's own error is the one to report
                _unanswered(self._request, exc)
            else:
                _mark_answered(exc)
        else:
            # Cancelled (the bus is closing, say): awaiting now could be cancelled again.
            self._bus._background.start(self._publish_quietly(marks))

    async def send(
        self, payload: Mapping[str, Any] | None = None, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Send the next chunk (a JSON object, like any payload). Raises `RequestCancelledError`
        once the requester has gone away."""
        if not self._open:
            self._refuse_send()
        sent = self.sent
        if sent == 0:
            self._bus._check_topic(self._reply_to)
        marks = {SEQ: sent} if not metadata else json_object({**metadata, SEQ: sent}, "metadata")
        # The envelope built here rather than by `publish`, from the fields every chunk shares:
        # the topic is checked once and the marks, the bus's own, are not copied again (what a
        # chunk costs in memory).
        fields = self._fields.copy()
        fields["id"] = f"{self._ids}{sent}"
        fields["payload"] = json_object(payload) if payload is not None else {}
        now = _monotonic()
        if now >= self._restamp_at:
            self._stamp = _now(_utc)
            self._restamp_at = now + _STAMP_INTERVAL
        fields["timestamp"] = self._stamp
        fields["metadata"] = marks
        chunk = message_of(fields)
        # The first chunk waits until the broker has it: it then reaches the requester on its
        # own, ahead of the rest, instead of at the head of a burst that the requester's
        # connection reads (and decodes) whole before its loop sees any of it. Time to the
        # first chunk is what a user waits for; one broker round trip per stream is its price.
        # In memory, after the first chunk: the broker's publish without a coroutine (None when
        # every receiver had room), which the bus holds while it is open.
        direct = self._bus._publish_now
        if sent and direct is not None:
            pending = direct(chunk)
            if pending is not None:
                await pending
        else:
            await self._bus._publish_built(chunk, sent == 0)
        self.sent = sent + 1
        # A pass of the event loop after the first chunk and then at least every millisecond,
        # so that chunks are on their way as they come even from a producer that never waits
        # for anything else (one pass per chunk would cost more than the chunk).
        if now >= self._yield_at:
            self._yield_at = now + _YIELD_INTERVAL
            await asyncio.sleep(0)

    def _refuse_send(self) -> NoReturn:
        if self._cancelled:
            raise RequestCancelledError(
                f"the requester of {self._request.id} on {self._request.topic!r} stopped listening "
                f"after {self.sent} chunks"
            )
        raise RuntimeError("send() works inside 'async with bus.reply_stream(request) as stream:' only")

    async def _publish(
        self, payload: Mapping[str, Any] | None, marks: dict[str, Any], *, confirm: bool = False
    ) -> None:
        assert self._inbox is not None
        await self._bus.publish(
            self._reply_to,
            payload,
            priority=self._priority,
            sender=self._sender,
            wait_for_confirmation=confirm,
            metadata=marks,
            correlation_id=self._request.correlation_id,
            reply_to=self._inbox.pattern,
        )

    async def _publish_quietly(self, marks: dict[str, Any]) -> None:
        try:
            await self._publish(None, marks)
        except Exception as error:
            _unanswered(self._request, error)


def _mark_answered(error: BaseException) -> None:
    with contextlib.suppress(AttributeError):  # an exception type that takes no attributes
        setattr(error, ANSWERED, True)


def _unanswered(request: Message, error: BaseException) -> None:
    logger.warning(
        "could not end the reply stream to request %s on %s (%s: %s); its requester times out",
        request.id,
        request.topic,
        type(error).__name__,
        error,
        extra=message_fields(request),
    )
