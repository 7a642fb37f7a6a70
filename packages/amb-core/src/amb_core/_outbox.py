"""`Outbox`: what the bus publishes while its broker is unreachable, sent in order once it is back.

The same rules on every adapter (docs/semantics.md, "When things go wrong"):

- a fire-and-forget publish is kept here, up to ``outage_buffer`` messages, and returns at once;
  when the buffer is full it waits for room;
- a confirmed publish waits here until the broker has confirmed it;
- once the outage has lasted ``outage_timeout``, both raise `BrokerUnavailableError` (a
  confirmed publish never waits longer than that); what was already kept is still sent once
  the broker is back;
- while anything is kept, later publishes queue behind it, so one publisher's order holds;
- what is still kept when the bus closes is logged with its ids, never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from amb_core._backoff import backoff_delays
from amb_core._broker_adapter import BrokerAdapter
from amb_core._errors import BrokerUnavailableError, BusClosedError
from amb_core._link import Link
from amb_core._logs import message_fields
from amb_core._message import Message
from amb_core._wire import encode

logger = logging.getLogger("amb.link")

_Entry = tuple[Message, "asyncio.Future[None] | None"]


class Outbox:
    """Messages waiting for the broker; one task sends them, oldest first."""

    def __init__(self, adapter: BrokerAdapter, link: Link, on_empty: Callable[[], None]) -> None:
        self._adapter = adapter
        self._link = link
        self._policy = adapter.policy
        self._on_empty = on_empty
        self._entries: deque[_Entry] = deque()
        self._sending: _Entry | None = None
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._loop = asyncio.get_running_loop()
        self._sender: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    async def put(self, message: Message, confirm: bool) -> None:
        """Keep ``message`` until the broker takes it (see the module docstring)."""
        link, policy = self._link, self._policy
        left = policy.outage_timeout - link.down_for
        if left <= 0:
            raise link.unavailable()
        if self._adapter.max_message_size is not None:
            # Refused now, with the caller, rather than when the broker is back.
            encode(message, self._adapter.max_message_size)
        deadline = self._loop.time() + left
        while len(self._entries) >= policy.outage_buffer:
            await self._wait_for_room(deadline)
        future = self._loop.create_future() if confirm else None
        entry = (message, future)
        self._entries.append(entry)
        if self._sender is None:
            self._sender = self._loop.create_task(self._send_all())
        if future is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - self._loop.time()))
        except asyncio.TimeoutError:
            if entry is not self._sending and entry in self._entries:
                self._entries.remove(entry)
                raise link.unavailable(policy.outage_timeout) from None
            raise BrokerUnavailableError(
                f"{link.name} did not confirm message {message.id} within outage_timeout "
                f"({policy.outage_timeout} s); it may still arrive"
            ) from None
        finally:
            if not future.done():
                future.cancel()  # the sender skips it

    async def _wait_for_room(self, deadline: float) -> None:
        waiter = self._loop.create_future()
        self._room_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(0.0, deadline - self._loop.time()))
        except asyncio.TimeoutError:
            raise BrokerUnavailableError(
                f"{self._link.name}: the outage buffer is full ({self._policy.outage_buffer} messages, "
                f"option outage_buffer) and no room came within outage_timeout ({self._policy.outage_timeout} s)"
            ) from None

    async def _send_all(self) -> None:
        link, adapter, entries = self._link, self._adapter, self._entries
        delays = backoff_delays()
        try:
            while entries:
                if not link.up:
                    await link.wait_up(None)
                    continue  # meanwhile a confirmed publish may have given up and left
                entry = entries[0]
                message, future = entry
                if future is not None and future.done():
                    entries.popleft()  # its publisher gave up
                    self._wake_one()
                    continue
                self._sending = entry
                try:
                    await adapter.publish(message, confirm=future is not None)
                except BrokerUnavailableError as error:
                    if link.up:  # refused for now without losing the connection: try again soon
                        logger.debug("resending message %s later: %s", message.id, error)
                        await asyncio.sleep(next(delays))
                    continue
                except Exception as error:
                    entries.popleft()
                    self._wake_one()
                    if future is not None:
                        if not future.done():
                            future.set_exception(error)
                    else:
                        logger.error(
                            "message %s on %s, kept during an outage, could not be sent: %s; it is dropped",
                            message.id,
                            message.topic,
                            error,
                            extra=message_fields(message),
                        )
                    continue
                finally:
                    self._sending = None
                delays = backoff_delays()
                entries.popleft()
                self._wake_one()
                if future is not None and not future.done():
                    future.set_result(None)
        finally:
            self._sender = None
            if not entries:
                self._on_empty()

    def _wake_one(self) -> None:
        while self._room_waiters:
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self, timeout: float) -> None:
        """Give what is kept up to ``timeout`` seconds to go out (if the broker is up), then
        log what did not, with its ids, and fail confirmed publishes still waiting."""
        if self._entries and self._link.up and self._sender is not None:
            await asyncio.wait({self._sender}, timeout=timeout)
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        left = [message for message, future in self._entries if future is None or not future.done()]
        for _, future in self._entries:
            if future is not None and not future.done():
                future.set_exception(BusClosedError("the bus closed before the broker confirmed the message"))
        self._entries.clear()
        for waiter in self._room_waiters:
            if not waiter.done():
                waiter.set_exception(BusClosedError("the bus closed during an outage"))
        if left:
            logger.error(
                "%d messages published while %s was unreachable were never sent (the bus closed): ids %s%s",
                len(left),
                self._link.name,
                ", ".join(message.id for message in left[:20]),
                f" ... {left[-1].id} (all ids at DEBUG)" if len(left) > 20 else "",
            )
            logger.debug("ids of the messages never sent: %s", " ".join(message.id for message in left))
