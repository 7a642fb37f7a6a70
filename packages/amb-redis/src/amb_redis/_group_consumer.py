"""Grouped subscriptions on Redis Streams consumer groups.

Each AMB group on a pattern is a consumer group on the pattern's stream, and each grouped
subscription is one consumer in it. Nothing blocks a connection: reads are non-blocking
XREADGROUPs on the shared command pipe, run by a short-lived pump task that exists only while
there is work. A pump that finds the stream empty sets the stream's idle key *before* its last
read (both in one pipelined write), so a publish either lands before that read or sees the key
and publishes a wake-up on the stream's wake channel, which the adapter's Pub/Sub connection
turns into `GroupConsumer.wake`. Idle groups therefore cost no task, timer or round trip.

Every entry goes to the subscription as raw bytes with a `StreamDelivery` (`Subscription.receive`
decodes it; what is not a valid envelope is dead-lettered by the bus with its reason). The bus
decides what happens next and the delivery maps it onto Redis: ``ack`` is XACK; ``retry``
redelivers the entry to the same consumer at once; ``dead_letter`` moves it to the group's
dead-letter stream; ``release`` leaves it to `GroupConsumer.release`, which hands everything
the consumer still holds back to the group when it leaves. Entries another consumer left
pending (it died, or left) are taken over with XAUTOCLAIM.

Attempts count handler failures only: a hash per group (``<prefix>attempts:<pattern>:<group>``)
holds, for entries that failed, how often. It is written only when a handler fails and read
only when a failed or taken-over entry is delivered again, so the hot path never touches it;
Redis's own delivery counter, which a take-over also increments, is not used.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from redis.exceptions import ResponseError

from amb_core.adapter import (
    BrokerUnavailableError,
    Delivery,
    Subscription,
    backoff_delays,
    note_backlog,
    throttled,
)
from amb_redis._names import Names
from amb_redis._pipe import CommandPipe
from amb_redis._resp import bulk, command
from amb_redis._scripts import Scripts

logger = logging.getLogger("amb.redis")

_CLAIM_BATCH = 100


class GroupSettings:
    """What every consumer of one adapter shares."""

    __slots__ = (
        "claim_idle_ms",
        "expiry",
        "liveness",
        "name",
        "names",
        "pipe",
        "prefetch",
        "ready",
        "scripts",
        "timeout",
    )

    def __init__(
        self,
        *,
        pipe: CommandPipe,
        scripts: Scripts,
        names: Names,
        name: str,
        prefetch: int | None,
        claim_idle: float,
        timeout: float,
        expiry: float,
        ready: Callable[[], bool],
    ) -> None:
        """``ready`` tells whether the adapter's Pub/Sub subscriptions are in place: a group
        lost with a restarted Redis is recreated only after them, so that a message reaching
        the group after a restart also reaches the bus's ungrouped subscriptions."""
        self.pipe = pipe
        self.ready = ready
        self.scripts = scripts
        self.names = names
        self.name = name
        self.prefetch = prefetch
        self.claim_idle_ms = int(claim_idle * 1000)
        self.timeout = timeout
        #: ``group_expiry``, whole seconds (Redis keeps the bookkeeping in seconds).
        self.expiry = max(1, math.ceil(expiry))
        #: Seconds a member counts as live after it last vouched (it does every claim_idle / 2).
        self.liveness = max(1, math.ceil(2 * claim_idle))

    def vouch(self, now: int, *, leaving: bool = False) -> tuple[bytes, bytes]:
        """The group's deadline and a live member's, as of ``now``: a group lives until
        ``group_expiry`` after its last member left (or was last seen alive)."""
        if leaving:
            return b"%d" % (now + self.expiry), b"0"
        return b"%d" % (now + self.liveness + self.expiry), b"%d" % (now + self.liveness)


class StreamDelivery(Delivery):
    """One stream entry handed to a grouped subscription (see the module docstring)."""

    __slots__ = ("_consumer", "_id")

    def __init__(self, consumer: GroupConsumer, entry_id: bytes, attempt: int = 1) -> None:
        self.attempt = attempt  # what Delivery.__init__ does, without a call per entry
        self._consumer = consumer
        self._id = entry_id

    async def ack(self) -> None:
        self._consumer.acknowledge(self._id, self.attempt)

    async def retry(self) -> None:
        self._consumer.retry(self._id)

    async def dead_letter(self, reason: str) -> str:
        return await self._consumer.dead_letter(self._id, self.attempt, reason)

    async def release(self) -> None:
        # What the consumer still holds goes back to the group in one go when it leaves
        # (`GroupConsumer.release`, which also covers handlers cancelled at shutdown).
        self._consumer.settled()


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
        self._scripts = settings.scripts
        names = settings.names
        self.stream = names.stream(self.pattern)
        self.wake_channel = names.wake(self.pattern).encode()
        #: Where `dead_letter` moves entries.
        self.dead_letters = names.dead_letters(self.pattern, self.group)
        self._stream = self.stream.encode()
        self._group = self.group.encode()
        self._consumer = consumer.encode()
        self._pattern = self.pattern.encode()
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
        self._done_header = self._scripts.done.header(3) + bulk(self._pattern) + bulk(self._group)
        self._unacked = 0
        self._room: asyncio.Future[None] | None = None
        self._failed: deque[bytes] = deque()
        self._claim_due = True
        self._cursor = b"0-0"
        #: The newest entry this consumer was given (None: none yet), and whether to look for
        #: entries it was given after that without knowing (see `reconnected`).
        self._last_seen: bytes | None = None
        self._recover_due = False
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"<GroupConsumer {self.consumer} of {self.group!r} on {self.stream!r}>"

    async def start(self) -> None:
        """Create what the group needs in Redis (after a restart too), then start reading."""
        _, backlog = await self._ensure(join=True)
        note_backlog(self._settings.name, self.group, self.pattern, backlog)
        self.wake()

    async def ensure(self, *, urgent: bool = False) -> bool:
        """Create the stream, group and consumer if missing and register the pattern for
        publishers; True if the group had to be created. ``urgent`` while the adapter restores
        itself after a reconnect (see `CommandPipe`)."""
        created, _ = await self._ensure(urgent=urgent)
        return created

    async def _ensure(self, *, urgent: bool = False, join: bool = False) -> tuple[bool, int]:
        created, backlog = await self._pipe.call(
            self._ensure_call(join),
            resend=not urgent,
            timeout=self._settings.timeout,
            urgent=urgent,
        )
        return bool(created), int(backlog)

    def _ensure_call(self, join: bool = False) -> bytes:
        now = int(time.time())
        deadline, alive = self._settings.vouch(now)
        return self._scripts.ensure.call(
            self._pattern, self._group, self._consumer, b"%d" % now, deadline, alive, b"1" if join else b"0"
        )

    def refresh(self) -> None:
        """Vouch for the group and this member (a group nobody vouched for is removed
        ``group_expiry`` later), recreate what a restarted Redis lost, and take over entries of
        dead consumers."""
        self._pipe.send(self._ensure_call(), self._refreshed, True)

    def _refreshed(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            logger.debug("could not refresh %r: %s", self, reply)
            return
        if reply[0]:
            self.recreated()
        self.claim_later()

    def recreated(self) -> None:
        """`ensure` found the group gone while this consumer was in it: say what that means."""
        self._cursor = b"0-0"
        logger.warning(
            "%s: consumer group %r on stream %r was gone (Redis lost its data: it runs without "
            "appendonly persistence, or no member vouched for it for group_expiry): entries it had not delivered or "
            "acknowledged are lost; recreated it",
            self._settings.name,
            self.group,
            self.stream,
        )

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

    def reconnected(self) -> None:
        """The connection was lost and is back: a read in flight then may have been run by
        Redis with its answer lost, leaving entries pending for this consumer that it never
        got. The next pump run delivers them (at once, rather than after ``claim_idle``)."""
        self._recover_due = True
        self.claim_later()

    # -- settling (called through StreamDelivery) ------------------------------------------

    def settled(self) -> None:
        """One entry handed to the subscription is settled: room for the next."""
        self._unacked -= 1
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def acknowledge(self, entry_id: bytes, attempt: int) -> None:
        if attempt == 1:
            self._pipe.send(self._ack_header + bulk(entry_id), None, True)
        else:  # it failed before: forget its failures too
            self._pipe.send(self._done_header + bulk(entry_id), None, True)
        self.settled()

    def retry(self, entry_id: bytes) -> None:
        self._failed.append(entry_id)
        self.settled()
        self.wake()

    async def dead_letter(self, entry_id: bytes, attempt: int, reason: str) -> str:
        self.settled()
        dropped = await self._pipe.call(
            self._scripts.dead_letter.call(
                self._pattern,
                self._group,
                entry_id,
                b"%d" % attempt,
                reason.encode("utf-8", "replace"),
            ),
            resend=True,
        )
        if dropped:
            throttled(
                logger,
                "dlq:" + self.dead_letters,
                "%s: dead-letter stream %r is at dead_letter_maxlen: dropped its %d oldest entries",
                self._settings.name,
                self.dead_letters,
                dropped,
            )
        return self.dead_letters

    # -- the pump ---------------------------------------------------------------------------

    async def _pump(self) -> None:
        # An unexpected error must never leave the consumer dead without a word: it is logged,
        # and the pump goes on after a pause (backing off while the error persists).
        trouble: Iterator[float] | None = None
        group_missing = False
        try:
            while not self._stopped:
                try:
                    if group_missing:
                        group_missing = False
                        if await self.ensure():
                            self.recreated()
                    if not await self._step():
                        return
                    trouble = None
                except BrokerUnavailableError:
                    return  # the adapter wakes every consumer once the connection is back
                except ResponseError as error:
                    if "NOGROUP" not in str(error):
                        trouble = await self._trouble(error, trouble)
                    elif not self._settings.ready():
                        return  # the adapter wakes every consumer once Pub/Sub is back
                    else:
                        group_missing = True
                except Exception as error:
                    trouble = await self._trouble(error, trouble)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _trouble(self, error: Exception, trouble: Iterator[float] | None) -> Iterator[float]:
        if trouble is None:
            trouble = backoff_delays(0.1, 5.0)
            logger.error("%s: reading %r failed; trying again", self._settings.name, self, exc_info=error)
        else:
            throttled(
                logger,
                "pump:" + self._source,
                "%s: reading %r still fails: %s",
                self._settings.name,
                self,
                error,
                level=logging.ERROR,
            )
        await asyncio.sleep(next(trouble))
        return trouble

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
        if self._recover_due:
            self._recover_due = False
            if await self._recover():
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

    async def _deliver(self, reply: Any) -> bool:
        """Hand the entries of an XREADGROUP reply to the subscription; False if there were none."""
        if not reply:
            return False
        entries = reply[0][1]
        if not entries:
            return False
        receive = self.subscription.receive
        source = self._source
        self._last_seen = entries[-1][0]  # '>' reads come in stream order
        for entry_id, fields in entries:
            if not fields:
                self._acknowledge_gone(entry_id)
                continue
            self._unacked += 1
            waiting = receive(
                fields[1] if fields[0] == b"message" else _message_of(fields),
                source,
                StreamDelivery(self, entry_id),
            )
            if waiting is not None:
                await waiting
        return True

    async def _deliver_again(self, entries: list[Any], failures: list[int]) -> None:
        """Hand over entries delivered before (retried, or taken over), each as the attempt
        after its failures."""
        receive = self.subscription.receive
        for (entry_id, fields), failed in zip(entries, failures, strict=True):
            if self._last_seen is None or _newer(entry_id, self._last_seen):
                self._last_seen = entry_id
            if not fields:
                self._acknowledge_gone(entry_id)
                continue
            self._unacked += 1
            waiting = receive(_message_of(fields), self._source, StreamDelivery(self, entry_id, failed + 1))
            if waiting is not None:
                await waiting

    def _acknowledge_gone(self, entry_id: bytes) -> None:
        # Deleted from the stream while pending (by hand: the adapter only trims acknowledged
        # entries): nothing to deliver, but it must leave the pending list.
        self._pipe.send(self._ack_header + bulk(entry_id), None, True)

    async def _retry_failed(self) -> None:
        failed, self._failed = self._failed, deque()
        retry = self._scripts.retry
        replies = [
            self._pipe.call(retry.call(self._pattern, self._group, self._consumer, entry_id))
            for entry_id in failed
        ]
        error: BaseException | None = None
        for entry_id, reply in zip(
            failed, await asyncio.gather(*replies, return_exceptions=True), strict=True
        ):
            if isinstance(reply, BaseException):
                self._failed.append(entry_id)  # tried again when the pump goes on
                error = error or reply
            elif isinstance(reply, list):  # [entry, failures]; 0 when no longer this consumer's
                entry, failures = reply
                await self._deliver_again([entry], [failures])
        if error is not None:
            raise error

    async def _recover(self) -> bool:
        """Deliver the entries this consumer was given after the newest it knows of (see
        `reconnected`); True if there were any."""
        found = False
        while True:
            entries, failures = await self._pipe.call(
                self._scripts.recover.call(
                    self._pattern,
                    self._group,
                    self._consumer,
                    b"%d" % _CLAIM_BATCH,
                    self._last_seen or b"0",
                )
            )
            if not entries:
                return found
            found = True
            logger.debug("%r: %d entries read before the connection was lost", self, len(entries))
            await self._deliver_again(entries, failures)

    async def _claim(self) -> bool:
        """Take over entries left pending by consumers that died or left; True if any came."""
        settings = self._settings
        cursor, entries, failures = await self._pipe.call(
            self._scripts.claim.call(
                self._pattern,
                self._group,
                self._consumer,
                b"%d" % settings.claim_idle_ms,
                b"%d" % min(_CLAIM_BATCH, max(1, self._prefetch - self._unacked)),
                self._cursor,
            )
        )
        # A cursor other than 0-0 means the scan is not finished: go on next time round.
        self._cursor = cursor
        if cursor != b"0-0":
            self._claim_due = True
        if entries:
            await self._deliver_again(entries, failures)
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
        members. The group stays: what is published meanwhile waits for the next member, for
        ``group_expiry`` once no member is left."""
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        now = int(time.time())
        moved = await self._pipe.call(
            self._scripts.release.call(
                self._pattern,
                self._group,
                self._consumer,
                b"%d" % now,
                self._settings.vouch(now, leaving=True)[0],
            ),
            timeout=self._settings.timeout,
        )
        if moved:
            logger.info("handed %d unfinished entries of %r back to its group", moved, self)


def _message_of(fields: list[Any]) -> bytes:
    """The ``message`` field of a stream entry's fields (b"" if it has none: a foreign entry,
    which the bus then dead-letters as not an envelope)."""
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == b"message":
            value = fields[index + 1]
            return value if isinstance(value, bytes) else b""
    return b""


def _newer(entry_id: bytes, than: bytes) -> bool:
    """Whether stream entry ``entry_id`` ("<ms>-<seq>") comes after ``than``."""
    ms, _, seq = entry_id.partition(b"-")
    than_ms, _, than_seq = than.partition(b"-")
    return (int(ms), int(seq or 0)) > (int(than_ms), int(than_seq or 0))
