"""amb-core 0.1.0's ``amb_core.adapters.redis_broker``, deprecated: ``from amb_redis import RedisBroker``
(``pip install amb-redis``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amb_core._deprecated import moved
from amb_core.adapters import import_adapter

if TYPE_CHECKING:
    from amb_core._broker_adapter import BrokerAdapter as BrokerAdapter
    from amb_core._message import Message as Message
    from amb_core._subscription import MessageHandler as MessageHandler
    from amb_redis import RedisBroker as RedisBroker
else:
    # The others too: 0.1.0's module imported them, so they could be imported from it.
    __getattr__ = moved(
        __name__,
        {
            "RedisBroker": "amb_redis",
            "BrokerAdapter": "amb_core",
            "MessageHandler": "amb_core",
            "Message": "amb_core",
        },
        import_adapter,
    )

__all__ = ["RedisBroker"]
