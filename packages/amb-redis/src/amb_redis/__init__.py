"""AMB's Redis adapter: ``MessageBus.from_url("redis://localhost:6379/0")``.

Ungrouped subscriptions use Redis Pub/Sub (at most once); grouped subscriptions use Redis
Streams consumer groups (at least once, with redelivery and a dead-letter stream).

`RedisBroker` and `DEFAULT_MAX_MESSAGE_SIZE` are the public names; every module is private:
``_broker`` (the adapter), ``_options`` (its options), ``_fanout`` (`FanoutReader`, the ungrouped
subscriptions and the reply inbox), ``_group_consumer`` (`GroupConsumer`, one per grouped
subscription), ``_backlog`` (full group streams), ``_pipe`` and ``_pubsub`` (the two
connections), ``_connection`` (opening and keeping them), ``_errors`` (the error boundary),
``_names`` (keys and channels), ``_scripts`` (the Lua scripts in ``lua/``), ``_resp`` and
``_resp_reader`` (the Redis protocol).
"""

from __future__ import annotations

from importlib.metadata import version

from amb_redis._broker import RedisBroker
from amb_redis._options import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "RedisBroker"]
__version__ = version("amb-redis")
