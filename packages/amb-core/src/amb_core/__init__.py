"""AMB, the Agent Message Bus: a lightweight, broker-agnostic, async-first message bus for AI agents.

async with MessageBus() as bus:
    await bus.subscribe("agent.thoughts", handle)
    await bus.publish("agent.thoughts", {"thought": "Hello World!"})

Agent patterns on every broker: ``request_stream`` / ``reply_stream`` (streamed replies that the
requester can cancel), ``gather`` (scatter-gather), `NoRespondersError`, error answers
(`RemoteHandlerError`) and deadlines (``Message.expires_at``).

The public modules are this one, `amb_core.adapter` (everything a broker adapter needs),
`amb_core.middleware` (for middleware authors) and `amb_core.testing`; modules named ``_x`` are
private and may change in any release. (The 0.1.0 paths `amb_core.models`,
`amb_core.memory_broker`, `amb_core.broker`, `amb_core.adapters` and `amb_core.hf_utils` still
import, with a `DeprecationWarning`.)
"""

from __future__ import annotations

from importlib.metadata import version

from amb_core._broker_adapter import BrokerAdapter, Capabilities
from amb_core._bus import MessageBus
from amb_core._delivery import Delivery
from amb_core._errors import (
    AdapterNotInstalledError,
    AMBError,
    BrokerRefusedError,
    BrokerUnavailableError,
    BusClosedError,
    GroupInUseError,
    InvalidMessageError,
    InvalidPayloadError,
    InvalidTopicError,
    MessageTooLargeError,
    NoRespondersError,
    RemoteHandlerError,
    RequestCancelledError,
    RequestTimeoutError,
    StreamSequenceError,
)
from amb_core._gather import Replies
from amb_core._groups import GroupInfo
from amb_core._link import Link
from amb_core._memory import DeadLetter, InMemoryBroker
from amb_core._message import Message, MessagePriority
from amb_core._policy import Policy
from amb_core._streams import ReplyStream
from amb_core._subscription import MessageHandler, Subscription

__version__ = version("amb-core")
__author__ = "AMB developers"
__license__ = "MIT"

__all__ = [
    "AMBError",
    "AdapterNotInstalledError",
    "BrokerAdapter",
    "BrokerRefusedError",
    "BrokerUnavailableError",
    "BusClosedError",
    "Capabilities",
    "DeadLetter",
    "Delivery",
    "GroupInUseError",
    "GroupInfo",
    "InMemoryBroker",
    "InvalidMessageError",
    "InvalidPayloadError",
    "InvalidTopicError",
    "Link",
    "Message",
    "MessageBus",
    "MessageHandler",
    "MessagePriority",
    "MessageTooLargeError",
    "NoRespondersError",
    "Policy",
    "RemoteHandlerError",
    "Replies",
    "ReplyStream",
    "RequestCancelledError",
    "RequestTimeoutError",
    "StreamSequenceError",
    "Subscription",
    "__author__",
    "__license__",
    "__version__",
]
