"""Waiting in tests for what no event announces: state kept inside a broker, and a bus that has
recovered from an outage."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from amb_core import MessageBus
    from amb_core.testing import Recorder


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str = "true", *, within: float = 30.0, every: float = 0.1
) -> None:
    """Return once ``check()`` is true, looking again every ``every`` s, for state that no event
    announces (what a broker reports about a group, keys it keeps); AssertionError after
    ``within`` s."""
    deadline = anyio.current_time() + within
    while not await check():
        if anyio.current_time() > deadline:
            raise AssertionError(f"still not {what} after {within} s")
        await anyio.sleep(every)


async def publish_until_delivered(
    publisher: MessageBus, topic: str, *recorders: Recorder, within: float = 90.0
) -> None:
    """Publish probes (``{"probe": n}``) on ``topic`` until one reaches every recorder: the
    moment the buses have recovered from an outage.

    A publish may fail while the broker is down (that is reported, not hidden: it raises a
    ConnectionError, and the next probe tries again), and a probe published while a subscriber
    was reconnecting may never reach it (at most once), hence more than one probe.
    """
    seen = [len(recorder.messages) for recorder in recorders]
    with anyio.fail_after(within):
        probe = 0
        while True:
            probe += 1
            with contextlib.suppress(ConnectionError):
                await publisher.publish(topic, {"probe": probe}, wait_for_confirmation=True)
            with anyio.move_on_after(1):
                for recorder, count in zip(recorders, seen, strict=True):
                    await recorder.wait_for(count + 1)
                return
