"""The seed's import paths for the broker adapters, each of which ships as its own distribution.

``from amb_core.adapters.redis_broker import RedisBroker`` works once ``amb-redis`` is installed
(likewise ``rabbitmq_broker`` / ``amb-rabbitmq`` and ``kafka_broker`` / ``amb-kafka``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from amb_core.errors import AdapterNotInstalledError


def import_adapter(module: str, distribution: str, extra: str) -> ModuleType:
    """Import ``module`` or say which distribution to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise  # the adapter is installed but one of its own dependencies is not
        raise AdapterNotInstalledError(
            f"this adapter ships separately: pip install {distribution} (or pip install 'amb-core[{extra}]')",
            name=module,
        ) from error
