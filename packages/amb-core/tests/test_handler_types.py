"""What a handler may be, at runtime and for the type checker alike.

The types session runs ``mypy --strict`` on this file: every handler subscribed below must type-check
as a `MessageHandler` exactly because it works at runtime, and `bus.close()` must exist.
"""

from __future__ import annotations

import contextlib
import functools

import pytest

from amb_core import Message, MessageBus, MessageHandler
from amb_core.testing import Recorder

pytestmark = pytest.mark.anyio


async def test_async_plain_lambda_partial_and_callable_object_handlers_all_receive() -> None:
    seen: list[str] = []

    async def async_handler(message: Message) -> None:
        seen.append(f"async {message.payload['n']}")

    def plain_handler(message: Message) -> None:
        seen.append(f"plain {message.payload['n']}")

    def tagged(tag: str, message: Message) -> None:
        seen.append(f"{tag} {message.payload['n']}")

    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def __call__(self, message: Message) -> None:
            self.count += 1

    counter = Counter()
    last = Recorder()
    handlers: list[MessageHandler] = [
        async_handler,
        plain_handler,
        lambda message: seen.append(f"lambda {message.payload['n']}"),
        functools.partial(tagged, "partial"),
        counter,
        last,  # subscribed last, so every other handler has run when it has the message
    ]
    async with MessageBus() as bus:
        for handler in handlers:
            await bus.subscribe("agent.thinking", handler)
        await bus.publish("agent.thinking", {"n": 1})
        await last.wait_for(1)
    assert sorted(seen) == ["async 1", "lambda 1", "partial 1", "plain 1"]
    assert counter.count == 1


async def test_a_plain_function_returning_an_awaitable_has_it_awaited() -> None:
    got = Recorder()
    async with MessageBus() as bus:
        await bus.subscribe("agent.thinking", lambda message: got(message))  # returns a coroutine
        await bus.publish("agent.thinking", {"n": 1})
        [message] = await got.wait_for(1)
    assert message.payload == {"n": 1}


async def test_something_not_callable_is_refused_at_subscribe() -> None:
    async with MessageBus() as bus:
        with pytest.raises(TypeError, match="handler must be a function taking a Message"):
            await bus.subscribe("agent.thinking", "print")  # type: ignore[arg-type]


async def test_close_is_what_async_with_does_on_the_way_out() -> None:
    bus = MessageBus()
    await bus.connect()
    got = Recorder()
    await bus.subscribe("agent.thinking", got)
    await bus.close()
    assert not bus.is_connected
    await bus.close()  # closing twice does nothing
    async with contextlib.aclosing(MessageBus()) as other:
        await other.connect()
    assert not other.is_connected
