"""`Delivery`: how a broker lets the bus settle one message it handed to a subscription.

The failure policy lives in the bus, not in adapters (docs/semantics.md, "When things go
wrong"). An adapter that can redeliver or dead-letter hands each message to its subscription
together with a `Delivery`, and maps the bus's decision onto its broker:

- `ack`: the message is done with (handled, expired, or a broadcast that failed): never again.
- `retry`: the handler raised and the group may try again: deliver it once more, as attempt
  ``attempt + 1``, to this subscription or another member of its group.
- `dead_letter`: the handler failed ``max_attempts`` times, or the bytes were not a valid
  envelope: move what was received, unchanged, to the adapter's dead-letter destination with
  the reason and the attempt count, then drop it from the subscription's source.
- `release`: the subscription closed before handling it: hand it back untouched (no attempt
  counted), so that another member gets it. Brokers that redeliver unacknowledged messages by
  themselves need not do anything.

The bus calls at most one of these per delivery, once. ``attempt`` counts handler calls that
raised, plus one: a delivery cut short by a crash or a shutdown does not count (see
docs/semantics.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class Delivery(ABC):
    """One message handed to a subscription, and how to settle it with its broker."""

    __slots__ = ("attempt",)

    #: False where `ack` does nothing (the broker forgot the message when it handed it over):
    #: the bus then skips the call, which is on every message's path.
    acknowledges: ClassVar[bool] = True

    def __init__(self, attempt: int = 1) -> None:
        #: 1 for a first delivery; n + 1 after n handler calls that raised.
        self.attempt = attempt

    @abstractmethod
    async def ack(self) -> None:
        """Done with: the broker must not deliver it again."""

    @abstractmethod
    async def retry(self) -> None:
        """Deliver it again as attempt ``attempt + 1``."""

    @abstractmethod
    async def dead_letter(self, reason: str) -> str:
        """Move it, as received, to the dead-letter destination with ``reason`` and ``attempt``;
        return where it went (a queue, a stream, a topic), for the bus's log line."""

    async def release(self) -> None:  # noqa: B027 - optional: most brokers redeliver on their own
        """Give it back unhandled (the subscription closed); no attempt is counted."""
