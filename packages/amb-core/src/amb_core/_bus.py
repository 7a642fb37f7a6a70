"""`MessageBus`: the API agents use. It carries envelopes and never looks inside them."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from functools import partial
from types import TracebackType
from typing import Any

import anyio

from amb_core import _gather
from amb_core import _streams as streams
from amb_core._broker_adapter import BrokerAdapter, Capabilities
from amb_core._control import CANCELLED, ERROR, error_mark
from amb_core._errors import BrokerUnavailableError, BusClosedError
from amb_core._gather import Replies
from amb_core._groups import GroupInfo
from amb_core._ids import new_id
from amb_core._keys import validate_key
from amb_core._logs import message_fields
from amb_core._memory import InMemoryBroker
from amb_core._message import Message, MessagePriority, build_message
from amb_core._outbox import Outbox
from amb_core._payload import json_object
from amb_core._policy import Policy
from amb_core._registry import adapter_from_url
from amb_core._replies import ReplyInbox
from amb_core._streams import ANSWERED, ReplyStream
from amb_core._subscription import MessageHandler, Subscription
from amb_core._supervision import TaskSet
from amb_core._topics import INBOX_PREFIX, validate_group, validate_pattern, validate_topic
from amb_core.middleware import Call, Middleware, chain_for, observe_stream

logger = logging.getLogger("amb.bus")

_NORMAL = MessagePriority.NORMAL
_utc = timezone.utc
_now = datetime.now
_MAX_CACHED_TOPICS = 4096


class _State(Enum):
    NEW = "not connected yet"
    OPEN = "connected"
    CLOSING = "closing"
    CLOSED = "closed"


# Module constants for the checks on every publish and request: reading a member off its Enum
# class (``_State.OPEN``) costs more than a global lookup, by a few hundred nanoseconds.
_OPEN, _CLOSING = _State.OPEN, _State.CLOSING


class MessageBus:
    """Publish, subscribe and request over one broker adapter (the in-memory broker by default).

    Use it as ``async with MessageBus() as bus:``, or call `connect` and `close` yourself.
    """

    def __init__(
        self,
        adapter: BrokerAdapter | None = None,
        *,
        queue_size: int = 1024,
        drain_timeout: float = 5.0,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        """``queue_size`` bounds each subscription's local queue (a full queue makes publishers
        and broker consumers wait); ``drain_timeout`` bounds how long `disconnect` lets queued
        messages and running handlers finish; ``middlewares`` run around publishing, handling
        and requests, the first outermost (see `amb_core.middleware`)."""
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._adapter = adapter if adapter is not None else InMemoryBroker()
        self._queue_size = queue_size
        self._drain_timeout = drain_timeout
        self._state = _State.NEW
        self._subscriptions: dict[str, Subscription] = {}
        self._inbox: ReplyInbox | None = None
        self._inbox_lock: asyncio.Lock | None = None
        self._valid_topics: set[str] = set()
        self._policy = self._adapter.policy
        #: None for the in-memory broker, which has no connection to lose.
        self._link = self._adapter.link
        #: Messages kept during an outage (see `amb_core._outbox`); None when there are none.
        self._outbox: Outbox | None = None
        #: Messages the bus sends on its own behalf (cancellations), given up to the drain timeout
        #: to go out when the bus closes.
        self._background = TaskSet("the bus")
        #: The middleware chain (`amb_core.middleware`); None when there is none, so that the
        #: hot paths cost one test of this attribute.
        self._chain = chain_for(self, middlewares)
        #: While the bus is open, in memory without middleware: the broker's publish that
        #: needs no coroutine (`ReplyStream.send` takes it for unconfirmed chunks).
        self._publish_now: Callable[[Message], Coroutine[Any, Any, None] | None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        queue_size: int = 1024,
        drain_timeout: float = 5.0,
        middlewares: Sequence[Middleware] = (),
        **options: Any,
    ) -> MessageBus:
        """A bus on the adapter registered for ``url``'s scheme: ``memory://``, ``redis://``,
        ``rediss://``, ``amqp://``, ``amqps://``, ``kafka://host:port[,host:port]`` or a
        third-party scheme. ``options`` go to the adapter: its own, and the failure-policy ones
        every adapter takes (``max_attempts``, ``connect_timeout``, ``outage_timeout``,
        ``outage_buffer``; see `amb_core.Policy`)."""
        return cls(
            adapter_from_url(url, **options),
            queue_size=queue_size,
            drain_timeout=drain_timeout,
            middlewares=middlewares,
        )

    @property
    def adapter(self) -> BrokerAdapter:
        return self._adapter

    @property
    def capabilities(self) -> Capabilities:
        """What the adapter's broker honours (see docs/semantics.md)."""
        return self._adapter.capabilities

    @property
    def is_connected(self) -> bool:
        return self._state is _State.OPEN

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The subscriptions in force (``queued`` says how many messages wait in each)."""
        return tuple(self._subscriptions.values())

    @property
    def policy(self) -> Policy:
        """The failure-handling options in force (the adapter's)."""
        return self._policy

    async def connect(self) -> None:
        """Connect the adapter, or raise `BrokerUnavailableError` within ``connect_timeout``
        whatever the broker does (`BrokerRefusedError` if it refuses the credentials).
        Connecting a connected bus does nothing."""
        if self._state is _State.OPEN:
            return
        if self._state is _State.CLOSING:
            raise BusClosedError("the bus is closing")
        timeout = self._policy.connect_timeout
        with anyio.move_on_after(timeout) as scope:
            await self._adapter.connect()
        if scope.cancelled_caught:
            raise BrokerUnavailableError(
                f"{self._adapter.describe()} did not answer within connect_timeout ({timeout} s)"
            )
        if self._link is not None:
            self._link.reset()
        self._state = _State.OPEN
        if isinstance(self._adapter, InMemoryBroker) and self._chain is None:
            self._publish_now = self._adapter.publish_now

    async def disconnect(self) -> None:
        """Stop new deliveries, let queued messages and running handlers finish (at most
        ``drain_timeout`` seconds), then close the adapter. Publishing and requesting keep
        working while handlers finish, so a handler in flight can still reply."""
        if self._state is not _State.OPEN:
            return
        self._state = _State.CLOSING
        self._publish_now = None
        subscriptions = list(self._subscriptions.values())
        self._subscriptions.clear()
        try:
            await asyncio.gather(*(self._detach(subscription) for subscription in subscriptions))
            with anyio.move_on_after(self._drain_timeout) as scope:
                for subscription in subscriptions:
                    await subscription.drain()
            if scope.cancelled_caught:
                logger.warning(
                    "handlers still running after the %s s drain timeout were cancelled", self._drain_timeout
                )
            for subscription in subscriptions:
                dropped = await subscription.close(cancel=True)
                if dropped:
                    logger.warning(
                        "%d queued messages of %r were not handled before the bus closed",
                        dropped,
                        subscription,
                    )
            if self._inbox is not None:
                inbox, self._inbox = self._inbox, None
                inbox.fail_all()  # reply streams this bus listens to tell their responders
                await self._detach(inbox)
            await self._background.close(self._drain_timeout)
            if self._outbox is not None:
                outbox, self._outbox = self._outbox, None
                await outbox.close(self._drain_timeout)
        finally:
            self._state = _State.CLOSED
            await self._adapter.disconnect()

    async def close(self) -> None:
        """Close the bus, as `disconnect` does: what ``async with`` calls on the way out."""
        await self.disconnect()

    #: For `contextlib.aclosing` and code that closes async resources by their ``aclose``.
    aclose = close

    async def _detach(self, subscription: Subscription) -> None:
        try:
            await self._adapter.unsubscribe(subscription)
        except Exception:
            logger.exception("the broker did not confirm the end of %r", subscription)

    async def __aenter__(self) -> MessageBus:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.disconnect()

    def _refuse(self) -> BusClosedError:
        return BusClosedError(
            f"the bus is {self._state.value}; use 'async with MessageBus(...)' or await bus.connect()"
        )

    async def publish(
        self,
        topic: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: MessagePriority = _NORMAL,
        sender: str | None = None,
        wait_for_confirmation: bool = False,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        key: str | None = None,
    ) -> str:
        """Publish ``payload`` (a JSON object) to ``topic`` and return the message id.

        By default this returns as soon as the adapter has taken the message (fire and forget);
        with ``wait_for_confirmation=True`` it returns once the broker has accepted it. ``ttl``
        is in seconds: a message still undelivered after that is dropped. Messages with the
        same ``key`` reach each subscription, and each group, in publish order (docs/semantics.md, "Keys and ordering").
        """
        if self._state is not _OPEN and self._state is not _CLOSING:
            raise self._refuse()
        message = self._envelope(
            topic, payload, priority, sender, ttl, metadata, new_id(), correlation_id, reply_to, key
        )
        if self._chain is not None:
            await self._chain.publish(message, partial(self._transmit, confirm=wait_for_confirmation))
            return message.id
        link = self._link
        if link is None:
            await self._adapter.publish(message, confirm=wait_for_confirmation)
        elif link.up and self._outbox is None and not wait_for_confirmation:
            # The common case inline, not through _send: one coroutine less on the hot path.
            try:
                await self._adapter.publish(message, confirm=False)
            except BrokerUnavailableError:
                if link.up:
                    raise
                await self._send(message, False)  # lost on the way: the outbox keeps it
        else:
            await self._send(message, wait_for_confirmation)
        return message.id

    def _publish_built(self, message: Message, confirm: bool) -> Coroutine[Any, Any, None]:
        """What `publish` does once it has its envelope, for a message built by the caller (a
        reply stream's chunks), to await. In memory without middleware, the adapter's own
        coroutine: one coroutine less per chunk (and `_publish_now`, while the bus is open,
        none at all: `ReplyStream.send` takes it)."""
        if self._state is not _OPEN and self._state is not _CLOSING:
            raise self._refuse()
        if self._chain is not None:
            return self._chain.publish(message, partial(self._transmit, confirm=confirm))
        if self._link is None:
            return self._adapter.publish(message, confirm=confirm)
        return self._send(message, confirm)

    def _check_topic(self, topic: str) -> None:
        """Raise `InvalidTopicError` unless ``topic`` can be published to (cached, as in `publish`)."""
        if topic not in self._valid_topics:
            self._remember_topic(topic)

    async def _transmit(self, message: Message, confirm: bool) -> None:
        """What `publish` does with its message: the path middleware runs around."""
        if self._link is None:
            await self._adapter.publish(message, confirm=confirm)
        else:
            await self._send(message, confirm)

    async def _send(self, message: Message, confirm: bool) -> None:
        """Publish through a network adapter, riding out outages (see `amb_core._outbox`)."""
        link = self._link
        assert link is not None
        if self._outbox is None and link.up:
            try:
                if not confirm:
                    await self._adapter.publish(message, confirm=False)
                    return
                timeout = self._policy.outage_timeout
                with anyio.move_on_after(timeout) as scope:
                    await self._adapter.publish(message, confirm=True)
                if not scope.cancelled_caught:
                    return
                raise BrokerUnavailableError(
                    f"{link.name} did not confirm message {message.id} within outage_timeout ({timeout} s);"
                    " it may still arrive"
                )
            except BrokerUnavailableError:
                if link.up:
                    raise
                # The connection went while this message was being sent, and it was not taken.
        if self._outbox is None:
            self._outbox = Outbox(self._adapter, link, self._outbox_empty)
        await self._outbox.put(message, confirm)

    def _outbox_empty(self) -> None:
        self._outbox = None

    def _envelope(
        self,
        topic: str,
        payload: Mapping[str, Any] | None,
        priority: MessagePriority,
        sender: str | None,
        ttl: float | None,
        metadata: Mapping[str, Any] | None,
        message_id: str,
        correlation_id: str | None,
        reply_to: str | None,
        key: str | None = None,
    ) -> Message:
        if topic not in self._valid_topics:
            self._remember_topic(topic)
        if key is not None:
            validate_key(key)
        if priority.__class__ is not MessagePriority:
            priority = MessagePriority.coerce(priority)
        if ttl is not None and not (isinstance(ttl, (int, float)) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        return build_message(
            message_id,
            topic,
            json_object(payload) if payload is not None else {},
            priority,
            sender,
            correlation_id,
            reply_to,
            _now(_utc),
            ttl,
            json_object(metadata, "metadata") if metadata else {},
            key,
        )

    def _remember_topic(self, topic: str) -> None:
        validate_topic(topic)
        if len(self._valid_topics) >= _MAX_CACHED_TOPICS:
            self._valid_topics.clear()
        self._valid_topics.add(topic)

    async def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        concurrency: int = 1,
    ) -> str:
        """Call ``handler(message)`` for every message published to ``topic`` from now on.

        ``topic`` may be a pattern: ``*`` matches one segment, ``#`` zero or more. Subscriptions
        sharing a ``group`` on the same pattern share the work (each message goes to one of them).
        ``concurrency`` is how many handler calls may run at once (1 keeps publish order).
        Returns the subscription id for `unsubscribe`.
        """
        if self._state is not _State.OPEN:
            raise self._refuse()
        validate_pattern(topic)
        if group is not None:
            validate_group(group)
        if not callable(handler):
            raise TypeError(f"handler must be a function taking a Message (async or not), not {handler!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, not {concurrency!r}")
        subscription = Subscription(
            new_id(),
            topic,
            handler,
            group=group,
            concurrency=concurrency,
            queue_size=self._queue_size,
            max_attempts=self._policy.max_attempts,
            answer_failure=self._answer_failure,
            chain=self._chain,
        )
        if self._link is not None and not self._link.up:
            await self._link.wait_up(self._policy.outage_timeout)
        await self._adapter.subscribe(subscription)
        self._subscriptions[subscription.id] = subscription
        return subscription.id

    async def unsubscribe(self, subscription_id: str) -> None:
        """Stop the subscription: no handler call starts after this returns. Calls in flight
        finish; unsubscribing twice, or an unknown id, does nothing."""
        subscription = self._subscriptions.pop(subscription_id, None)
        if subscription is None:
            return
        await self._detach(subscription)
        await subscription.close(cancel=False)

    async def request(
        self,
        topic: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float = 30.0,
        priority: MessagePriority = _NORMAL,
        sender: str | None = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Message:
        """Publish a request and return the first reply (see `reply`). ``key`` orders it among
        messages with the same key, as in `publish`.

        Raises `RequestTimeoutError` (a `TimeoutError`) when no reply comes within ``timeout``
        seconds (a reply arriving later is dropped); `NoRespondersError` (a
        `RequestTimeoutError`) at once where the broker reports that no subscription receives
        it (``capabilities.reports_no_responders``); `RemoteHandlerError` when the handler
        raised instead of replying. The request's ``ttl`` is ``timeout`` unless given: nobody
        handles it once its requester has given up.
        """
        if self._chain is not None:
            run = partial(self._request, topic, payload, timeout, priority, sender, ttl, metadata, key)
            return await self._chain.call(Call("request", topic), run)
        return await self._request(topic, payload, timeout, priority, sender, ttl, metadata, key)

    async def _request(
        self,
        topic: str,
        payload: Mapping[str, Any] | None,
        timeout: float,
        priority: MessagePriority,
        sender: str | None,
        ttl: float | None,
        metadata: Mapping[str, Any] | None,
        key: str | None,
    ) -> Message:
        # _inbox_for_requests inline: one coroutine less on the request's hot path.
        inbox = self._inbox
        if inbox is None or self._state is not _OPEN:
            inbox = await self._inbox_for_requests()
        message = self._request_message(inbox, topic, payload, timeout, priority, sender, ttl, metadata, key)
        reply = inbox.expect(message.id, topic, timeout)
        try:
            await self._publish_request(message, inbox)
            return await reply
        finally:
            inbox.forget(message.id)

    def request_stream(
        self,
        topic: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float = 30.0,
        priority: MessagePriority = _NORMAL,
        sender: str | None = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> AsyncIterator[Message]:
        """Send one request, when the loop starts, and yield the chunks of its reply stream in
        the order they were sent (see `reply_stream`)::

            async for chunk in bus.request_stream("agent.draft", {"brief": "..."}):
                print(chunk.payload["token"], end="")

        ``timeout`` bounds the wait for the first chunk and between chunks
        (`RequestTimeoutError`); the other options are those of `request`, which raises what
        this raises. A missing or repeated chunk raises `StreamSequenceError`; a responder that
        failed, `RemoteHandlerError`. Leaving the loop early (``break``, an exception, the
        task's cancellation, ``aclose()``) tells the responder to stop. A plain `reply` to it
        is a stream of that one message.
        """
        chunks = streams.request_stream(
            self,
            topic,
            payload,
            timeout=timeout,
            priority=priority,
            sender=sender,
            ttl=ttl,
            metadata=metadata,
            key=key,
        )
        return chunks if self._chain is None else observe_stream(self._chain, topic, chunks)

    def reply_stream(self, request: Message, *, sender: str | None = None) -> ReplyStream:
        """Answer ``request`` with a stream of chunks::

            async with bus.reply_stream(request) as stream:
                async for token in llm(request.payload):
                    await stream.send({"token": token})

        Leaving the block ends the stream; leaving it with an exception ends it with that error
        (the requester raises `RemoteHandlerError`). Once the requester has gone away,
        ``stream.send`` raises `RequestCancelledError`.
        """
        return ReplyStream(self, request, sender)

    async def gather(
        self,
        topic: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float = 5.0,
        max_replies: int | None = None,
        priority: MessagePriority = _NORMAL,
        sender: str | None = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Replies:
        """Send one request that every subscription may answer (each ungrouped subscription,
        and one member of each group) and return the replies received within ``timeout``
        seconds, or the first ``max_replies``, in the order they arrived: an empty list if
        nobody answered, never `RequestTimeoutError`.

        It returns as soon as every subscription that received the request has answered where
        the broker counts them (``capabilities.counts_receivers``), at once where it reports
        that nobody receives it. Handlers that raised are not replies: the returned list's
        ``failures`` holds a `RemoteHandlerError` for each. Other options: as for `request`.
        """
        run = partial(
            _gather.gather,
            self,
            topic,
            payload,
            timeout=timeout,
            max_replies=max_replies,
            priority=priority,
            sender=sender,
            ttl=ttl,
            metadata=metadata,
            key=key,
        )
        return await run() if self._chain is None else await self._chain.call(Call("gather", topic), run)

    def _inbox_if_open(self) -> ReplyInbox | None:
        """The inbox if it is open and the bus usable; else None (then await
        `_inbox_for_requests`): one coroutine less where a stream starts."""
        return self._inbox if self._state is _OPEN else None

    async def _inbox_for_requests(self) -> ReplyInbox:
        """The inbox, opened at the first request; raises if the bus is not usable."""
        if self._state is not _State.OPEN and self._state is not _State.CLOSING:
            raise self._refuse()
        return self._inbox if self._inbox is not None else await self._open_inbox()

    def _request_message(
        self,
        inbox: ReplyInbox,
        topic: str,
        payload: Mapping[str, Any] | None,
        timeout: float,
        priority: MessagePriority,
        sender: str | None,
        ttl: float | None,
        metadata: Mapping[str, Any] | None,
        key: str | None = None,
    ) -> Message:
        """The envelope of a request answered in ``inbox``. Its ttl is the requester's timeout
        unless given: a request nobody waits for any more is never handled."""
        if ttl is None and isinstance(timeout, (int, float)) and 0 < timeout < math.inf:
            ttl = timeout
        message_id = new_id()
        return self._envelope(
            topic, payload, priority, sender, ttl, metadata, message_id, message_id, inbox.pattern, key
        )

    def _publish_request(
        self, message: Message, inbox: ReplyInbox, *, count: bool = False, observed: bool = False
    ) -> Coroutine[Any, Any, None]:
        """Publish a request, telling ``inbox`` what the broker says about who receives it (to
        await): through the middleware, unless ``observed`` (the middleware calling). In memory
        without middleware, the adapter's own coroutine: one coroutine less on the hot path."""
        if self._chain is not None and not observed:
            send = partial(self._publish_request, inbox=inbox, count=count, observed=True)
            return self._chain.publish(message, send)
        receivers = partial(inbox.receivers, message.id)
        if self._link is None:
            return self._adapter.publish_tracked(message, receivers, count=count)
        return self._publish_linked_request(message, receivers, count)

    async def _publish_linked_request(
        self, message: Message, receivers: Callable[[int], None], count: bool
    ) -> None:
        """`_publish_request` through a network adapter, riding out outages (as `publish`)."""
        link = self._link
        assert link is not None
        if link.up and self._outbox is None:
            try:
                await self._adapter.publish_tracked(message, receivers, count=count)
            except BrokerUnavailableError:
                if link.up:
                    raise
                await self._send(message, False)  # lost on the way: the outbox keeps it
        else:
            await self._send(message, False)

    async def _answer_failure(self, request: Message, error: Exception) -> None:
        """Answer ``request``, whose handler raised for the last time, with the error, so that
        its requester raises `RemoteHandlerError` at once instead of waiting for its timeout."""
        if getattr(error, ANSWERED, False):
            return  # its reply stream ended with this error already
        try:
            await self.publish(
                request.reply_to or request.topic,
                None,
                priority=request.priority,
                metadata={ERROR: error_mark(error)},
                correlation_id=request.correlation_id,
            )
        except Exception as failure:
            logger.log(
                logging.DEBUG if isinstance(failure, BusClosedError) else logging.WARNING,
                "could not tell the requester of %s on %s that its handler failed: %s",
                request.id,
                request.topic,
                failure,
                extra=message_fields(request),
            )

    def _send_cancel(self, responder: str, correlation_id: str) -> None:
        """Tell the responder whose inbox is ``responder`` to stop its reply stream."""
        self._background.start(self._cancel(responder, correlation_id))

    async def _cancel(self, responder: str, correlation_id: str) -> None:
        try:
            await self.publish(responder, None, metadata=CANCELLED, correlation_id=correlation_id)
        except Exception as error:
            logger.debug("could not cancel the reply stream of request %s: %s", correlation_id, error)

    async def _open_inbox(self) -> ReplyInbox:
        if self._inbox_lock is None:
            self._inbox_lock = asyncio.Lock()
        async with self._inbox_lock:
            if self._inbox is None:
                inbox_id = new_id()
                inbox = ReplyInbox(inbox_id, INBOX_PREFIX + inbox_id, self._send_cancel)
                await self._adapter.subscribe(inbox)
                self._inbox = inbox
            return self._inbox

    async def reply(
        self,
        request: Message,
        payload: Mapping[str, Any] | None = None,
        *,
        sender: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        wait_for_confirmation: bool = False,
    ) -> str:
        """Answer ``request``: publish ``payload`` to its ``reply_to`` (or, for a hand-made
        request without one, to its topic) with its ``correlation_id``. Returns the reply's id."""
        if not request.correlation_id:
            raise ValueError(f"message {request.id} is not a request: it has no correlation_id")
        publishing = self.publish(
            request.reply_to or request.topic,
            payload,
            priority=request.priority,
            sender=sender,
            metadata=metadata,
            correlation_id=request.correlation_id,
            wait_for_confirmation=wait_for_confirmation,
        )
        if self._chain is None:
            return await publishing
        return await self._chain.call(
            Call("reply", request.reply_to or request.topic, request), lambda: publishing
        )

    # -- groups over time (amb_core._groups) -------------------------------------------------

    async def list_groups(self) -> list[GroupInfo]:
        """Every group on the broker, of any process, with its pattern, members and backlog
        (groups that went ``group_expiry`` without a member are removed first)."""
        if self._state is not _OPEN:
            raise self._refuse()
        return await self._adapter.list_groups()

    async def purge_group(self, group: str, pattern: str) -> int:
        """Drop the messages waiting for ``group`` on ``pattern``; return how many."""
        if self._state is not _OPEN:
            raise self._refuse()
        return await self._adapter.purge_group(validate_group(group), validate_pattern(pattern))

    async def delete_group(self, group: str, pattern: str) -> bool:
        """Remove ``group`` on ``pattern`` and its backlog; False if there was no such group.
        Raises `GroupInUseError` while members run (stop them first)."""
        if self._state is not _OPEN:
            raise self._refuse()
        return await self._adapter.delete_group(validate_group(group), validate_pattern(pattern))
