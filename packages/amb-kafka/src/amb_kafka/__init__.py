"""AMB's Apache Kafka adapter: ``MessageBus.from_url("kafka://localhost:9092")``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from amb_kafka.broker import KafkaBroker
from amb_kafka.naming import dead_letter_topic, group_id

try:
    __version__ = version("amb-kafka")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["KafkaBroker", "__version__", "dead_letter_topic", "group_id"]
