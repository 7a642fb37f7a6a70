"""`FanoutReader`: the ungrouped subscriptions, on the adapter's one Pub/Sub connection.

An ungrouped subscription gets every message published to its topic while it runs, at most once
(Redis Pub/Sub keeps nothing for a subscriber that is away). A topic is a Redis channel; a
wildcard pattern a Redis glob (wider than the pattern: each subscription filters exactly). The
bus's reply inbox is one of these subscriptions, on its own exact channel. Each message is
decoded once, however many subscriptions on this adapter receive it.

Each subscription also listens to a receiver channel of its own (`Names.receiver`), so that the
counting publish script can tell how many subscriptions receive a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from amb_core.adapter import Message, Subscription, decode_or_log, is_pattern
from amb_redis._names import Names, redis_glob
from amb_redis._pubsub import CHANNEL, PATTERN, PubSubConnection


class _Route:
    """The local subscriptions behind one Redis channel or glob."""

    __slots__ = ("subscriptions", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.subscriptions: tuple[Subscription, ...] = ()


class FanoutReader:
    """Routes what arrives on the Pub/Sub connection to the ungrouped subscriptions.

    ``on_other(channel, data)`` gets the messages of channels no ungrouped subscription listens
    to (the groups' wake-ups).
    """

    def __init__(self, names: Names, on_other: Callable[[bytes, bytes], None]) -> None:
        self._names = names
        self._on_other = on_other
        self._channels: dict[bytes, _Route] = {}
        self._globs: dict[bytes, _Route] = {}
        #: Each subscription's kind (`CHANNEL` or `PATTERN`), channel or glob, and receiver channel.
        self._subscribed: dict[Subscription, tuple[bytes, bytes, bytes]] = {}

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscribed)

    async def subscribe(self, subscription: Subscription, pubsub: PubSubConnection, timeout: float) -> None:
        """Start feeding ``subscription``; return once Redis confirmed its channels."""
        pattern = subscription.pattern
        if is_pattern(pattern):
            kind, key, table = PATTERN, redis_glob(pattern).encode(), self._globs
        else:
            kind, key, table = CHANNEL, pattern.encode(), self._channels
        route = table.get(key)
        if route is None:
            route = table[key] = _Route(pattern)
        route.subscriptions = (*route.subscriptions, subscription)
        receiver = self._names.receiver(subscription.id, pattern).encode()
        self._subscribed[subscription] = (kind, key, receiver)
        try:
            await asyncio.gather(
                pubsub.subscribe(kind, key, timeout),
                pubsub.subscribe(CHANNEL, receiver, timeout),
            )
        except BaseException:
            self._subscribed.pop(subscription, None)
            self._drop_route(kind, key, receiver, subscription, pubsub)
            raise

    def unsubscribe(self, subscription: Subscription, pubsub: PubSubConnection | None) -> bool:
        """Stop feeding ``subscription``; False if it is not one of these."""
        subscribed = self._subscribed.pop(subscription, None)
        if subscribed is None:
            return False
        self._drop_route(*subscribed, subscription, pubsub)
        return True

    def _drop_route(
        self,
        kind: bytes,
        key: bytes,
        receiver: bytes,
        subscription: Subscription,
        pubsub: PubSubConnection | None,
    ) -> None:
        table = self._globs if kind == PATTERN else self._channels
        route = table.get(key)
        if route is not None and subscription in route.subscriptions:
            route.subscriptions = tuple(s for s in route.subscriptions if s is not subscription)
            if not route.subscriptions:
                del table[key]
        if pubsub is not None:
            pubsub.unsubscribe(kind, key)
            pubsub.unsubscribe(CHANNEL, receiver)

    # -- receiving (the Pub/Sub connection's reader calls these) ---------------------------

    async def on_message(self, channel: bytes, data: bytes) -> None:
        route = self._channels.get(channel)
        if route is None:
            self._on_other(channel, data)
            return
        message = decode_or_log(data, route.topic)
        if message is None:
            return
        for subscription in route.subscriptions:
            if not subscription.offer(message):
                await subscription.deliver(message)

    async def on_pattern_message(self, glob: bytes, channel: bytes, data: bytes) -> None:
        route = self._globs.get(glob)
        if route is None or b":" in channel:  # AMB's own channels (wake-ups) contain ':', topics never
            return
        topic = channel.decode("utf-8", "replace")
        message: Message | None = None
        for subscription in route.subscriptions:
            if not subscription.matches(topic):
                continue
            if message is None:
                message = decode_or_log(data, topic)
                if message is None:
                    return
            if not subscription.offer(message):
                await subscription.deliver(message)
