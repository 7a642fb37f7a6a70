"""The bus's reply inbox on RabbitMQ: an exclusive, auto-delete queue bound on the reserved
exchange, consumed without acknowledgements (a reply resolves its request at once)."""

from __future__ import annotations

import aiormq
from aio_pika.abc import AbstractQueue
from aiormq.abc import DeliveredMessage

from amb_core.adapter import Subscription
from amb_rabbitmq._consumer import QueueConsumer
from amb_rabbitmq._naming import Names
from amb_rabbitmq._session import Session


class ReplyInbox(QueueConsumer):
    """Feeds its bus's reply inbox (the subscription whose `Subscription.is_inbox` is True)."""

    __slots__ = ()

    def __init__(self, subscription: Subscription, names: Names) -> None:
        # No prefetch: nothing is acknowledged, so nothing bounds what the broker pushes.
        super().__init__(subscription, names, names.inbox_queue(subscription.id), prefetch=0)

    async def _declare(self, session: Session) -> AbstractQueue:
        return await (await session.setup_channel()).declare_queue(
            self.queue, exclusive=True, auto_delete=True
        )

    async def _consume(self, channel: aiormq.Channel) -> str:
        # Replies resolve a waiting request at once; nothing to acknowledge or bound.
        ok = await channel.basic_consume(self.queue, self._on_reply, no_ack=True)
        return ok.consumer_tag  # type: ignore[return-value]  # always set on ConsumeOk

    async def _on_reply(self, delivered: DeliveredMessage) -> None:
        # Not through the shared decoder: a reply has exactly one recipient.
        self.subscription.receive(delivered.body, delivered.routing_key or self.queue)

    async def release(self) -> None:
        """Nothing to hand back: replies are not acknowledged."""
