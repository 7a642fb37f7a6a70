"""Acknowledgements of one consume channel, coalesced into as few frames as possible.

Every frame the client writes costs a system call, and on small messages that is most of the
cost of consuming. Handlers tend to finish in bursts (the broker delivers in bursts), so the
acknowledgements settled during one pass of the event loop go out together at its end: one
``basic.ack`` with ``multiple`` for the longest run of settled deliveries from the oldest
outstanding one (across all consumers of the channel), and single acks only for settled
deliveries behind one still in a handler.

``multiple`` acknowledges every unacknowledged delivery up to a tag, and RabbitMQ closes the
channel if that tag itself is unknown, so the tracking here is exact: every delivery that needs
an acknowledgement is tracked from arrival until it is acked or nacked through this class.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import aiormq

logger = logging.getLogger("amb.rabbitmq")

#: How far the arrival-order record may run ahead of what is outstanding before it is rebuilt
#: (entries settled behind a delivery stuck in a handler stay in it until then).
_COMPACT_SLACK = 4096


class Acknowledger:
    """Tracks the deliveries of ``channel`` that await an acknowledgement, and sends the
    acknowledgements and rejections in the order they were decided (one sender task, so a
    ``multiple`` ack can never overtake the frames it must follow)."""

    __slots__ = (
        "_channel",
        "_flush_scheduled",
        "_loop",
        "_order",
        "_outbox",
        "_sender",
        "_settled",
        "_state",
    )

    def __init__(self, channel: aiormq.Channel) -> None:
        self._channel = channel
        self._loop = asyncio.get_running_loop()
        # Outstanding delivery tags: False while in a handler, True once settled but not sent.
        self._state: dict[int, bool] = {}
        # Tags in arrival order (the broker numbers deliveries in order on a channel); may also
        # hold tags already acknowledged or rejected, which are skipped.
        self._order: deque[int] = deque()
        self._settled: list[int] = []
        self._flush_scheduled = False
        # Frames to send, in order: (tag, multiple) for an ack, (tag, None | requeue) for a nack.
        self._outbox: deque[tuple[int, bool, bool | None]] = deque()
        self._sender: asyncio.Task[None] | None = None

    def track(self, tag: int) -> None:
        """A delivery arrived that will be acknowledged (or rejected) later."""
        self._state[tag] = False
        self._order.append(tag)

    def ack(self, tag: int) -> None:
        """Acknowledge ``tag`` at the end of this pass of the event loop."""
        if self._state.get(tag) is False:
            self._state[tag] = True
            self._settled.append(tag)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    def nack(self, tag: int, *, requeue: bool) -> None:
        """Reject ``tag`` (back to its queue with ``requeue``, else dropped), ahead of any
        acknowledgement decided after this call."""
        if self._state.pop(tag, None) is not None:
            self._post(tag, False, requeue)

    async def send_all(self) -> None:
        """Send every acknowledgement decided so far (handed to the connection's writer)."""
        if self._flush_scheduled:
            self._flush()
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.shield(sender)

    def _flush(self) -> None:
        if not self._flush_scheduled:
            return  # already done early by send_all
        self._flush_scheduled = False
        settled, self._settled = self._settled, []
        state, order = self._state, self._order
        highest = 0
        while order:
            tag = order[0]
            outstanding = state.get(tag)
            if outstanding is False:
                break  # still in a handler
            order.popleft()
            if outstanding:
                del state[tag]
                highest = tag
        if highest:
            self._post(highest, True, None)
        for tag in settled:
            if state.get(tag):
                del state[tag]
                self._post(tag, False, None)
        if len(order) > len(state) + _COMPACT_SLACK:
            self._order = deque(tag for tag in order if tag in state)

    def _post(self, tag: int, multiple: bool, requeue: bool | None) -> None:
        self._outbox.append((tag, multiple, requeue))
        if self._sender is None or self._sender.done():
            self._sender = self._loop.create_task(self._send())

    async def _send(self) -> None:
        # basic_ack(wait=False) only enqueues the frame, but enqueueing waits when the
        # connection's write queue is full; one task keeps the frames in order meanwhile.
        channel, outbox = self._channel, self._outbox
        while outbox:
            tag, multiple, requeue = outbox.popleft()
            if channel.is_closed:
                outbox.clear()  # the broker requeued everything unacknowledged on the channel
                return
            try:
                if requeue is None:
                    await channel.basic_ack(tag, multiple=multiple, wait=False)
                else:
                    await channel.basic_nack(tag, requeue=requeue, wait=False)
            except Exception as error:
                logger.debug("acknowledgements on a closing channel were not sent: %r", error)
                outbox.clear()
                return
