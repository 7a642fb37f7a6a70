"""`KafkaBroker`, re-exported from the `amb-kafka` distribution (`pip install amb-kafka`)."""

from __future__ import annotations

from amb_core.adapters import import_adapter

KafkaBroker = import_adapter("amb_kafka", "amb-kafka", "kafka").KafkaBroker

__all__ = ["KafkaBroker"]
