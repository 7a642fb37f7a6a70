"""Scatter-gather: `MessageBus.gather`, one request that every subscription may answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from amb_core._control import remote_error
from amb_core._errors import RemoteHandlerError
from amb_core._message import Message, MessagePriority

if TYPE_CHECKING:
    from amb_core._bus import MessageBus


class Replies(list[Message]):
    """What `MessageBus.gather` returns: the replies, in the order they arrived, and in
    `failures` a `RemoteHandlerError` for each handler that raised instead of replying (its
    ``error_type`` and ``error_message``)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[RemoteHandlerError] = []


class _Gathering:
    """The answers to one gather, and whether it can stop waiting."""

    __slots__ = ("_exact", "_expected", "_max_replies", "_topic", "done", "replies")

    def __init__(self, topic: str, max_replies: int | None, exact: bool) -> None:
        self._topic = topic
        self._max_replies = max_replies
        #: Whether the broker's count of receivers is exact (`Capabilities.counts_receivers`).
        self._exact = exact
        self._expected: int | None = None
        self.replies = Replies()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, message: Message) -> None:
        if self.done.done():
            return
        error = remote_error(message, self._topic) if message.metadata else None
        if error is None:
            self.replies.append(message)
        else:
            self.replies.failures.append(error)
        self._check()

    def receivers(self, count: int) -> None:
        if count == 0 or self._exact:
            self._expected = count
            self._check()

    def fail(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def _check(self) -> None:
        replies = self.replies
        enough = self._max_replies is not None and len(replies) >= self._max_replies
        everyone = self._expected is not None and len(replies) + len(replies.failures) >= self._expected
        if (enough or everyone) and not self.done.done():
            self.done.set_result(None)


async def gather(
    bus: MessageBus,
    topic: str,
    payload: Mapping[str, Any] | None,
    *,
    timeout: float,
    max_replies: int | None,
    priority: MessagePriority,
    sender: str | None,
    ttl: float | None,
    metadata: Mapping[str, Any] | None,
    key: str | None = None,
) -> Replies:
    """What `MessageBus.gather` does (see there)."""
    if max_replies is not None and (
        isinstance(max_replies, bool) or not isinstance(max_replies, int) or max_replies < 1
    ):
        raise ValueError(f"max_replies must be a positive int or None, not {max_replies!r}")
    inbox = await bus._inbox_for_requests()
    request = bus._request_message(inbox, topic, payload, timeout, priority, sender, ttl, metadata, key)
    gathering = _Gathering(topic, max_replies, bus.capabilities.counts_receivers)
    inbox.collect(request.id, gathering)
    try:
        await bus._publish_request(request, inbox, count=True)
        await asyncio.wait((gathering.done,), timeout=timeout)
    finally:
        inbox.stop_collecting(request.id)
    if gathering.done.done():
        gathering.done.result()  # raises BusClosedError if the bus closed meanwhile
    else:
        gathering.done.cancel()
    return gathering.replies
