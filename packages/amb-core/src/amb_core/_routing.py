"""`RouteTable`: which targets (subscriptions, groups) a topic reaches, in time that does not grow
with the number of targets.

Exact topics are one dict lookup. Wildcard patterns live in a trie of segments, as in RabbitMQ's
topic exchange and NATS's sublist: matching a topic walks its segments, following the literal
child, the ``*`` child and the ``#`` child of each node, so its cost depends on the topic and on
the patterns that match it, not on how many there are. Adding or removing a target is
O(segments) too. Routes are cached per topic; an exact target changes only its own topic's
entry, and a wildcard target makes the cached routes stale (each is rebuilt, in O(segments),
the next time its topic is used) without walking the cache.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from amb_core._topics import RESERVED_PREFIX, is_pattern

T = TypeVar("T")

_MAX_CACHED_ROUTES = 10_000


class _Node(Generic[T]):
    """One segment of the wildcard trie; ``targets`` are those whose pattern ends here."""

    __slots__ = ("children", "hash", "star", "targets")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] | None = None
        self.star: _Node[T] | None = None
        self.hash: _Node[T] | None = None
        self.targets: list[T] = []

    def empty(self) -> bool:
        return not self.targets and not self.children and self.star is None and self.hash is None


class RouteTable(Generic[T]):
    """Targets registered under topics or AMQP-style patterns (``*`` one segment, ``#`` zero or
    more), and the routes of topics, cached."""

    __slots__ = ("_exact", "_root", "_wildcards", "generation", "routes")

    def __init__(self) -> None:
        self._exact: dict[str, list[T]] = {}
        self._root: _Node[T] = _Node()
        self._wildcards = 0
        #: Bumped when a wildcard target comes or goes: cached routes older than it are stale.
        self.generation = 0
        #: topic -> (generation, route): what `route` found. A publish hot path reads it
        #: directly, as `cached` does.
        self.routes: dict[str, tuple[int, tuple[T, ...]]] = {}

    def __len__(self) -> int:
        return sum(map(len, self._exact.values())) + self._wildcards

    def cached(self, topic: str) -> tuple[T, ...] | None:
        """The cached route of ``topic`` if it is still current, else None (then call `route`)."""
        entry = self.routes.get(topic)
        if entry is not None and entry[0] == self.generation:
            return entry[1]
        return None

    def add(self, pattern: str, target: T) -> None:
        """Route ``pattern``'s topics to ``target`` as well (``pattern`` is a valid pattern)."""
        if not is_pattern(pattern):
            self._exact.setdefault(pattern, []).append(target)
            self.routes.pop(pattern, None)
            return
        node = self._root
        for segment in _segments(pattern):
            node = _child(node, segment)
        node.targets.append(target)
        self._wildcards += 1
        self.generation += 1

    def remove(self, pattern: str, target: T) -> bool:
        """Stop routing ``pattern``'s topics to ``target``; False if it was not there."""
        if not is_pattern(pattern):
            targets = self._exact.get(pattern)
            if targets is None or target not in targets:
                return False
            targets.remove(target)
            if not targets:
                del self._exact[pattern]
            self.routes.pop(pattern, None)
            return True
        path = [self._root]
        segments = _segments(pattern)
        for segment in segments:
            node = _existing_child(path[-1], segment)
            if node is None:
                return False
            path.append(node)
        if target not in path[-1].targets:
            return False
        path[-1].targets.remove(target)
        self._wildcards -= 1
        self.generation += 1
        # Prune the branch nodes left empty, so that churn does not leave the trie growing.
        for depth in range(len(segments), 0, -1):
            if not path[depth].empty():
                break
            _drop_child(path[depth - 1], segments[depth - 1])
        return True

    def route(self, topic: str) -> tuple[T, ...]:
        """The targets ``topic`` reaches (each once), cached for the next call."""
        found: list[T] = []
        exact = self._exact.get(topic)
        if exact:
            found.extend(exact)
        if self._wildcards:
            segments = topic.split(".")
            # A leading wildcard never reaches into the bus's own topics (reply inboxes).
            _collect(self._root, segments, 0, found, not topic.startswith(RESERVED_PREFIX))
            if len(found) > 1:
                found = list(dict.fromkeys(found))  # a pattern with several '#' can match twice
        routes = self.routes
        if len(routes) >= _MAX_CACHED_ROUTES:
            routes.clear()  # bounded; a route costs O(segments) to find again
        route = tuple(found)
        routes[topic] = (self.generation, route)
        return route


def _segments(pattern: str) -> list[str]:
    segments: list[str] = []
    for segment in pattern.split("."):
        if not (segment == "#" and segments and segments[-1] == "#"):
            segments.append(segment)  # "#.#" means the same as "#"
    return segments


def _child(node: _Node[T], segment: str) -> _Node[T]:
    if segment == "*":
        if node.star is None:
            node.star = _Node()
        return node.star
    if segment == "#":
        if node.hash is None:
            node.hash = _Node()
        return node.hash
    if node.children is None:
        node.children = {}
    child = node.children.get(segment)
    if child is None:
        child = node.children[segment] = _Node()
    return child


def _existing_child(node: _Node[T], segment: str) -> _Node[T] | None:
    if segment == "*":
        return node.star
    if segment == "#":
        return node.hash
    return node.children.get(segment) if node.children else None


def _drop_child(node: _Node[T], segment: str) -> None:
    if segment == "*":
        node.star = None
    elif segment == "#":
        node.hash = None
    elif node.children is not None:
        node.children.pop(segment, None)
        if not node.children:
            node.children = None


def _collect(node: _Node[T], segments: list[str], index: int, found: list[T], wildcards: bool) -> None:
    """Add to ``found`` the targets under ``node`` whose pattern matches ``segments[index:]``;
    ``wildcards`` False keeps ``*`` and ``#`` from matching here (a reserved topic's first segment)."""
    end = len(segments)
    hash_node = node.hash
    if hash_node is not None and wildcards:
        # '#' takes zero or more segments: what follows it may match from any later segment.
        for start in range(index, end + 1):
            _collect(hash_node, segments, start, found, True)
    if index == end:
        if node.targets:
            found.extend(node.targets)
        return
    children = node.children
    if children is not None:
        child = children.get(segments[index])
        if child is not None:
            _collect(child, segments, index + 1, found, True)
    if node.star is not None and wildcards:
        _collect(node.star, segments, index + 1, found, True)
