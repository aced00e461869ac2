"""One history page from chunks and the tail: the rows of a user in (timestamp, seq) order,
within inclusive time bounds, strictly after a cursor, at most `limit`.

Chunks overlap in time (late events), so a page cannot read just one chunk. It reads chunks in
order of their first timestamp, only as many as can still hold one of the first `limit` rows:
once `limit` rows are found, a chunk starting after the last of them cannot change the page.

>>> import numpy as np
>>> from streamscore.history.chunks import pack
>>> blobs = {1: pack(np.array([1.0, 4.0]), np.array([1, 2]), np.array([0.1, 0.4], "f4")),
...          2: pack(np.array([2.0, 3.0]), np.array([3, 4]), np.array([0.2, 0.3], "f4"))}
>>> refs = [(1, 1.0, 2), (2, 2.0, 2)]
>>> fetch = lambda ids: [(blobs[i], None) for i in ids]
>>> page(refs, fetch, None, 0.0, 10.0, (1.0, 1), 2)
[(2.0, 0.20000000298023224, 3, {}), (3.0, 0.30000001192092896, 4, {})]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import NamedTuple

import numpy as np

from streamscore.history.chunks import Keys, sort_keys, unpack


class ChunkRef(NamedTuple):
    """A chunk the store may fetch: its handle, first timestamp and number of events."""

    ref: Hashable
    min_ts: float
    count: int


def select(keys: Keys, low: float, high: float, after: tuple[float, int], limit: int) -> Keys:
    """The first `limit` keys within [low, high] and after the cursor (keys sorted)."""
    ts, seqs = keys.timestamps, keys.seqs
    keep = (ts >= low) & (ts <= high) & ((ts > after[0]) | ((ts == after[0]) & (seqs > after[1])))
    return keys.take(np.flatnonzero(keep)[:limit])


def page(
    refs: Iterable[tuple[Hashable, float, int]],
    fetch: Callable[[list[Hashable]], list[tuple[bytes, bytes | str | None]]],
    tail: Keys | None,
    low: float,
    high: float,
    after: tuple[float, int],
    limit: int,
) -> list[tuple[float, float, int, dict[str, object]]]:
    """`[(ts, score, seq, details), ...]` (details: the event's optional fields that are set):
    `refs` are the user's chunks overlapping [low, high] (each a `ChunkRef` or a row of the
    same fields), `fetch` returns the (keys, details) columns of some of them, `tail` the
    user's events not in chunks."""
    refs = sorted((ChunkRef(*r) for r in refs), key=lambda r: r.min_ts)
    found = select(tail, low, high, after, limit) if tail is not None else None
    i = 0
    while i < len(refs) and limit > 0:
        j = i
        if found is not None and len(found) >= limit:
            last = found.timestamps[limit - 1]
            while j < len(refs) and refs[j].min_ts <= last:
                j += 1
            if j == i:
                break
        else:
            need, got = limit - (len(found) if found is not None else 0), 0
            while j < len(refs) and got < need:
                got += refs[j].count
                j += 1
        parts = [
            select(unpack(*columns), low, high, after, limit)
            for columns in fetch([r.ref for r in refs[i:j]])
        ]
        found = select(
            sort_keys([found, *parts] if found is not None else parts), low, high, after, limit
        )
        i = j
    if found is None or not len(found):
        return []
    return list(
        zip(
            found.timestamps.tolist(),
            found.scores.astype(np.float64).tolist(),
            found.seqs.tolist(),
            found.row_details(),
            strict=True,
        )
    )
