"""Helpers for testing code that uses the bus: record what a subscription receives, await it."""

from __future__ import annotations

from typing import Any

import anyio

from amb_core.message import Message


class Recorder:
    """A handler that keeps every message it gets and lets a test wait for some.

    ::

        got = Recorder()
        await bus.subscribe("agent.thinking", got)
        await bus.publish("agent.thinking", {"n": 1})
        [message] = await got.wait_for(1)
    """

    def __init__(self, *, timeout: float = 30.0) -> None:
        """``timeout`` bounds every `wait_for`: a safety net, not a timing assertion."""
        self.messages: list[Message] = []
        self.timeout = timeout
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        for count, event in self._waiters:
            if len(self.messages) >= count:
                event.set()

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [message.payload for message in self.messages]

    async def wait_for(self, count: int) -> list[Message]:
        """The first ``count`` messages, once they are in; AssertionError after `timeout` s."""
        if len(self.messages) < count:
            waiter = (count, anyio.Event())
            self._waiters.append(waiter)
            try:
                with anyio.fail_after(self.timeout):
                    await waiter[1].wait()
            except TimeoutError:
                raise AssertionError(
                    f"expected {count} messages within {self.timeout} s, got {len(self.messages)}"
                ) from None
            finally:
                self._waiters.remove(waiter)
        return self.messages[:count]
