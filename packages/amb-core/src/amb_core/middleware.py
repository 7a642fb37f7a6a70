"""Middleware: code that runs around what a `MessageBus` does (docs/semantics.md, "Middleware,
trace context and logs").

A middleware subclasses `Middleware` and overrides the hooks it needs; each hook gets the
message (or the call) and ``call_next``, which runs the next middleware and, after the last one,
the bus itself::

    class Timing(Middleware):
        async def handle(self, bus, message, handling, call_next):
            started = time.perf_counter()
            try:
                await call_next(message)  # what the handler raises raises here
            finally:
                print(message.topic, handling.outcome, time.perf_counter() - started)

    bus = MessageBus(middlewares=[Timing()])

The bus builds one `Chain` from them; a bus without middleware has none, and its hot paths
test one attribute. The chain guards every hook: an exception a middleware raises (rather than
one ``call_next`` raised through it) is logged, throttled, and the bus goes on as if that
middleware had not been there, so a broken middleware never loses, duplicates or fails a
message; a hook that returns without calling ``call_next`` gets the same treatment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from amb_core._logs import throttled
from amb_core._message import Message, build_message

if TYPE_CHECKING:
    from amb_core._bus import MessageBus
    from amb_core._delivery import Delivery
    from amb_core._subscription import Subscription

logger = logging.getLogger("amb.middleware")

T = TypeVar("T")
#: What a `Middleware.publish` or `Middleware.handle` hook calls to go on.
Next = Callable[[Message], Awaitable[None]]


class Outcome(str, Enum):
    """What became of a message handed to a subscription (see `Handling`)."""

    #: The handler returned (or stopped on `RequestCancelledError`: its requester went away).
    HANDLED = "handled"
    #: The handler raised and the message is not delivered again: an ungrouped subscription
    #: sees each message once, and some brokers do not redeliver.
    RAISED = "raised"
    #: The handler raised and the group gets the message again (attempt + 1).
    RETRIED = "retried"
    #: The handler raised for the ``max_attempts``-th time: the message was dead-lettered.
    DEAD_LETTERED = "dead_lettered"
    #: Its ttl ran out before a handler was free: dropped, the handler never saw it.
    EXPIRED = "expired"


@dataclass
class Handling:
    """One message handed to one subscription, as `Middleware.handle` sees it. The bus sets
    `outcome` and `error` before ``call_next`` returns."""

    subscription: Subscription
    #: 1 for a first delivery; n + 1 after n handler calls that raised (see `Delivery`).
    attempt: int
    outcome: Outcome | None = None
    #: What the handler raised, if it did.
    error: Exception | None = None


@dataclass
class Call(Generic[T]):
    """One call of `MessageBus.request`, ``reply``, ``request_stream`` or ``gather``, as
    `Middleware.call` sees it. The bus sets `result` before ``call_next`` returns (the reply, the
    reply's id, the first chunk of a stream, the `Replies`); an error raises through the hook."""

    #: ``"request"``, ``"reply"``, ``"request_stream"`` or ``"gather"``.
    kind: str
    #: The request's topic, or for ``"reply"`` the topic the reply goes to.
    topic: str
    #: For ``"reply"``: the request answered.
    request: Message | None = None
    result: T | None = field(default=None)


class Middleware:
    """Base class: every hook passes straight on. Override the ones you need; each must await
    ``call_next`` exactly once (the chain does it for a hook that does not, and logs it).

    Order: the bus's ``middlewares`` run in list order, the first outermost (it runs first
    before ``call_next`` and last after it), after those installed for every bus with
    `install`, which are outermost of all.
    """

    async def publish(self, bus: MessageBus, message: Message, call_next: Next) -> None:
        """Around each message the bus sends (publish, reply, requests, chunks, error answers),
        before it is encoded. Pass on a different message to change it: `with_metadata` adds
        entries to its ``metadata``; keep its id, topic and correlation_id."""
        await call_next(message)

    async def handle(self, bus: MessageBus, message: Message, handling: Handling, call_next: Next) -> None:
        """Around each call of a subscription's handler. Once ``call_next`` returns or raises
        (what the handler raised raises through here, and goes on to the bus whatever the hook
        does), ``handling.outcome`` says what the subscription does with the message: it settles
        it after the hooks. Expired messages come through here too, with outcome
        `Outcome.EXPIRED`; ``call_next`` then does nothing (the handler never sees them)."""
        await call_next(message)

    async def call(self, bus: MessageBus, call: Call[Any], call_next: Callable[[], Awaitable[None]]) -> None:
        """Around `MessageBus.request`, ``reply``, ``gather`` (the whole call) and
        ``request_stream`` (from sending the request to its first chunk). The messages they
        send pass through `publish` inside this hook."""
        await call_next()


def with_metadata(message: Message, entries: dict[str, Any]) -> Message:
    """``message`` with ``entries`` added to its metadata (for `Middleware.publish`). The values
    must be JSON values, like all metadata."""
    return build_message(
        message.id,
        message.topic,
        message.payload,
        message.priority,
        message.sender,
        message.correlation_id,
        message.reply_to,
        message.timestamp,
        message.ttl,
        {**message.metadata, **entries},
    )


_installed: list[Callable[[], Middleware]] = []


def install(factory: Callable[[], Middleware]) -> None:
    """Give every `MessageBus` created from now on a middleware made by ``factory()``, outside
    its own ``middlewares`` (how instrumentations such as amb-opentelemetry hook in)."""
    _installed.append(factory)


def uninstall(factory: Callable[[], Middleware]) -> None:
    """Undo `install` for buses created from now on; unknown factories are ignored."""
    if factory in _installed:
        _installed.remove(factory)


def chain_for(bus: MessageBus, middlewares: Sequence[Middleware]) -> Chain | None:
    """The chain of a new bus: those installed for every bus, then its own; None if there are none."""
    for middleware in middlewares:
        if not isinstance(middleware, Middleware):
            raise TypeError(
                f"middlewares must be amb_core.middleware.Middleware instances, not {middleware!r}"
            )
    every = [factory() for factory in _installed]
    return Chain(bus, [*every, *middlewares]) if every or middlewares else None


class _Step(Generic[T]):
    """One middleware's ``call_next``: runs the rest of the chain once and remembers what it did,
    so that the chain can tell the middleware's own errors from those it passed through."""

    __slots__ = ("called", "error", "inner")

    def __init__(self, inner: Callable[[T], Awaitable[None]]) -> None:
        self.inner = inner
        self.called = False
        self.error: BaseException | None = None

    async def __call__(self, argument: T) -> None:
        if self.called:
            raise RuntimeError("call_next was called twice by one middleware hook")
        self.called = True
        try:
            await self.inner(argument)
        except BaseException as error:
            self.error = error
            raise


class Chain:
    """The middlewares of one bus, each hook guarded (see the module's docstring)."""

    __slots__ = ("_bus", "middlewares")

    def __init__(self, bus: MessageBus, middlewares: Sequence[Middleware]) -> None:
        self._bus = bus
        self.middlewares = tuple(middlewares)

    async def publish(self, message: Message, send: Next, index: int = 0) -> None:
        """Run the publish hooks, from the ``index``-th on, around ``send`` (what the bus does
        without middleware)."""
        if index == len(self.middlewares):
            await send(message)
            return
        middleware = self.middlewares[index]
        # The last middleware's call_next is ``send`` itself: one coroutine less per message.
        rest = (
            send if index + 1 == len(self.middlewares) else partial(self.publish, send=send, index=index + 1)
        )
        step = _Step(rest)
        try:
            await middleware.publish(self._bus, message, step)
        except Exception as error:
            await self._recover(middleware, "publish", step, message, error)
        else:
            if step.error is not None or not step.called:
                await self._recover(middleware, "publish", step, message, None)

    async def handle(
        self,
        subscription: Subscription,
        message: Message,
        delivery: Delivery | None,
        call_handler: Callable[[Message], Awaitable[None]],
    ) -> None:
        """Run the handle hooks around ``call_handler``; what it raises raises from here, once
        ``handling.outcome`` says what the subscription will do about it."""
        handling = Handling(subscription, delivery.attempt if delivery is not None else 1)

        async def run(passed: Message) -> None:
            try:
                await call_handler(passed)
            except Exception as error:
                handling.outcome, handling.error = subscription.outcome_of(error, delivery), error
                raise
            handling.outcome = Outcome.HANDLED

        await self._handle_from(message, handling, run)

    async def expired(self, subscription: Subscription, message: Message, delivery: Delivery | None) -> None:
        """Run the handle hooks for a message that expired before its handler was free."""
        handling = Handling(subscription, delivery.attempt if delivery is not None else 1)

        async def run(passed: Message) -> None:
            handling.outcome = Outcome.EXPIRED

        await self._handle_from(message, handling, run)

    async def _handle_from(self, message: Message, handling: Handling, run: Next, index: int = 0) -> None:
        if index == len(self.middlewares):
            await run(message)
            return
        middleware = self.middlewares[index]
        last = index + 1 == len(self.middlewares)
        step = _Step(run if last else partial(self._handle_from, handling=handling, run=run, index=index + 1))
        try:
            await middleware.handle(self._bus, message, handling, step)
        except Exception as error:
            await self._recover(middleware, "handle", step, message, error)
        else:
            if step.error is not None or not step.called:
                await self._recover(middleware, "handle", step, message, None)

    async def call(self, call: Call[T], run: Callable[[], Awaitable[T]]) -> T:
        """Run the call hooks around ``run`` and return what it returned."""

        async def innermost(_: None) -> None:
            call.result = await run()

        await self._call_from(0, call, innermost)
        return call.result  # type: ignore[return-value]  # set by innermost, which ran

    async def _call_from(
        self, index: int, call: Call[Any], innermost: Callable[[None], Awaitable[None]]
    ) -> None:
        if index == len(self.middlewares):
            await innermost(None)
            return
        middleware = self.middlewares[index]

        async def rest(_: None) -> None:
            await self._call_from(index + 1, call, innermost)

        step = _Step(rest)
        try:
            await middleware.call(self._bus, call, lambda: step(None))
        except Exception as error:
            await self._recover(middleware, "call", step, None, error)
        else:
            if step.error is not None or not step.called:
                await self._recover(middleware, "call", step, None, None)

    async def _recover(
        self, middleware: Middleware, hook: str, step: _Step[Any], argument: Any, error: Exception | None
    ) -> None:
        """After a hook that raised ``error`` (None: that returned) with ``step`` its ``call_next``:
        an error that came through ``call_next`` goes on to the caller, even if the hook
        swallowed it; the hook's own is logged, and the rest of the chain runs if the hook had
        not run it."""
        if step.error is not None:
            if step.error is error:
                raise error
            raise step.error
        name = type(middleware).__qualname__
        if error is not None:
            throttled(
                logger,
                f"middleware {name}.{hook}",
                "middleware %s raised in its %s hook (ignored: the bus goes on without it): %s: %s",
                name,
                hook,
                type(error).__name__,
                error,
            )
        else:
            throttled(
                logger,
                f"middleware {name}.{hook} skipped",
                "middleware %s returned from its %s hook without awaiting call_next; the bus went on",
                name,
                hook,
            )
        if not step.called:
            await step(argument)


async def observe_stream(chain: Chain, topic: str, chunks: AsyncIterator[Message]) -> AsyncIterator[Message]:
    """``chunks`` (a `MessageBus.request_stream`), with the call hooks run around its start: from
    sending the request to the first chunk."""
    call: Call[Message | None] = Call("request_stream", topic)

    async def first() -> Message | None:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None

    try:
        chunk = await chain.call(call, first)
        if chunk is None:
            return
        yield chunk
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
