"""amb-rabbitmq: the RabbitMQ adapter of AMB, the Agent Message Bus.

    from amb_core import MessageBus

    async with MessageBus.from_url("amqp://guest:guest@localhost/") as bus:
        ...

``from amb_core.adapters.rabbitmq_broker import RabbitMQBroker`` (the seed's import path) still works,
with a ``DeprecationWarning``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from amb_rabbitmq.broker import RabbitMQBroker

try:
    __version__ = version("amb-rabbitmq")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["RabbitMQBroker", "__version__"]
