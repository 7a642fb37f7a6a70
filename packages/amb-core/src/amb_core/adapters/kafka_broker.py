"""`KafkaBroker`, re-exported from the `amb-kafka` distribution (`pip install amb-kafka`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amb_core.adapters import import_adapter

if TYPE_CHECKING:
    from amb_kafka import KafkaBroker
else:
    KafkaBroker = import_adapter("amb_kafka", "amb-kafka", "kafka").KafkaBroker

__all__ = ["KafkaBroker"]
