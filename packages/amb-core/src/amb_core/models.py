"""amb-core 0.1.0's ``amb_core.models``, deprecated: ``from amb_core import Message, MessagePriority``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amb_core._deprecated import moved

if TYPE_CHECKING:
    from amb_core._message import Message as Message
    from amb_core._message import MessagePriority as MessagePriority
else:
    __getattr__ = moved(__name__, {"Message": "amb_core", "MessagePriority": "amb_core"})

__all__ = ["Message", "MessagePriority"]
