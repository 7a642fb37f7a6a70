"""AMB, the Agent Message Bus: a lightweight, broker-agnostic, async-first message bus for AI agents.

async with MessageBus() as bus:
    await bus.subscribe("agent.thoughts", handle)
    await bus.publish("agent.thoughts", {"thought": "Hello World!"})

Agent patterns on every broker: ``request_stream`` / ``reply_stream`` (streamed replies that the
requester can cancel), ``gather`` (scatter-gather), `NoRespondersError`, error answers
(`RemoteHandlerError`) and deadlines (``Message.expires_at``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from amb_core.adapter import BrokerAdapter, Capabilities
from amb_core.bus import MessageBus
from amb_core.delivery import Delivery
from amb_core.errors import (
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
from amb_core.gather import Replies
from amb_core.groups import GroupInfo
from amb_core.link import Link
from amb_core.memory import InMemoryBroker
from amb_core.message import Message, MessagePriority
from amb_core.policy import Policy
from amb_core.streams import ReplyStream
from amb_core.subscription import MessageHandler, Subscription

try:
    __version__ = version("amb-core")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
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
