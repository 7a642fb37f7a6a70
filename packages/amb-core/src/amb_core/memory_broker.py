"""amb-core 0.1.0's ``amb_core.memory_broker``, deprecated: ``from amb_core import InMemoryBroker``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amb_core._deprecated import moved

if TYPE_CHECKING:
    from amb_core._broker_adapter import BrokerAdapter as BrokerAdapter
    from amb_core._memory import InMemoryBroker as InMemoryBroker
    from amb_core._message import Message as Message
    from amb_core._subscription import MessageHandler as MessageHandler
else:
    # The others too: 0.1.0's module imported them, so they could be imported from it.
    __getattr__ = moved(
        __name__, dict.fromkeys(["InMemoryBroker", "BrokerAdapter", "MessageHandler", "Message"], "amb_core")
    )

__all__ = ["InMemoryBroker"]
