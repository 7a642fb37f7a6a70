"""`KafkaDelivery`: how the bus's decision about one record of a consumer group maps onto Kafka."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amb_core.adapter import Delivery

if TYPE_CHECKING:
    from aiokafka import TopicPartition  # type: ignore[import-untyped]

    from amb_kafka._group_consumer import GroupConsumer
    from amb_kafka._offsets import PartitionTracker


class KafkaDelivery(Delivery):
    """One record handed to a grouped subscription.

    - ``ack``: its offset is finished; the member commits the contiguous finished prefix.
    - ``retry``: delivered again, locally, as attempt + 1; its offset stays uncommitted meanwhile.
    - ``dead_letter``: the record is copied unchanged to ``_amb.dlq.<topic>`` (headers say where
      it came from, how many attempts and why), then its offset is finished.
    - ``release``: nothing to do: an uncommitted offset is read again by the group.

    Attempts are counted here, in the member that made them: a rebalance hands the partition to
    a member that starts again at 1 (more attempts, never fewer).
    """

    __slots__ = ("member", "record", "tp", "tracker")

    def __init__(
        self,
        member: GroupConsumer,
        tp: TopicPartition,
        tracker: PartitionTracker,
        record: Any,
        attempt: int = 1,
    ) -> None:
        super().__init__(attempt)
        self.member = member
        self.tp = tp
        self.tracker = tracker
        self.record = record

    async def ack(self) -> None:
        self.member.finish(self.tp, self.tracker, self.record.offset)

    async def retry(self) -> None:
        self.member.retry(self)

    async def dead_letter(self, reason: str) -> str:
        member = self.member
        where = await member.dead_letters.write(self.record, member.group_id, self.attempt, reason)
        member.finish(self.tp, self.tracker, self.record.offset)
        return where
