"""An ungrouped subscription on RabbitMQ: a queue of its own, exclusive and auto-delete (it
goes when the consumer or the connection does), bound to the subscription's pattern."""

from __future__ import annotations

from aio_pika.abc import AbstractQueue

from amb_core.adapter import Subscription
from amb_rabbitmq._consumer import QueueConsumer
from amb_rabbitmq._naming import Names
from amb_rabbitmq._properties import MAX_PRIORITY
from amb_rabbitmq._session import Session


class FanoutReader(QueueConsumer):
    """Feeds an ungrouped subscription: every message on its pattern, in priority order."""

    __slots__ = ()

    def __init__(self, subscription: Subscription, names: Names, prefetch: int) -> None:
        super().__init__(subscription, names, names.fanout_queue(subscription.id), prefetch)

    async def _declare(self, session: Session) -> AbstractQueue:
        return await (await session.setup_channel()).declare_queue(
            self.queue, exclusive=True, auto_delete=True, arguments={"x-max-priority": MAX_PRIORITY}
        )
