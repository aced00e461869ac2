"""Which of a user's chunks to merge: tiered, like an LSM tree.

A flush writes one small chunk per user and day, so a busy user gathers thousands of them and a
page would fetch hundreds. Once a size tier (powers of `FANIN`) holds `FANIN` chunks, they are
merged up to `FANIN` at a time, so each event is rewritten about log_FANIN(TARGET / flush size)
times, and chunks stop growing at `TARGET` events (20 bytes of keys each: a page decodes at
most a few hundred KiB).

>>> plan([("a", 10, 0.0), ("b", 12, 1.0), ("c", 600, 2.0), ("d", 9, 3.0), ("e", 15, 4.0),
...       ("f", 20_000, 5.0), ("g", 8, 86_400.0)])
[['a', 'b', 'd', 'e']]
>>> plan([(k, 9_000, 0.0) for k in "abcd"])  # no merge past TARGET
[]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence

from streamscore.history.chunks import DAY

TARGET = 16_384
FANIN = 4


def tier(count: int) -> int:
    return (max(count, 1).bit_length() - 1) // 2  # floor(log4(count))


def plan(chunks: Sequence[tuple[Hashable, int, float]]) -> list[list[Hashable]]:
    """Groups of up to `FANIN` chunks (given as (ref, count, min_ts) in time order), each to be
    merged into one of at most `TARGET` events; only chunks of the same day are merged, so that
    no chunk spans two."""
    tiers: dict[tuple[float, int], list[tuple[Hashable, int]]] = {}
    for ref, count, min_ts in chunks:
        if count < TARGET:
            tiers.setdefault((min_ts // DAY, tier(count)), []).append((ref, count))
    groups = []
    for members in tiers.values():
        if len(members) < FANIN:
            continue
        group: list[Hashable] = []
        total = 0
        for ref, count in members:
            if len(group) == FANIN or total + count > TARGET:
                if len(group) > 1:
                    groups.append(group)
                group, total = [], 0
            group.append(ref)
            total += count
        if len(group) > 1:
            groups.append(group)
    return groups


class Backlog:
    """Users worth a compaction visit: those written `FANIN` chunks since their last visit.

    Kept in memory by the chunker; after a restart, `seed` refills it from the store.

    >>> backlog = Backlog()
    >>> backlog.wrote(["a", "b", "a", "a", "a"])
    >>> backlog.take(10), backlog.take(10)
    (['a'], [])
    """

    def __init__(self) -> None:
        self._written: dict[str, int] = {}
        self._ready: dict[str, None] = {}  # insertion-ordered set

    def wrote(self, user_ids: Sequence[str]) -> None:
        written, ready = self._written, self._ready
        for user in user_ids:
            n = written[user] = written.get(user, 0) + 1
            if n >= FANIN:
                ready[user] = None

    def seed(self, chunks_by_user: Sequence[tuple[str, int]]) -> None:
        """Users and their numbers of chunks below `TARGET`, as found in the store."""
        for user, n in chunks_by_user:
            self.wrote([user] * min(n, FANIN))

    def take(self, n: int) -> list[str]:
        """Up to `n` users to visit now; each counts from zero again."""
        users = list(itertools.islice(self._ready, n))
        for user in users:
            del self._ready[user]
            self._written.pop(user, None)
        return users


class Compaction:
    """A store's compaction bookkeeping, so that the store itself only runs the SQL.

    `visits` seeds the backlog from the store on the first step (`seed`: users and their
    numbers of small chunks), plans each visited user's merges from `small(user)` (the user's
    chunks below `TARGET` as (ref, count, min_ts) in time order) and yields (user, groups) for
    the store to merge; a visit counts once the store asks for the next one.

    >>> compaction = Compaction(users=10)
    >>> chunks = {"a": [(i, 10, float(i)) for i in range(4)], "b": [(0, 10, 0.0)]}
    >>> list(compaction.visits(lambda: [("a", 4), ("b", 1)], chunks.__getitem__))
    [('a', [[0, 1, 2, 3]])]
    """

    def __init__(self, users: int) -> None:
        self.users = users  # users visited per step
        self._backlog: Backlog | None = None

    def wrote(self, user_ids: Sequence[str]) -> None:
        """Chunks were written for these users (once per chunk)."""
        if self._backlog is not None:
            self._backlog.wrote(user_ids)

    def visits(
        self,
        seed: Callable[[], Sequence[tuple[str, int]]],
        small: Callable[[str], Sequence[tuple[Hashable, int, float]]],
    ) -> Iterator[tuple[str, list[list[Hashable]]]]:
        if self._backlog is None:
            self._backlog = Backlog()
            self._backlog.seed(seed())
        for user in self._backlog.take(self.users):
            groups = plan(small(user))
            if groups:
                yield user, groups
                self._backlog.wrote([user] * len(groups))
