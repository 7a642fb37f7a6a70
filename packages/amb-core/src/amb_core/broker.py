"""amb-core 0.1.0's ``amb_core.broker``, deprecated: ``from amb_core import BrokerAdapter,
MessageHandler``. The adapter interface itself changed: see "Migrating from 0.1.0" in the README."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amb_core._deprecated import moved

if TYPE_CHECKING:
    from amb_core._broker_adapter import BrokerAdapter as BrokerAdapter
    from amb_core._message import Message as Message
    from amb_core._subscription import MessageHandler as MessageHandler
else:
    # Message too: 0.1.0's module imported it, so ``from amb_core.broker import Message`` worked.
    __getattr__ = moved(
        __name__, {"BrokerAdapter": "amb_core", "MessageHandler": "amb_core", "Message": "amb_core"}
    )

__all__ = ["BrokerAdapter", "MessageHandler"]
