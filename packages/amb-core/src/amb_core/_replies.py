"""Request/reply bookkeeping: one private inbox per bus, a map of the requests waiting on it,
the reply streams and gathers collecting on it, and the reply streams this bus is sending."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from heapq import heapify, heappop, heappush
from typing import NamedTuple, Protocol

from amb_core._control import CANCEL, END, SEQ, remote_error
from amb_core._delivery import Delivery
from amb_core._errors import BusClosedError, NoRespondersError, RequestTimeoutError
from amb_core._message import Message
from amb_core._subscription import Subscription
from amb_core._wire import decode_or_log

logger = logging.getLogger("amb.bus")
#: Correlation ids of streams this inbox told to stop, remembered so that it tells each once.
_MAX_REMEMBERED_CANCELS = 4096


async def _no_handler(message: Message) -> None:  # pragma: no cover - the inbox never queues
    raise AssertionError("the reply inbox resolves requests directly")


class _Waiting(NamedTuple):
    future: asyncio.Future[Message]
    deadline: float
    topic: str
    timeout: float


class Collector(Protocol):
    """A request that takes any number of answers (a reply stream, a gather)."""

    def add(self, message: Message) -> None:
        """An answer arrived."""

    def receivers(self, count: int) -> None:
        """The broker said how many subscriptions receive the request (see
        `amb_core.adapter.BrokerAdapter.publish_tracked`)."""

    def fail(self, error: Exception) -> None:
        """No more answers will come: the bus is closing."""


class Cancellable(Protocol):
    """A reply stream this bus sends (`amb_core._streams.ReplyStream`)."""

    def cancel(self) -> None:
        """Its requester stopped listening."""


class ReplyInbox(Subscription):
    """The bus's private reply topic. Replies resolve their request at once, without queueing.

    Timeouts share one timer, armed for the earliest deadline: a timer per request cost more
    than the rest of a request on the in-memory broker (reply streams watch theirs on it too). Adapters may treat the inbox specially
    (no acknowledgements, a broker resource that lives as long as the bus): `is_inbox` says so.
    """

    __slots__ = (
        "_cancelled",
        "_collectors",
        "_deadlines",
        "_send_cancel",
        "_sending",
        "_timer",
        "_timer_at",
        "_waiting",
        "_watched",
    )
    is_inbox = True

    def __init__(self, id: str, topic: str, send_cancel: Callable[[str, str], None]) -> None:
        """``send_cancel(inbox, correlation_id)`` asks the bus to tell the responder whose inbox
        that is to stop the stream it sends for ``correlation_id``."""
        super().__init__(id, topic, _no_handler)
        self._waiting: dict[str, _Waiting] = {}
        self._collectors: dict[str, Collector] = {}
        self._sending: dict[str, Cancellable] = {}
        self._send_cancel = send_cancel
        self._cancelled: set[str] = set()
        # (deadline, correlation id); entries of answered requests stay until popped or compacted.
        self._deadlines: list[tuple[float, str]] = []
        #: What to call at the deadlines of `watch`, by correlation id.
        self._watched: dict[str, Callable[[float], float | None]] = {}
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

    def collect(self, correlation_id: str, collector: Collector) -> None:
        """Hand every answer to ``correlation_id`` to ``collector`` until `stop_collecting`."""
        self._collectors[correlation_id] = collector

    def stop_collecting(self, correlation_id: str) -> None:
        self._collectors.pop(correlation_id, None)
        self._watched.pop(correlation_id, None)

    def watch(self, correlation_id: str, deadline: float, expire: Callable[[float], float | None]) -> None:
        """Call ``expire(now)`` at ``deadline`` (loop time), on the timer the requests share, until
        it returns None (else it returns its next deadline) or `stop_collecting` is called."""
        self._watched[correlation_id] = expire
        if len(self._deadlines) > 2 * (len(self._waiting) + len(self._watched)) + 64:
            self._compact()
        heappush(self._deadlines, (deadline, correlation_id))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)

    def sending(self, correlation_id: str, stream: Cancellable | None) -> None:
        """Register (or, with None, forget) a reply stream this bus sends, so that the
        requester's cancellation reaches it."""
        if stream is None:
            self._sending.pop(correlation_id, None)
        else:
            self._sending[correlation_id] = stream

    def receivers(self, correlation_id: str, count: int) -> None:
        """The broker said how many subscriptions receive the request ``correlation_id``."""
        waiting = self._waiting.get(correlation_id)
        if waiting is not None:
            if count == 0:
                del self._waiting[correlation_id]
                if not waiting.future.done():
                    waiting.future.set_exception(nobody(waiting.topic))
            return
        collector = self._collectors.get(correlation_id)
        if collector is not None:
            collector.receivers(count)

    def cancel_stream(self, correlation_id: str, responder: str) -> None:
        """Tell the responder whose inbox is ``responder`` to stop streaming (once)."""
        if correlation_id in self._cancelled:
            return
        if len(self._cancelled) >= _MAX_REMEMBERED_CANCELS:
            self._cancelled.clear()
        self._cancelled.add(correlation_id)
        self._send_cancel(responder, correlation_id)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._expire_due)
        self._timer_at = deadline

    def _compact(self) -> None:
        watched = self._watched
        entries = [(waiting.deadline, key) for key, waiting in self._waiting.items()]
        if watched:  # plain requests (the hot path) pay nothing for streams
            entries += [entry for entry in self._deadlines if entry[1] in watched]
        heapify(entries)
        self._deadlines = entries

    def _expire_due(self) -> None:
        self._timer = None
        now = self._loop.time()
        deadlines = self._deadlines
        watched = self._watched
        while deadlines and deadlines[0][0] <= now:
            correlation_id = heappop(deadlines)[1]
            waiting = self._waiting.pop(correlation_id, None)
            if waiting is None:
                expire = watched.get(correlation_id)
                if expire is not None:
                    later = expire(now)
                    if later is None:
                        del watched[correlation_id]
                    else:
                        heappush(deadlines, (later, correlation_id))  # later > now: popped next time
            elif not waiting.future.done():
                waiting.future.set_exception(
                    RequestTimeoutError(
                        f"no reply to the request on {waiting.topic!r} within {waiting.timeout} s"
                    )
                )
        while deadlines and deadlines[0][1] not in self._waiting and deadlines[0][1] not in watched:
            heappop(deadlines)
        if deadlines:
            self._arm(deadlines[0][0])

    def offer(self, message: Message, delivery: Delivery | None = None) -> bool:
        correlation_id = message.correlation_id or ""
        if message.metadata:  # marked by the bus (a chunk, an error...) or by the responder
            # A stream's chunk, the marked answer that comes by the thousand, taken here
            # rather than in `_offer_marked`: a call less per chunk. (A cancellation is never
            # collected: it goes to the responder's side of the same correlation id.)
            collector = self._collectors.get(correlation_id)
            if collector is not None and CANCEL not in message.metadata:
                collector.add(message)
            else:
                self._offer_marked(message)
            return True
        waiting = self._waiting.pop(correlation_id, None)
        if waiting is not None and not waiting.future.done():
            waiting.future.set_result(message)
            return True
        collector = self._collectors.get(correlation_id)
        if collector is not None:
            collector.add(message)
        else:
            _dropped(message)
        return True

    def _offer_marked(self, message: Message) -> None:
        metadata = message.metadata
        correlation_id = message.correlation_id or ""
        if metadata.get(CANCEL) is True:
            stream = self._sending.get(correlation_id)
            if stream is not None:
                stream.cancel()
            return
        # Collectors first: a stream's chunks are the marked answers that come by the thousand
        # (a correlation id is never both collected and waited for).
        collector = self._collectors.get(correlation_id)
        if collector is not None:
            collector.add(message)
            return
        waiting = self._waiting.pop(correlation_id, None)
        if waiting is not None and not waiting.future.done():
            error = remote_error(message, waiting.topic)
            if error is None:
                waiting.future.set_result(message)
            else:
                waiting.future.set_exception(error)
            return
        if SEQ in metadata and END not in metadata and message.reply_to:
            # A chunk of a stream nobody listens to (any more): its responder should stop.
            self.cancel_stream(correlation_id, message.reply_to)
        _dropped(message)

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
        """Fail every waiting request, stream and gather because the bus is closing."""
        collectors, self._collectors = self._collectors, {}
        for collector in collectors.values():
            collector.fail(_closed())
        waiting, self._waiting = self._waiting, {}
        self._watched.clear()
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in waiting.values():
            if not entry.future.done():
                entry.future.set_exception(_closed())


def _closed() -> BusClosedError:
    return BusClosedError("the bus closed before the reply arrived")


def nobody(topic: str) -> NoRespondersError:
    """The error of a request on ``topic`` that no subscription receives."""
    return NoRespondersError(f"no subscription receives requests on {topic!r}: nobody can answer")


def _dropped(message: Message) -> None:
    logger.debug(
        "dropped reply %s: no request %s is waiting (it timed out or was cancelled)",
        message.id,
        message.correlation_id,
    )
