"""amb-core's unit tests; ``anyio_backend`` and the ``amb_`` fixtures come from amb_core's pytest
plugin (amb_core.testing.plugin)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_log_throttle() -> None:
    """Each test sees the first warnings of its own (amb_core.logs throttles repeats)."""
    from amb_core import logs

    logs.reset()
