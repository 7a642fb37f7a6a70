from __future__ import annotations

import itertools

from amb_core.adapter import backoff_delays


def test_delays_grow_to_the_cap_with_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(initial=0.1, maximum=1.0), 8))
    assert 0.08 <= delays[0] <= 0.12
    assert all(0.8 <= delay <= 1.2 for delay in delays[5:])
