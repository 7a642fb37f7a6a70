"""The adapter's own options: `RabbitMQBroker`'s keyword arguments (``RabbitMQBroker(url,
exchange=...)`` or ``MessageBus.from_url(url, exchange=...)``), validated and kept in `Options`;
the failure-policy ones (``max_attempts``, ``connect_timeout``, ``outage_timeout``,
``outage_buffer``, ``group_expiry``) are amb-core's `amb_core.Policy`."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Room is left for the suffixes the adapter appends (".group.<name>.<pattern>" and the like).
_EXCHANGE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_MAX_EXCHANGE = 64
#: RabbitMQ's own default ``max_message_size`` (3.8 to 3.13: 128 MiB, checked against the
#: launcher's 3.10.8 with ``rabbitmqctl eval 'application:get_env(rabbit, max_message_size).'``).
#: The broker closes the channel of a publish whose body is larger.
BROKER_DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024
#: AMQP's own ceiling on a body size is far higher; RabbitMQ refuses settings above 512 MiB.
_MAX_MAX_MESSAGE_SIZE = 512 * 1024 * 1024


@dataclass(frozen=True)
class Options:
    """Validated options; see the package README for what each one changes on the broker."""

    #: Name of the durable topic exchange; also the prefix of every queue and exchange the
    #: adapter declares, so two applications on one vhost can keep apart.
    exchange: str
    #: Unacknowledged messages the broker may push to one subscription; None sizes it from the
    #: subscription's concurrency.
    prefetch: int | None
    #: Publish with delivery_mode=2, so messages waiting in a group's durable queue survive a
    #: broker restart. Ungrouped queues are transient either way.
    persistent: bool
    #: The largest encoded message (AMQP body) `publish` sends: the broker's ``max_message_size``
    #: setting (`BROKER_DEFAULT_MAX_MESSAGE_SIZE` unless configured otherwise).
    max_message_size: int

    def __post_init__(self) -> None:
        if (
            not isinstance(self.exchange, str)
            or len(self.exchange) > _MAX_EXCHANGE
            or not _EXCHANGE.fullmatch(self.exchange)
        ):
            raise ValueError(
                f"exchange must be dot-separated segments of [A-Za-z0-9_-], at most {_MAX_EXCHANGE}"
                f" characters, not {self.exchange!r}"
            )
        if self.exchange.startswith("amq."):
            raise ValueError(
                f"exchange names starting with 'amq.' are reserved by RabbitMQ: {self.exchange!r}"
            )
        if self.prefetch is not None and (
            isinstance(self.prefetch, bool)
            or not isinstance(self.prefetch, int)
            or not 0 < self.prefetch < 65536
        ):
            raise ValueError(f"prefetch must be an int from 1 to 65535 or None, not {self.prefetch!r}")
        size = self.max_message_size
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= _MAX_MAX_MESSAGE_SIZE:
            raise ValueError(
                f"max_message_size must be an int from 1 to {_MAX_MAX_MESSAGE_SIZE} bytes, not {size!r}"
            )

    def prefetch_for(self, concurrency: int) -> int:
        """How many unacknowledged messages the broker may push to one subscription.

        Enough to keep every handler busy while acknowledgements travel back (a few hundred
        covers a local round trip at tens of thousands of messages a second), and below the
        bus's default local queue (1024) so the broker, not the process, holds any excess.
        """
        if self.prefetch is not None:
            return self.prefetch
        return min(1000, max(256, 32 * concurrency))
