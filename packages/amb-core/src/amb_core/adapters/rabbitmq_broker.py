"""`RabbitMQBroker`, re-exported from the `amb-rabbitmq` distribution (`pip install amb-rabbitmq`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amb_core.adapters import import_adapter

if TYPE_CHECKING:
    from amb_rabbitmq import RabbitMQBroker
else:
    RabbitMQBroker = import_adapter("amb_rabbitmq", "amb-rabbitmq", "rabbitmq").RabbitMQBroker

__all__ = ["RabbitMQBroker"]
