"""Groups over time on Kafka: listing, purging, deleting, and expiring them.

An AMB group is the Kafka consumer group ``<group>.<pattern>`` (`amb_kafka._naming.group_id`);
`Groups` lists the consumer groups whose id reads that way. Its members are the consumer
group's; its backlog is, over the partitions it has committed, the end offset less the
committed one (records not yet handled, or handled by a member that has not finished).

Expiry: Kafka removes an empty group's offsets after the broker's ``offsets.retention.minutes``
(a week by default), after which a member joining the name starts afresh. ``group_expiry`` may
be shorter, and is per group: every commit of an AMB member carries ``amb <time> <group_expiry>``
as its metadata (a member leaving commits its positions once more), so a group that is empty
(no member) and whose newest commit is older than its ``group_expiry`` is deleted (Kafka's
DeleteGroups) when the groups are listed and before a member joins it. Its records stay in the
topic (Kafka's topic retention governs them); the group's place in them is what goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka import errors as kafka_errors
from aiokafka.protocol.admin import DeleteGroupsRequest  # type: ignore[import-untyped]
from aiokafka.structs import OffsetAndMetadata  # type: ignore[import-untyped]

from amb_core.adapter import (
    GroupInfo,
    GroupInUseError,
    InvalidTopicError,
    backoff_delays,
    validate_group,
    validate_pattern,
)
from amb_kafka._errors import Boundary
from amb_kafka._naming import group_id

logger = logging.getLogger("amb")

#: Seconds to wait for the broker to have a coordinator for a group (see `Groups._described`).
COORDINATOR_WAIT = 30.0
_COORDINATOR_NOT_READY = (
    kafka_errors.GroupCoordinatorNotAvailableError,
    kafka_errors.CoordinatorLoadInProgressError,
    kafka_errors.NotCoordinatorForGroupError,
)

_MARK = "amb"
_GROUP_ID_NOT_FOUND = 69
_NON_EMPTY_GROUP = 68
_NO_ERROR = 0


def stamp(group_expiry: float) -> str:
    """The metadata of a commit by an AMB member: when, and the group's ``group_expiry``."""
    # Milliseconds: rounded to the second, a stamp could lie up to half a second in the future,
    # and a group_expiry under a second would then not have passed when it should.
    return f"{_MARK} {time.time():.3f} {group_expiry:g}"


def stamped(offsets: dict[TopicPartition, int], group_expiry: float) -> dict[TopicPartition, Any]:
    """``offsets`` to commit, each with the `stamp`."""
    metadata = stamp(group_expiry)
    return {tp: OffsetAndMetadata(offset, metadata) for tp, offset in offsets.items()}


def _due(offsets: dict[TopicPartition, Any], now: float) -> bool:
    """Whether the newest stamped commit is older than its group's ``group_expiry``. A group
    without stamps (committed by something else than AMB) is left to Kafka's offset retention."""
    newest: tuple[float, float] | None = None
    for committed in offsets.values():
        parts = (getattr(committed, "metadata", "") or "").split()
        if len(parts) != 3 or parts[0] != _MARK:
            continue
        try:
            when, expiry = float(parts[1]), float(parts[2])
        except ValueError:
            continue
        if newest is None or when > newest[0]:
            newest = (when, expiry)
    return newest is not None and now - newest[0] >= newest[1]


def amb_group(consumer_group: str) -> tuple[str, str] | None:
    """(group, pattern) of a consumer group id AMB made, None for any other."""
    group, _, pattern = consumer_group.partition(".")
    try:
        return validate_group(group), validate_pattern(pattern)
    except (InvalidTopicError, TypeError, ValueError):
        return None


class Groups:
    """Looks after AMB's consumer groups through the adapter's admin client."""

    def __init__(self, admin: Any, consumer_options: dict[str, Any], boundary: Boundary) -> None:
        self._admin = admin
        self._options = consumer_options
        self._boundary = boundary
        self._reader: Any = None

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()

    async def every(self) -> list[GroupInfo]:
        with self._boundary("listing consumer groups"):
            listed = await self._admin.list_consumer_groups()
        found: list[GroupInfo] = []
        for entry in listed:
            consumer_group, protocol = entry[0], entry[1]
            names = amb_group(consumer_group)
            if names is None or protocol not in ("consumer", ""):
                continue
            info = await self._look(consumer_group, *names, expire=True)
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda info: (info.group, info.pattern))

    async def before_joining(self, group: str, pattern: str) -> int:
        """Delete the group if it expired (nobody joins an expired backlog); return its backlog."""
        info = await self._look(group_id(group, pattern), group, pattern, expire=True)
        return 0 if info is None else info.backlog

    async def purge(self, group: str, pattern: str) -> int:
        """Move the group's committed offsets to the partitions' ends; refused while it has
        members (Kafka takes offsets from outside the group only while it is empty)."""
        consumer_group = group_id(group, pattern)
        members, offsets = await self._state(consumer_group)
        if members is None:
            return 0
        if members:
            raise _in_use(group, pattern, members, "purging")
        ends = await self._ends(list(offsets))
        dropped = sum(max(0, ends.get(tp, 0) - committed.offset) for tp, committed in offsets.items())
        if dropped:
            committer = AIOKafkaConsumer(**self._options, group_id=consumer_group, enable_auto_commit=False)
            with self._boundary(f"purging group {consumer_group!r}"):
                await committer.start()
                try:
                    committer.assign(list(offsets))
                    metadata = {
                        tp: OffsetAndMetadata(ends.get(tp, committed.offset), committed.metadata)
                        for tp, committed in offsets.items()
                    }
                    await committer.commit(metadata)
                finally:
                    await committer.stop()
        return int(dropped)

    async def delete(self, group: str, pattern: str) -> bool:
        consumer_group = group_id(group, pattern)
        members, _ = await self._state(consumer_group)
        if members is None:
            return False
        if members:
            raise _in_use(group, pattern, members, "deleting")
        return await self._delete(consumer_group, group, pattern)

    async def _delete(self, consumer_group: str, group: str, pattern: str) -> bool:
        with self._boundary(f"deleting group {consumer_group!r}"):
            node = await self._admin.find_coordinator(consumer_group)
            response = await self._admin._send_request(DeleteGroupsRequest([consumer_group]), node)
        for _, code in response.results:
            if code == _GROUP_ID_NOT_FOUND:
                return False
            if code == _NON_EMPTY_GROUP:
                raise _in_use(group, pattern, 1, "deleting")
            if code != _NO_ERROR:
                raise self._boundary.error(
                    RuntimeError(f"Kafka error {code}"), f"deleting group {consumer_group!r}"
                )
        return True

    async def _state(self, consumer_group: str) -> tuple[int | None, dict[TopicPartition, Any]]:
        """(members, committed offsets); members None when there is no such group."""
        with self._boundary(f"describing group {consumer_group!r}"):
            response, offsets = await self._described(consumer_group)
        for described in response.groups:
            state, members = described[2], described[5]
            if state == "Dead" and not offsets:
                return None, {}
            return len(members), {tp: committed for tp, committed in offsets.items() if committed.offset >= 0}
        return None, {}

    async def _described(self, consumer_group: str) -> tuple[Any, dict[TopicPartition, Any]]:
        """The group's description and committed offsets. A broker that has no coordinator for
        the group yet (a fresh broker creates its offsets topic at the first group) is asked
        again for up to `COORDINATOR_WAIT` seconds, as a consumer joining the group would be."""
        deadline = time.monotonic() + COORDINATOR_WAIT
        for pause in backoff_delays(0.1, 1.0):
            try:
                [response] = await self._admin.describe_consumer_groups([consumer_group])
                offsets = await self._admin.list_consumer_group_offsets(consumer_group)
            except _COORDINATOR_NOT_READY:
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                continue
            return response, offsets
        raise AssertionError("backoff_delays is endless")

    async def _look(self, consumer_group: str, group: str, pattern: str, *, expire: bool) -> GroupInfo | None:
        members, offsets = await self._state(consumer_group)
        if members is None:
            return None
        if expire and not members and _due(offsets, time.time()):
            if await self._delete(consumer_group, group, pattern):
                logger.info("removed group %r on %r: no member for its group_expiry", group, pattern)
            return None
        ends = await self._ends(list(offsets))
        backlog = sum(max(0, ends.get(tp, 0) - committed.offset) for tp, committed in offsets.items())
        return GroupInfo(group, pattern, members, backlog)

    async def _ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        reader = self._reader
        if reader is None:
            reader = AIOKafkaConsumer(**self._options)
            with self._boundary("starting a consumer to read end offsets"):
                await reader.start()
            self._reader = reader
        with self._boundary("reading end offsets"):
            ends: dict[TopicPartition, int] = await reader.end_offsets(partitions)
        return ends


def _in_use(group: str, pattern: str, members: int, doing: str) -> GroupInUseError:
    return GroupInUseError(
        f"group {group!r} on {pattern!r} has {members} running members: stop them before {doing} it"
    )
