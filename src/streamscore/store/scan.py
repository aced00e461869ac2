"""Every stored event after a seq, in seq (arrival) order, from history chunks and the log.

A replay (feature backfill, restart since a checkpoint) must see events in the order the commit
step saw them, not by timestamp: out-of-order arrivals are part of what streaming computed.
Chunks hold the events up to `indexed_seq` (their JSON `records`, with seq, event type and
attributes), the log the batches after it; `events_after` merges both, keeps
`after < seq <= until` and yields `LoggedBatch`es of at most `batch` events in seq order. Raw
feature vectors are not read (their width may change with the model): `features` has no
columns. The selected chunk events are held in memory at once (columns, not rows).

>>> import numpy as np
>>> from streamscore.store import log_codec
>>> records = [("a", '[[5.0,0.5,2,"e2",1,[0.0],"buy",{"amount":3},null]]'),
...            ("a", '[[4.0,0.25,1,null,1,[0.0]]]')]
>>> blob = log_codec.encode(["b"], [None], np.array([6.0]), np.array([0.75]), np.zeros((1, 1)))
>>> [(s, b.user_ids, b.event_ids, b.timestamps.tolist(), b.event_types, b.attributes)
...  for s, b in events_after(records, [(3, blob)], after=1, until=3, indexed=2, batch=10)]
[(2, ['a', 'b'], ['e2', None], [5.0, 6.0], ['buy', None], [{'amount': 3}, None])]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import msgspec
import numpy as np

from streamscore.store import log_codec
from streamscore.store.log_codec import LoggedBatch

_rows = msgspec.json.Decoder(list[list[object]])


def events_after(
    records: Iterable[tuple[str, str | bytes]],
    logged: Iterable[tuple[int, bytes]],
    after: int,
    until: int,
    indexed: int,
    batch: int = 65_536,
) -> Iterator[tuple[int, LoggedBatch]]:
    """(first seq, events) in seq order. `records` are chunks' (user id, JSON records), `logged`
    the log's (first_seq, blob) rows. Chunks are read
    for seqs <= `indexed` only, the log for the rest, so no event is seen twice."""
    seqs: list[np.ndarray] = []
    users: list[list[str]] = []
    ids: list[list[str | None]] = []
    ts: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    types: list[list[str | None]] = []
    attrs: list[list[dict | None]] = []
    chunk_high = min(until, indexed)
    for user, text in records:
        rows = [r for r in _rows.decode(text) if after < r[2] <= chunk_high]  # type: ignore[operator]
        if not rows:
            continue
        seqs.append(np.array([r[2] for r in rows], dtype=np.int64))
        users.append([user] * len(rows))
        ids.append([r[3] for r in rows])  # type: ignore[misc]
        ts.append(np.array([r[0] for r in rows], dtype=np.float64))
        scores.append(np.array([r[1] for r in rows], dtype=np.float64))
        types.append([r[6] if len(r) > 6 else None for r in rows])  # type: ignore[misc]
        attrs.append([r[7] if len(r) > 7 else None for r in rows])  # type: ignore[misc]
    for first_seq, blob in logged:
        b = log_codec.decode(blob)
        n = len(b.user_ids)
        s = np.arange(first_seq, first_seq + n, dtype=np.int64)
        keep = (s > max(after, indexed)) & (s <= until)
        if not keep.any():
            continue
        pick = np.flatnonzero(keep).tolist()
        seqs.append(s[keep])
        users.append([b.user_ids[i] for i in pick])
        ids.append([b.event_ids[i] for i in pick])
        ts.append(b.timestamps[keep])
        scores.append(b.scores[keep].astype(np.float64))
        types.append([b.event_types[i] for i in pick] if b.event_types else [None] * len(pick))
        attrs.append([b.attributes[i] for i in pick] if b.attributes else [None] * len(pick))
    if not seqs:
        return
    all_seqs = np.concatenate(seqs)
    order = np.argsort(all_seqs, kind="stable")
    all_users = np.array([u for part in users for u in part], dtype=object)[order]
    all_ts = np.concatenate(ts)[order]
    all_scores = np.concatenate(scores)[order]
    all_ids = np.array([e for part in ids for e in part], dtype=object)[order]
    all_types = np.array([t for part in types for t in part], dtype=object)[order]
    all_attrs = np.empty(len(order), dtype=object)
    all_attrs[:] = [a for part in attrs for a in part]
    all_attrs = all_attrs[order]
    all_seqs = all_seqs[order]
    for lo in range(0, len(order), batch):
        hi = min(lo + batch, len(order))
        event_types = all_types[lo:hi].tolist()
        attributes = all_attrs[lo:hi].tolist()
        yield (
            int(all_seqs[lo]),
            LoggedBatch(
                user_ids=all_users[lo:hi].tolist(),
                event_ids=all_ids[lo:hi].tolist(),
                timestamps=all_ts[lo:hi],
                scores=all_scores[lo:hi],
                features=np.zeros((hi - lo, 0)),
                event_types=event_types if any(t is not None for t in event_types) else None,
                attributes=attributes if any(a is not None for a in attributes) else None,
            ),
        )


def scan_snapshot(
    logged: list[tuple[int, bytes]],
    last: int,
    indexed: int,
    chunk_records: Callable[[int], Iterable[tuple[str, str | bytes]]],
    after: int,
    until: int | None,
    batch: int,
) -> list[tuple[int, LoggedBatch]]:
    """A store's `scan` from one snapshot: `logged` are its log's (first_seq, blob) rows that
    end past `after`, `last` the log's last seq (0 if empty), `indexed` its `indexed_seq`;
    `chunk_records(high)` reads the (user id, records) of the chunks starting at or below
    `high`, only when the log no longer holds seq `after + 1`."""
    high = until if until is not None else max(int(last), int(indexed))
    if logged and logged[0][0] <= after + 1:  # the log alone holds all of it
        return list(events_after([], logged, after, high, after, batch))
    return list(events_after(chunk_records(high), logged, after, high, int(indexed), batch))
