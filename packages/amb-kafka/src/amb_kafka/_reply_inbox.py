"""The bus's reply inbox on Kafka: a topic of its own with one partition, read outside any
group like the ungrouped subscriptions, and deleted with the inbox."""

from __future__ import annotations

from amb_core.adapter import Subscription
from amb_kafka._fanout import FanoutReader


class ReplyInbox(FanoutReader):
    """Reads its bus's reply inbox (the subscription whose `Subscription.is_inbox` is True),
    on a consumer of its own beside the fan-out reader's."""

    async def add(self, subscription: Subscription, *, partitions: int | None = None) -> None:
        # One partition: replies need no parallelism, and the responder need not look it up.
        await super().add(subscription, partitions=1)

    async def remove(self, subscription: Subscription) -> None:
        # The consumer goes first: while it tracks the topic its metadata refreshes could have
        # the broker auto-create the topic again.
        await super().remove(subscription)
        await self._admin.delete(subscription.pattern)
