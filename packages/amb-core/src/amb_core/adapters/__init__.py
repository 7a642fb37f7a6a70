"""amb-core 0.1.0's ``amb_core.adapters``, deprecated: each adapter ships as its own distribution.

``from amb_core.adapters import RedisBroker`` and ``from amb_core.adapters.redis_broker import
RedisBroker`` keep working, with a `DeprecationWarning`, once ``amb-redis`` is installed; the new
path is ``from amb_redis import RedisBroker`` (likewise ``amb_rabbitmq.RabbitMQBroker`` from
``amb-rabbitmq`` and ``amb_kafka.KafkaBroker`` from ``amb-kafka``). Without the distribution they
raise `AdapterNotInstalledError`, naming what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from amb_core._deprecated import moved
from amb_core._errors import AdapterNotInstalledError

#: Each adapter's module, and the distribution and amb-core extra that install it.
DISTRIBUTIONS = {
    "amb_redis": ("amb-redis", "redis"),
    "amb_rabbitmq": ("amb-rabbitmq", "rabbitmq"),
    "amb_kafka": ("amb-kafka", "kafka"),
}


def import_adapter(module: str) -> ModuleType:
    """Import the adapter ``module`` (``amb_redis``...), or say which distribution to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise  # the adapter is installed but one of its own dependencies is not
        distribution, extra = DISTRIBUTIONS[module]
        raise AdapterNotInstalledError(
            f"this adapter ships separately: pip install {distribution} (or pip install 'amb-core[{extra}]')",
            name=module,
        ) from error


if TYPE_CHECKING:
    from amb_kafka import KafkaBroker as KafkaBroker
    from amb_rabbitmq import RabbitMQBroker as RabbitMQBroker
    from amb_redis import RedisBroker as RedisBroker
else:
    __getattr__ = moved(
        __name__,
        {"RedisBroker": "amb_redis", "RabbitMQBroker": "amb_rabbitmq", "KafkaBroker": "amb_kafka"},
        import_adapter,
    )

__all__ = ["KafkaBroker", "RabbitMQBroker", "RedisBroker"]
