"""Grouped subscriptions on Redis Streams consumer groups.

Each AMB group on a pattern is a consumer group on the pattern's stream, and each grouped
subscription is one consumer in it. Nothing blocks a connection: reads are non-blocking
XREADGROUPs on the shared command pipe, run by a short-lived pump task that exists only while
there is work. A pump that finds the stream empty sets the stream's idle key *before* its last
read (both in one pipelined write), so a publish either lands before that read or sees the key
and publishes a wake-up on the stream's wake channel, which the adapter's Pub/Sub connection
turns into `GroupConsumer.wake`. Idle groups therefore cost no task, timer or round trip.

At-least-once: an entry is XACKed after its handler succeeded (``ack(True)``); after a failure
it is claimed again (which counts the attempt) and redelivered, until it has been delivered
``max_attempts`` times; then it goes to the dead-letter stream. Entries another consumer left
pending (it died, or left and released them) are taken over with XAUTOCLAIM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from amb_core.errors import BrokerUnavailableError
from amb_core.subscription import Ack, Subscription
from amb_core.wire import decode_or_log
from amb_redis._names import Names
from amb_redis._pipe import CommandPipe
from amb_redis._resp import bulk, command
from amb_redis._scripts import Scripts

logger = logging.getLogger("amb")

_CLAIM_BATCH = 100


class GroupSettings:
    """What every consumer of one adapter shares."""

    __slots__ = ("claim_idle_ms", "max_attempts", "names", "pipe", "prefetch", "ready", "scripts", "timeout")

    def __init__(
        self,
        *,
        pipe: CommandPipe,
        scripts: Scripts,
        names: Names,
        max_attempts: int,
        prefetch: int | None,
        claim_idle: float,
        timeout: float,
        ready: Callable[[], bool],
    ) -> None:
        """``ready`` tells whether the adapter's Pub/Sub subscriptions are in place: a group
        lost with a restarted Redis is recreated only after them, so that a message reaching
        the group after a restart also reaches the bus's ungrouped subscriptions."""
        self.pipe = pipe
        self.ready = ready
        self.scripts = scripts
        self.names = names
        self.max_attempts = max_attempts
        self.prefetch = prefetch
        self.claim_idle_ms = int(claim_idle * 1000)
        self.timeout = timeout


class GroupConsumer:
    """One grouped subscription: a consumer named ``consumer`` in consumer group
    ``subscription.group`` of the stream of ``subscription.pattern``."""

    def __init__(self, subscription: Subscription, consumer: str, settings: GroupSettings) -> None:
        assert subscription.group is not None
        self.subscription = subscription
        self.pattern = subscription.pattern
        self.group = subscription.group
        self.consumer = consumer
        self._settings = settings
        self._pipe = settings.pipe
        names = settings.names
        self.stream = names.stream(self.pattern)
        self.wake_channel = names.wake(self.pattern).encode()
        self._stream = self.stream.encode()
        self._group = self.group.encode()
        self._consumer = consumer.encode()
        self._pattern = self.pattern.encode()
        self._dead_letters = names.dead_letters(self.pattern, self.group)
        self._source = f"stream {self.stream} (group {self.group})"
        # A little more than the handlers can take, so the next entry is already here when
        # one finishes, yet little enough that members of a group share the work.
        self._prefetch = settings.prefetch or 2 * subscription.concurrency
        self._read = command(
            b"XREADGROUP", b"GROUP", self._group, self._consumer, b"COUNT", b"%d" % self._prefetch,
            b"STREAMS", self._stream, b">",
        )  # fmt: skip
        self._arm = command(b"SET", names.idle(self.pattern).encode(), b"1")
        self._ack_header = b"*4\r\n" + bulk(b"XACK") + bulk(self._stream) + bulk(self._group)
        self._unacked = 0
        self._room: asyncio.Future[None] | None = None
        self._failed: deque[bytes] = deque()
        self._claim_due = True
        self._cursor = b"0-0"
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"<GroupConsumer {self.consumer} of {self.group!r} on {self.stream!r}>"

    async def start(self) -> None:
        """Create what the group needs in Redis (after a restart too), then start reading."""
        await self.ensure()
        self.wake()

    async def ensure(self) -> bool:
        """Create the stream, group and consumer if missing and register the pattern for
        publishers; True if the group had to be created."""
        created = await self._pipe.call(
            self._settings.scripts.ensure.call(
                self._pattern, self._group, self._consumer, b"%d" % int(time.time())
            ),
            resend=True,
            timeout=self._settings.timeout,
        )
        return bool(created)

    def refresh(self) -> None:
        """Vouch for the group's registration (publishers drop groups nobody vouched for
        within ``group_retention``), recreate what a restarted Redis lost, and take over
        entries of dead consumers."""
        self._pipe.send(
            self._settings.scripts.ensure.call(
                self._pattern, self._group, self._consumer, b"%d" % int(time.time())
            ),
            self._refreshed,
            True,
        )

    def _refreshed(self, created: Any) -> None:
        if isinstance(created, Exception):
            logger.debug("could not refresh %r: %s", self, created)
            return
        if created:
            self._cursor = b"0-0"
            logger.warning(
                "consumer group %r on stream %r was gone (Redis restarted without persistence, or the "
                "group expired): entries it had not delivered or acknowledged are lost; recreated it",
                self.group,
                self.stream,
            )
        self.claim_later()

    def wake(self, reason: bytes = b"") -> None:
        """Something may be waiting in the stream (a wake-up, a reconnect, the claim timer)."""
        if self._stopped:
            return
        if reason == b"claim":
            self._claim_due = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump())
        else:
            self._again = True

    def claim_later(self) -> None:
        """Look for entries left behind by dead consumers on the next pump run."""
        self._claim_due = True
        self.wake()

    # -- the pump ---------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            while not self._stopped:
                try:
                    if not await self._step():
                        return
                except ResponseError as error:
                    if "NOGROUP" not in str(error):
                        raise
                    if not self._settings.ready():
                        return  # the adapter wakes every consumer once Pub/Sub is back
                    await self._recreate()
        except BrokerUnavailableError:
            pass  # the adapter wakes every consumer once the connection is back
        except Exception:
            logger.exception("reading %r failed", self)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _step(self) -> bool:
        """One round of reading; False once there is nothing left to do."""
        self._again = False
        if self._failed:
            await self._retry_failed()
            return True
        if self._unacked >= self._prefetch:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
            return True
        if self._claim_due:
            self._claim_due = False
            if await self._claim():
                return True
        if await self._deliver(await self._pipe.call(self._read)):
            return True
        # Nothing new: arm the wake-up, then read once more (see the module docstring).
        self._pipe.send(self._arm, None, True)
        return await self._deliver(await self._pipe.call(self._read)) or self._again

    async def _recreate(self) -> None:
        self._cursor = b"0-0"
        if await self.ensure():
            logger.warning(
                "consumer group %r on stream %r was gone (Redis restarted without persistence, or the "
                "group expired): entries it had not delivered or acknowledged are lost; recreated it",
                self.group,
                self.stream,
            )

    async def _deliver(self, reply: Any) -> bool:
        """Hand the entries of an XREADGROUP reply to the subscription; False if there were none."""
        if not reply:
            return False
        entries = reply[0][1]
        if not entries:
            return False
        await self._deliver_entries(entries)
        return True

    async def _deliver_entries(self, entries: list[Any]) -> None:
        subscription = self.subscription
        for entry_id, fields in entries:
            if not fields:
                self._acknowledge(entry_id)  # trimmed away while pending
                continue
            data = (
                fields[1]
                if fields[0] == b"message"
                else dict(zip(fields[::2], fields[1::2], strict=False)).get(b"message", b"")
            )
            message = decode_or_log(data, self._source)
            if message is None:
                self._acknowledge(entry_id)  # foreign or garbled: skip it for good
                continue
            self._unacked += 1
            ack = self._acknowledger(entry_id)
            if not subscription.offer(message, ack):
                await subscription.deliver(message, ack)

    def _acknowledger(self, entry_id: bytes) -> Ack:
        settled = False

        async def ack(ok: bool) -> None:
            nonlocal settled
            if settled:
                return
            settled = True
            self._unacked -= 1
            if ok:
                self._acknowledge(entry_id)
            else:
                self._failed.append(entry_id)
                self.wake()
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)

        return ack

    def _acknowledge(self, entry_id: bytes) -> None:
        self._pipe.send(self._ack_header + bulk(entry_id), None, True)

    async def _retry_failed(self) -> None:
        failed, self._failed = self._failed, deque()
        fail = self._settings.scripts.fail
        max_attempts = b"%d" % self._settings.max_attempts
        replies = [
            self._pipe.call(fail.call(self._pattern, self._group, self._consumer, entry_id, max_attempts))
            for entry_id in failed
        ]
        for entry_id, reply in zip(failed, await asyncio.gather(*replies), strict=True):
            if isinstance(reply, list):
                await self._deliver_entries(reply)
            elif reply:
                logger.warning(
                    "entry %s of group %r on %r failed %d times: moved it to the dead-letter stream %r",
                    entry_id.decode(),
                    self.group,
                    self.stream,
                    reply,
                    self._dead_letters,
                )

    async def _claim(self) -> bool:
        """Take over entries left pending by consumers that died or left; True if any came."""
        settings = self._settings
        cursor, entries, dead = await self._pipe.call(
            settings.scripts.claim.call(
                self._pattern,
                self._group,
                self._consumer,
                b"%d" % settings.claim_idle_ms,
                b"%d" % min(_CLAIM_BATCH, max(1, self._prefetch - self._unacked)),
                b"%d" % settings.max_attempts,
                self._cursor,
            )
        )
        # A cursor other than 0-0 means the scan is not finished: go on next time round.
        self._cursor = cursor
        if cursor != b"0-0":
            self._claim_due = True
        if dead:
            logger.warning(
                "%d entries of group %r on %r had been delivered %d times: moved them to the dead-letter stream %r",
                dead,
                self.group,
                self.stream,
                settings.max_attempts,
                self._dead_letters,
            )
        if entries:
            await self._deliver_entries(entries)
            return True
        return False

    # -- leaving ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading (entries already handed to the subscription stay with it)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    async def release(self) -> None:
        """Leave the group: what this consumer still holds goes back to the group for the other
        members, and the group is deleted if nothing is left for it."""
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        moved = await self._pipe.call(
            self._settings.scripts.release.call(self._pattern, self._group, self._consumer),
            timeout=self._settings.timeout,
        )
        if moved:
            logger.info("handed %d unfinished entries of %r back to its group", moved, self)
