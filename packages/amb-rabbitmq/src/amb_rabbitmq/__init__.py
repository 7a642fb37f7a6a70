"""amb-rabbitmq: the RabbitMQ adapter of AMB, the Agent Message Bus.

    from amb_core import MessageBus

    async with MessageBus.from_url("amqp://guest:guest@localhost/") as bus:
        ...

`RabbitMQBroker` is the whole public surface; every other module is private (``_x.py``).
``from amb_core.adapters.rabbitmq_broker import RabbitMQBroker`` (the seed's import path) still
works, with a ``DeprecationWarning``.
"""

from __future__ import annotations

from importlib.metadata import version

from amb_rabbitmq._broker import RabbitMQBroker

__version__ = version("amb-rabbitmq")

__all__ = ["RabbitMQBroker", "__version__"]
