"""AMB's Apache Kafka adapter: ``MessageBus.from_url("kafka://localhost:9092")``.

`KafkaBroker` is the whole public surface; every other module is private (``_x.py``).
"""

from __future__ import annotations

from importlib.metadata import version

from amb_kafka._broker import KafkaBroker

__version__ = version("amb-kafka")

__all__ = ["KafkaBroker", "__version__"]
