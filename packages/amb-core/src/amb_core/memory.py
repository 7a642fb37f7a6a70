"""The in-memory broker: a product feature for one process, honouring the full contract."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from amb_core.adapter import BrokerAdapter, Capabilities
from amb_core.delivery import Delivery
from amb_core.errors import InvalidMessageError
from amb_core.logs import message_fields
from amb_core.message import Message
from amb_core.subscription import Subscription
from amb_core.wire import decode, log_invalid

logger = logging.getLogger("amb.memory")

_MAX_CACHED_ROUTES = 10_000
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
    """Subscriptions sharing a group name on one pattern: each message goes to one of them."""

    __slots__ = ("_turn", "hub", "members", "name", "pattern")

    def __init__(self, hub: _Hub, name: str, pattern: str) -> None:
        self.hub = hub
        self.name = name
        self.pattern = pattern
        self.members: list[Subscription] = []
        self._turn = itertools.count()

    def _next(self) -> Subscription:
        return self.members[next(self._turn) % len(self.members)]

    def offer(self, message: Message) -> bool:
        return self._next().offer(message, _GroupDelivery(self, message))

    async def deliver(self, message: Message, delivery: Delivery | None = None) -> None:
        await self._next().deliver(message, delivery or _GroupDelivery(self, message))


class _GroupDelivery(Delivery):
    """A grouped message in memory: retried by the group (any member), dead-lettered to the
    broker's `InMemoryBroker.dead_letters`, given to another member when its own leaves."""

    __slots__ = ("_group", "_message")
    acknowledges = False  # nothing to tell: the group forgot the message when it handed it over

    def __init__(self, group: _Group, message: Message, attempt: int = 1) -> None:
        self.attempt = attempt  # not through super().__init__: this runs for every grouped message
        self._group = group
        self._message = message

    async def ack(self) -> None:
        pass

    async def retry(self) -> None:
        if self._group.members:
            await self._group.deliver(
                self._message, _GroupDelivery(self._group, self._message, self.attempt + 1)
            )

    async def dead_letter(self, reason: str) -> str:
        group = self._group
        group.hub.dead_letter(
            DeadLetter(self._message.topic, group.pattern, group.name, reason, self.attempt, self._message)
        )
        return "the in-memory broker's dead_letters"

    async def release(self) -> None:
        # With no member left it is gone: the closing bus logs how many it did not handle.
        if self._group.members:
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
    """The broker itself: every subscription of every bus that shares it, and the routes."""

    def __init__(self) -> None:
        self.subscriptions: list[Subscription] = []
        self.groups: dict[tuple[str, str], _Group] = {}
        self.routes: dict[str, tuple[_Target, ...]] = {}
        self.dead_letters: deque[DeadLetter] = deque()

    def route(self, topic: str) -> tuple[_Target, ...]:
        targets: list[_Target] = []
        seen_groups: set[int] = set()
        for subscription in self.subscriptions:
            if not subscription.matches(topic):
                continue
            if subscription.group is None:
                targets.append(subscription)
                continue
            group = self.groups[(subscription.group, subscription.pattern)]
            if id(group) not in seen_groups:
                seen_groups.add(id(group))
                targets.append(group)
        if len(self.routes) >= _MAX_CACHED_ROUTES:
            self.routes.clear()
        route = self.routes[topic] = tuple(targets)
        return route

    def add(self, subscription: Subscription) -> None:
        self.subscriptions.append(subscription)
        if subscription.group is not None:
            key = (subscription.group, subscription.pattern)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = _Group(self, subscription.group, subscription.pattern)
            group.members.append(subscription)
        self.routes.clear()

    def remove(self, subscription: Subscription) -> None:
        if subscription not in self.subscriptions:
            return
        self.subscriptions.remove(subscription)
        if subscription.group is not None:
            key = (subscription.group, subscription.pattern)
            members = self.groups[key].members
            members.remove(subscription)
            if not members:
                del self.groups[key]
        self.routes.clear()

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
    they would share a Redis server: that is how agents in one process talk across buses.

    Options: the `amb_core.policy.Policy` ones, like every adapter (``max_attempts`` applies to
    groups here too; the outage options have nothing to do in one process).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True,
        survives_restart=True,
        redelivers_failed=True,
        reports_no_responders=True,
        counts_receivers=True,
    )
    _shared_hubs: ClassVar[dict[str, _Hub]] = {}

    def __init__(self, url: str | None = None, **options: Any) -> None:
        try:
            super().__init__(**options)
        except TypeError:
            raise TypeError(
                f"InMemoryBroker takes only the failure-policy options (max_attempts, connect_timeout, "
                f"outage_timeout, outage_buffer), got {sorted(options)}"
            ) from None
        if url is None:
            self._hub = _Hub()
        else:
            if not url.startswith("memory://"):
                raise ValueError(f"InMemoryBroker needs a memory:// URL, not {url!r}")
            self._hub = self._shared_hubs.setdefault(url[len("memory://") :].rstrip("/"), _Hub())
        self.url = url or "memory://"
        self._mine: list[Subscription] = []

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
        route = self._hub.routes.get(message.topic)
        if route is None:
            route = self._hub.route(message.topic)
        for target in route:
            if not target.offer(message):
                await target.deliver(message)
        if confirm and not route:
            logger.warning(
                "no subscription receives message %s on %s",
                message.id,
                message.topic,
                extra=message_fields(message),
            )

    async def publish_tracked(
        self, message: Message, receivers: Callable[[int], None], *, count: bool = False
    ) -> None:
        route = self._hub.routes.get(message.topic)
        if route is None:
            route = self._hub.route(message.topic)
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
            route = self._hub.routes.get(topic) or self._hub.route(topic)
            groups = [target for target in route if isinstance(target, _Group)]
            if not groups:
                log_invalid(topic, error)
            for group in groups:
                group.members[0].reject(topic, error, _InvalidDelivery(group, topic, data))
            return
        await self.publish(message, confirm=False)

    async def subscribe(self, subscription: Subscription) -> None:
        self._hub.add(subscription)
        self._mine.append(subscription)

    async def unsubscribe(self, subscription: Subscription) -> None:
        self._hub.remove(subscription)
        if subscription in self._mine:
            self._mine.remove(subscription)
