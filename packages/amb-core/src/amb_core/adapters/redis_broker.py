"""`RedisBroker`, re-exported from the `amb-redis` distribution (`pip install amb-redis`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amb_core.adapters import import_adapter

if TYPE_CHECKING:
    from amb_redis import RedisBroker
else:
    RedisBroker = import_adapter("amb_redis", "amb-redis", "redis").RedisBroker

__all__ = ["RedisBroker"]
