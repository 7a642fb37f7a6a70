"""Which offset of a partition a consumer group may commit: the end of the handled prefix."""

from __future__ import annotations

from collections import deque


class PartitionTracker:
    """Offsets of one assigned partition that were handed to the bus and not yet settled.

    With ``concurrency > 1``, or when priority reorders the local queue, handlers finish out of
    order. Committing the highest finished offset would skip a message still in flight if this
    member died, so the commit position only moves past a contiguous run of finished offsets.
    """

    __slots__ = ("_finished", "_pending", "active", "position")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._finished: set[int] = set()
        #: The offset to commit (next one to read), or None while nothing was settled.
        self.position: int | None = None
        #: False once the partition was revoked: late settlements must not be committed.
        self.active = True

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, offset: int) -> None:
        """``offset`` was handed to the bus (offsets arrive in increasing order)."""
        self._pending.append(offset)

    def forget(self, offset: int) -> None:
        """``offset``, the last one added, was not handed over after all (it is read again)."""
        if self._pending and self._pending[-1] == offset:
            self._pending.pop()

    def finish(self, offset: int) -> bool:
        """``offset`` was handled (or given up on); True if `position` moved."""
        pending = self._pending
        if not pending or pending[0] != offset:
            self._finished.add(offset)
            return False
        pending.popleft()
        position = offset + 1
        finished = self._finished
        while pending and pending[0] in finished:
            position = pending.popleft() + 1
            finished.discard(position - 1)
        self.position = position
        return True
