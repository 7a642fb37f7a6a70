"""The in-memory broker: a product feature for one process, honouring the full contract."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar

from amb_core._broker_adapter import BrokerAdapter, Capabilities
from amb_core._delivery import Delivery
from amb_core._errors import BrokerUnavailableError, GroupInUseError, InvalidMessageError
from amb_core._groups import GroupInfo, note_backlog
from amb_core._logs import note_unreceived
from amb_core._message import Message
from amb_core._policy import Policy
from amb_core._routing import RouteTable
from amb_core._subscription import Subscription
from amb_core._wire import decode, log_invalid

logger = logging.getLogger("amb.memory")

#: Messages a group keeps while it has no member; beyond that, publishers wait for one (and
#: raise `BrokerUnavailableError` after ``outage_timeout``), as they do for a full Redis stream.
MAX_GROUP_BACKLOG = 100_000
#: Dead letters a shared broker keeps (oldest dropped first, with a WARNING).
MAX_DEAD_LETTERS = 10_000


@dataclass(frozen=True)
class DeadLetter:
    """A grouped message that failed ``max_attempts`` times, or bytes that were not a valid
    envelope (then ``message`` is None and ``data`` holds them)."""

    topic: str
    pattern: str
    group: str
    reason: str
    attempts: int
    message: Message | None = None
    data: bytes | None = None


class _Group:
    """Subscriptions sharing a group name on one pattern: each message goes to one of them.

    Keyless messages go round-robin; messages with a key go to the member the key hashes to, so
    one key's messages are handled by one member at a time, in order. The group outlives its
    members: what is published while it has none waits in ``backlog`` (at most
    `MAX_GROUP_BACKLOG` messages; then publishers wait for a member) and goes to the next member
    that joins, unless the group went ``expiry`` seconds without any (then it is removed).
    """

    __slots__ = (
        "_resuming",
        "_room",
        "_turn",
        "backlog",
        "expiry",
        "hub",
        "idle_since",
        "members",
        "name",
        "pattern",
        "wait_timeout",
    )

    def __init__(self, hub: _Hub, name: str, pattern: str, expiry: float, wait_timeout: float) -> None:
        self.hub = hub
        self.name = name
        self.pattern = pattern
        #: ``group_expiry`` and ``outage_timeout`` of the adapter that created the group.
        self.expiry = expiry
        self.wait_timeout = wait_timeout
        self.members: list[Subscription] = []
        #: Messages waiting for a member, oldest first (with their delivery when they are
        #: retries or were handed back by a member that left).
        self.backlog: deque[tuple[Message, Delivery | None]] = deque()
        #: When the last member left (monotonic seconds); None while a member runs.
        self.idle_since: float | None = time.monotonic()
        self._turn = itertools.count()
        self._room: list[asyncio.Future[None]] = []
        self._resuming: asyncio.Task[None] | None = None

    def expired(self) -> bool:
        return self.idle_since is not None and time.monotonic() - self.idle_since > self.expiry

    def _member_for(self, message: Message) -> Subscription:
        members = self.members
        key = message.key
        if key is None:
            return members[next(self._turn) % len(members)]
        return members[hash(key) % len(members)]

    def offer(self, message: Message) -> bool:
        members = self.members
        if self.backlog or not members:
            return self._keep(message, None)
        # `_member_for`, inline: this is every grouped message's path in memory.
        key = message.key
        member = (
            members[next(self._turn) % len(members)] if key is None else members[hash(key) % len(members)]
        )
        return member.offer(message, _GroupDelivery(self, message))

    async def deliver(self, message: Message, delivery: Delivery | None = None) -> None:
        if self.backlog or not self.members:
            if not self._keep(message, delivery):
                await self._wait_for_room(message, delivery)
            return
        await self._member_for(message).deliver(message, delivery or _GroupDelivery(self, message))

    def _keep(self, message: Message, delivery: Delivery | None) -> bool:
        """Keep ``message`` for a member to come (or behind the backlog a member is taking);
        False when the backlog is full."""
        if self.expired():
            self.hub.expire(self)  # no member for group_expiry: the group is gone
            return True
        if len(self.backlog) >= MAX_GROUP_BACKLOG:
            return False
        self.backlog.append((message, delivery))
        if self.members and self._resuming is None:
            self._resume_soon()  # it was let in just as the members had taken the rest
        return True

    async def _wait_for_room(self, message: Message, delivery: Delivery | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout
        while True:
            room = loop.create_future()
            self._room.append(room)
            try:
                await asyncio.wait_for(room, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise BrokerUnavailableError(
                    f"group {self.name!r} on {self.pattern!r} has {len(self.backlog)} messages waiting "
                    f"for a member (the in-memory broker keeps at most {MAX_GROUP_BACKLOG}) and none took "
                    f"any within outage_timeout ({self.wait_timeout} s); message {message.id} was not sent"
                ) from None
            finally:
                if room in self._room:
                    self._room.remove(room)
            if self._keep(message, delivery):
                return

    def _wake_one(self) -> None:
        while self._room:
            room = self._room.pop(0)
            if not room.done():
                room.set_result(None)
                return

    def join(self, subscription: Subscription) -> None:
        self.members.append(subscription)
        self.idle_since = None
        note_backlog(self.hub.name, self.name, self.pattern, len(self.backlog))
        if self.backlog and self._resuming is None:
            self._resume_soon()

    def leave(self, subscription: Subscription) -> bool:
        if subscription not in self.members:
            return False
        self.members.remove(subscription)
        if not self.members:
            self.idle_since = time.monotonic()
        return True

    def _resume_soon(self) -> None:
        self._resuming = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        """Hand the backlog to the members, oldest first. Messages published meanwhile queue
        behind it (see `offer`), so the group still gets them in publish order."""
        backlog = self.backlog
        try:
            while backlog and self.members:
                entry = backlog[0]
                message, delivery = entry
                member = self._member_for(message)
                delivery = delivery or _GroupDelivery(self, message)
                if not member.offer(message, delivery):
                    # It leaves the backlog only once queued: until then, new messages keep
                    # queueing behind it rather than overtaking it.
                    await member.deliver(message, delivery)
                if backlog and backlog[0] is entry:  # a purge meanwhile took it already
                    backlog.popleft()
                    self._wake_one()
        finally:
            self._resuming = None

    def purge(self) -> int:
        purged = len(self.backlog)
        self.backlog.clear()
        for room in self._room:
            if not room.done():
                room.set_result(None)
        return purged

    def info(self) -> GroupInfo:
        waiting = len(self.backlog) + sum(member.queued for member in self.members)
        return GroupInfo(self.name, self.pattern, len(self.members), waiting)


class _GroupDelivery(Delivery):
    """A grouped message in memory: retried by the group (any member), dead-lettered to the
    broker's `InMemoryBroker.dead_letters`, given to another member (or kept for the next one)
    when its own leaves."""

    __slots__ = ("_group", "_message")
    acknowledges = False  # nothing to tell: the group forgot the message when it handed it over

    def __init__(self, group: _Group, message: Message, attempt: int = 1) -> None:
        self.attempt = attempt  # not through super().__init__: this runs for every grouped message
        self._group = group
        self._message = message

    async def ack(self) -> None:
        pass

    async def retry(self) -> None:
        await self._group.deliver(self._message, _GroupDelivery(self._group, self._message, self.attempt + 1))

    async def dead_letter(self, reason: str) -> str:
        group = self._group
        group.hub.dead_letter(
            DeadLetter(self._message.topic, group.pattern, group.name, reason, self.attempt, self._message)
        )
        return "the in-memory broker's dead_letters"

    async def release(self) -> None:
        await self._group.deliver(self._message, self)


class _InvalidDelivery(Delivery):
    """Bytes handed to `InMemoryBroker.publish_raw` that are not an envelope, for one group."""

    __slots__ = ("_data", "_group", "_topic")

    def __init__(self, group: _Group, topic: str, data: bytes) -> None:
        super().__init__()
        self._group, self._topic, self._data = group, topic, data

    async def ack(self) -> None:
        pass

    async def retry(self) -> None:  # pragma: no cover - never a handler's failure
        pass

    async def dead_letter(self, reason: str) -> str:
        group = self._group
        group.hub.dead_letter(
            DeadLetter(self._topic, group.pattern, group.name, reason, self.attempt, data=self._data)
        )
        return "the in-memory broker's dead_letters"


_Target = Subscription | _Group


class _Hub:
    """The broker itself: every subscription and group of every bus that shares it, their
    routes (`amb_core.adapter.RouteTable`: the cost of a publish does not grow with them) and
    the dead letters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.table: RouteTable[_Target] = RouteTable()
        self.groups: dict[tuple[str, str], _Group] = {}
        self.dead_letters: deque[DeadLetter] = deque()

    def add(self, subscription: Subscription, expiry: float, wait_timeout: float) -> None:
        if subscription.group is None:
            self.table.add(subscription.pattern, subscription)
            return
        key = (subscription.group, subscription.pattern)
        group = self.groups.get(key)
        if group is not None and group.expired():
            self.expire(group)
            group = None
        if group is None:
            group = self.groups[key] = _Group(
                self, subscription.group, subscription.pattern, expiry, wait_timeout
            )
            self.table.add(subscription.pattern, group)
        group.join(subscription)

    def remove(self, subscription: Subscription) -> bool:
        if subscription.group is None:
            return self.table.remove(subscription.pattern, subscription)
        group = self.groups.get((subscription.group, subscription.pattern))
        return group is not None and group.leave(subscription)

    def expire(self, group: _Group) -> None:
        """Remove ``group``, which went ``group_expiry`` without a member, with its backlog."""
        if self.groups.get((group.name, group.pattern)) is group:
            logger.info(
                "group %r on %r (%s) had no member for group_expiry (%s s): removed it with its %d messages",
                group.name,
                group.pattern,
                self.name,
                group.expiry,
                len(group.backlog),
            )
            self.drop(group)

    def drop(self, group: _Group) -> None:
        del self.groups[(group.name, group.pattern)]
        self.table.remove(group.pattern, group)
        group.purge()

    def live_groups(self) -> list[_Group]:
        """Every group, after removing those that expired."""
        for group in list(self.groups.values()):
            if group.expired():
                self.expire(group)
        return list(self.groups.values())

    def dead_letter(self, dead: DeadLetter) -> None:
        if len(self.dead_letters) >= MAX_DEAD_LETTERS:
            oldest = self.dead_letters.popleft()
            logger.warning(
                "the in-memory broker keeps %d dead letters: dropped the oldest (topic %s, group %r)",
                MAX_DEAD_LETTERS,
                oldest.topic,
                oldest.group,
            )
        self.dead_letters.append(dead)


class InMemoryBroker(BrokerAdapter):
    """A broker inside this process.

    ``InMemoryBroker()`` (what ``MessageBus()`` uses) is private to its bus. Buses built from the
    same URL, ``MessageBus.from_url("memory://")`` or ``"memory://name"``, share one broker, as
    they would share a Redis server: that is how agents in one process talk across buses, and
    how a group on it outlives its members.

    Options: the `amb_core.Policy` ones, like every adapter (``max_attempts`` and
    ``group_expiry`` apply to groups here too; the outage options have nothing to do in one
    process, except that a publisher waiting for a member of a group whose backlog is full
    gives up after ``outage_timeout``).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True,
        # The broker lives in the process: it restarts only with its subscriptions' process.
        survives_restart=False,
        redelivers_failed=True,
        reports_no_responders=True,
        counts_receivers=True,
        keyless_order=True,
        group_key_order=True,
    )
    _shared_hubs: ClassVar[dict[str, _Hub]] = {}

    def __init__(self, url: str | None = None, **options: Any) -> None:
        try:
            super().__init__(**options)
        except TypeError:
            raise TypeError(
                f"InMemoryBroker takes only the options every adapter takes ({', '.join(sorted(Policy.NAMES))}), "
                f"got {sorted(options)}"
            ) from None
        self.url = url or "memory://"
        if url is None:
            self._hub = _Hub(self.describe())
        else:
            if not url.startswith("memory://"):
                raise ValueError(f"InMemoryBroker needs a memory:// URL, not {url!r}")
            name = url[len("memory://") :].rstrip("/")
            hub = self._shared_hubs.get(name)
            if hub is None:
                hub = self._shared_hubs[name] = _Hub(self.describe())
            self._hub = hub
        self._table = self._hub.table
        #: This adapter's subscriptions (a dict: removing one is O(1) however many there are).
        self._mine: dict[Subscription, None] = {}

    def describe(self) -> str:
        return f"the in-memory broker {self.url}"

    @property
    def dead_letters(self) -> deque[DeadLetter]:
        """Grouped messages that failed ``max_attempts`` times and invalid bytes handed to
        `publish_raw`, oldest first (shared by every bus on this broker; at most
        `MAX_DEAD_LETTERS`). Clear it when you have looked."""
        return self._hub.dead_letters

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        for subscription in self._mine:
            self._hub.remove(subscription)
        self._mine.clear()

    async def publish(self, message: Message, *, confirm: bool) -> None:
        table = self._table
        cached = table.routes.get(message.topic)
        if cached is not None and cached[0] == table.generation:
            route = cached[1]
        else:
            route = table.route(message.topic)
        for target in route:
            if not target.offer(message):
                await target.deliver(message)
        if confirm and not route:
            note_unreceived(logger, message)

    def publish_now(self, message: Message) -> Coroutine[Any, Any, None] | None:
        """`publish` (unconfirmed) without a coroutine: None once every receiver has taken
        ``message``, else the rest of its delivery to await (a receiver's queue is full). A
        reply stream's chunks go this way: a coroutine per chunk is a tenth of its cost. (The
        route lookup inline, as in `publish`: a call less.)"""
        table = self._table
        cached = table.routes.get(message.topic)
        route = (
            cached[1] if cached is not None and cached[0] == table.generation else table.route(message.topic)
        )
        for target in route:
            if not target.offer(message):
                return _deliver_rest(message, route[route.index(target) :])
        return None

    async def publish_tracked(
        self, message: Message, receivers: Callable[[int], None], *, count: bool = False
    ) -> None:
        table = self._table
        cached = table.routes.get(message.topic)
        if cached is not None and cached[0] == table.generation:
            route = cached[1]
        else:
            route = table.route(message.topic)
        if count or not route:  # a plain request only needs to hear of "nobody"
            receivers(len(route))  # each ungrouped subscription, and each group, gets one copy
        # `publish` inline: one coroutine less on the request's hot path.
        for target in route:
            if not target.offer(message):
                await target.deliver(message)

    async def publish_raw(self, topic: str, data: bytes) -> None:
        # Nothing foreign travels in memory, but bytes handed in are judged as on a real broker.
        try:
            message = decode(data)
        except InvalidMessageError as error:
            groups = [target for target in self._table.route(topic) if isinstance(target, _Group)]
            if not groups:
                log_invalid(topic, error)
            for group in groups:
                delivery = _InvalidDelivery(group, topic, data)
                if group.members:
                    group.members[0].reject(topic, error, delivery)
                else:
                    log_invalid(topic, error, "dead-lettering it")
                    await delivery.dead_letter(str(error))
            return
        await self.publish(message, confirm=False)

    async def subscribe(self, subscription: Subscription) -> None:
        self._hub.add(subscription, self.policy.group_expiry, self.policy.outage_timeout)
        self._mine[subscription] = None

    async def unsubscribe(self, subscription: Subscription) -> None:
        self._hub.remove(subscription)
        self._mine.pop(subscription, None)

    # -- groups (see amb_core._groups) --------------------------------------------------------

    async def list_groups(self) -> list[GroupInfo]:
        return [group.info() for group in self._hub.live_groups()]

    async def purge_group(self, group: str, pattern: str) -> int:
        found = self._hub.groups.get((group, pattern))
        return 0 if found is None else found.purge()

    async def delete_group(self, group: str, pattern: str) -> bool:
        found = self._hub.groups.get((group, pattern))
        if found is None:
            return False
        if found.members:
            raise GroupInUseError(
                f"group {group!r} on {pattern!r} has {len(found.members)} members running: stop them first"
            )
        self._hub.drop(found)
        return True


async def _deliver_rest(message: Message, targets: tuple[_Target, ...]) -> None:
    """Deliver ``message`` to ``targets``, the first of which has no room for it now."""
    await targets[0].deliver(message)
    for target in targets[1:]:
        if not target.offer(message):
            await target.deliver(message)
