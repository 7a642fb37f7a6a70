"""The in-memory broker: a product feature for one process, honouring the full contract."""

from __future__ import annotations

import itertools
import logging
from typing import Any, ClassVar

from amb_core.adapter import BrokerAdapter, Capabilities
from amb_core.message import Message
from amb_core.subscription import Ack, Subscription
from amb_core.wire import decode_or_log

logger = logging.getLogger("amb")

_MAX_CACHED_ROUTES = 10_000


class _Group:
    """Subscriptions sharing a group name on one pattern: each message goes to one of them."""

    __slots__ = ("_turn", "members")

    def __init__(self) -> None:
        self.members: list[Subscription] = []
        self._turn = itertools.count()

    def _next(self) -> Subscription:
        return self.members[next(self._turn) % len(self.members)]

    def offer(self, message: Message, ack: Ack | None = None) -> bool:
        return self._next().offer(message, ack)

    async def deliver(self, message: Message, ack: Ack | None = None) -> None:
        await self._next().deliver(message, ack)


_Target = Subscription | _Group


class _Hub:
    """The broker itself: every subscription of every bus that shares it, and the routes."""

    def __init__(self) -> None:
        self.subscriptions: list[Subscription] = []
        self.groups: dict[tuple[str, str], _Group] = {}
        self.routes: dict[str, tuple[_Target, ...]] = {}

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
            self.groups.setdefault(key, _Group()).members.append(subscription)
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


class InMemoryBroker(BrokerAdapter):
    """A broker inside this process.

    ``InMemoryBroker()`` (what ``MessageBus()`` uses) is private to its bus. Buses built from the
    same URL, ``MessageBus.from_url("memory://")`` or ``"memory://name"``, share one broker, as
    they would share a Redis server: that is how agents in one process talk across buses.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True, survives_restart=True, redelivers_failed=False
    )
    _shared_hubs: ClassVar[dict[str, _Hub]] = {}

    def __init__(self, url: str | None = None, **options: Any) -> None:
        if options:
            raise TypeError(f"InMemoryBroker takes no options, got {sorted(options)}")
        if url is None:
            self._hub = _Hub()
        else:
            if not url.startswith("memory://"):
                raise ValueError(f"InMemoryBroker needs a memory:// URL, not {url!r}")
            self._hub = self._shared_hubs.setdefault(url[len("memory://") :].rstrip("/"), _Hub())
        self.url = url or "memory://"
        self._mine: list[Subscription] = []

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
            logger.warning("no subscription receives message %s on %s", message.id, message.topic)

    async def publish_raw(self, topic: str, data: bytes) -> None:
        # Nothing foreign travels in memory, but bytes handed in are judged as on a real broker.
        message = decode_or_log(data, topic)
        if message is not None:
            await self.publish(message, confirm=False)

    async def subscribe(self, subscription: Subscription) -> None:
        self._hub.add(subscription)
        self._mine.append(subscription)

    async def unsubscribe(self, subscription: Subscription) -> None:
        self._hub.remove(subscription)
        if subscription in self._mine:
            self._mine.remove(subscription)
