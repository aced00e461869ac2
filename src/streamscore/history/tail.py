"""The head of history: acknowledged batches that the chunker has not reached yet.

A page must show an event as soon as it is acknowledged, but the chunker runs every
`index_interval`. Pages therefore also read the logged batches past `indexed_seq`; each batch
is decoded and grouped by user once, on the first page that needs it, so a page costs a dict
lookup per pending batch instead of a scan of every pending event.

>>> import numpy as np
>>> from streamscore.store import log_codec
>>> blob = log_codec.encode(["a", "b", "a"], [None] * 3, np.array([86_400.0, 1.0, 2.0]),
...                         np.array([0.1, 0.2, 0.3], "f4"), np.zeros((3, 1)))
>>> tail = Tail()
>>> tail.add([(10, 3, blob)])
>>> tail.high
12
>>> keys = tail.keys("a", after_seq=0)
>>> keys.timestamps.tolist(), keys.seqs.tolist()
([2.0, 86400.0], [12, 10])
>>> tail.forget(12); len(tail.keys("a", after_seq=12)), tail.keys("a", after_seq=0)
(0, None)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np

from streamscore.history.chunks import DETAILS, Keys, objects, sort_keys, user_runs
from streamscore.store import log_codec

_EMPTY = Keys(np.empty(0), np.empty(0, np.int64), np.empty(0, np.float32))


class Tail:
    def __init__(self) -> None:
        self._batches: dict[int, dict[str, Keys]] = {}  # by the batch's last seq
        self._lock = threading.Lock()
        self.high = 0  # the last seq of the newest batch held
        self.floor = 0  # batches ending at or before this may have been forgotten

    def add(self, rows: Iterable[tuple[int, int, bytes]]) -> None:
        """Hold logged batches given as (first_seq, count, log_codec bytes), in seq order."""
        for first_seq, count, blob in rows:
            last = first_seq + count - 1
            if last <= self.high:
                continue
            batch = log_codec.decode(blob)
            seqs = np.arange(first_seq, first_seq + count, dtype=np.int64)
            users, order, starts = user_runs(batch.user_ids, batch.timestamps, seqs, by_day=False)
            ts, sc, sq = batch.timestamps[order], batch.scores[order], seqs[order]
            details = {
                name: objects(values)[order]
                for name, values in zip(
                    DETAILS, (batch.event_types, batch.attributes, batch.variants), strict=True
                )
                if values is not None and any(v is not None for v in values)
            }
            grouped = {
                str(users[a]): Keys(
                    ts[a:b], sq[a:b], sc[a:b], {k: v[a:b] for k, v in details.items()}
                )
                for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)
            }
            with self._lock:
                self._batches[last] = grouped
                self.high = max(self.high, last)

    def keys(self, user_id: str, after_seq: int) -> Keys | None:
        """The user's held events in batches past `after_seq`, sorted by (timestamp, seq);
        None if some of those batches were forgotten (the caller reads them from the log)."""
        with self._lock:
            if after_seq < self.floor:
                return None
            parts = [
                g[user_id] for last, g in self._batches.items() if last > after_seq and user_id in g
            ]
        return sort_keys(parts) if parts else _EMPTY

    def forget(self, up_to: int) -> None:
        """Drop the batches now in chunks (every seq <= `up_to`): call before publishing the
        new `indexed_seq`, so that a reader of an older snapshot sees `floor` move."""
        with self._lock:
            self.floor = max(self.floor, up_to)
            for last in [last for last in self._batches if last <= up_to]:
                del self._batches[last]


def snapshot_keys(
    tail: Tail,
    user_id: str,
    known: int,
    indexed: Callable[[], int],
    batches_after: Callable[[int], Iterable[tuple[int, int, bytes]]],
) -> Keys | None:
    """The user's events past the `indexed_seq` of the caller's snapshot, for a page.

    `batches_after(seq)` reads the snapshot's logged batches past `seq` as (first_seq, count,
    blob), `indexed()` its `indexed_seq`; `known` is `max(store.indexed_seq, tail.high)` taken
    before the snapshot began. The log is read first: a batch truncated after the snapshot is
    in the chunks the page reads next. Should the chunker have forgotten batches that the
    snapshot still needs, they are read again from the log.
    """
    tail.add(batches_after(known))
    indexed_seq = indexed()
    keys = tail.keys(user_id, indexed_seq)
    if keys is None:
        missed = Tail()
        missed.add(batches_after(indexed_seq))
        keys = missed.keys(user_id, indexed_seq)
    return keys
