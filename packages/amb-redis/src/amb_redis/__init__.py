"""AMB's Redis adapter: ``MessageBus.from_url("redis://localhost:6379/0")``.

Ungrouped subscriptions use Redis Pub/Sub (at most once); grouped subscriptions use Redis
Streams consumer groups (at least once, with redelivery and a dead-letter stream).
"""

from __future__ import annotations

from amb_redis.broker import DEFAULT_MAX_MESSAGE_SIZE, RedisBroker

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "RedisBroker"]
__version__ = "0.1.0"
