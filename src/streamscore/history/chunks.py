"""Columnar history chunks: one user's events of one UTC day from one flush (or compaction).

A chunk never spans two days, so retention removes whole chunks (and PostgreSQL whole day
partitions) at the exact day boundary. It comes in two parts:

- `keys`: what a history page reads, packed as arrays and sorted by (timestamp, seq):
  big-endian float64 timestamps, int64 seqs, float32 scores, 20 bytes an event. Big-endian
  because PostgreSQL builds the same bytes in SQL (`float8send`), which its migration uses.
  Uncompressed: a page decodes it with `np.frombuffer`. zlib (level 1) shrinks a 16,384-event
  key set to about 53 % (the seqs' high bytes), but keys are ~10 % of a chunk next to the
  records, and every page would pay the inflate.
- `details`: the optional fields of each key (`event_type`, `attributes`, the experiment
  `variant`), as a JSON object of lists in key order holding only the fields some event of the
  chunk has (`null` where an event has none), so a page returns them without reading the
  records; NULL when no event of the chunk has any.
- `records`: the complete events, `[[ts, score, seq, event_id, model_id, [features...]], ...]`
  (plus `event_type, attributes, variant` for flushes where any event has one of them) as JSON
  text, so that the stores' `events` views expand them in plain SQL (`json_each`,
  `json_array_elements`). Pages never read it; compaction only concatenates it.

A flush is split into chunks with one lexsort over (user code, timestamp, seq): no per-event
Python work but a dict lookup to number the users and building the JSON records.

>>> import numpy as np
>>> chunks = split(["b", "a", "b"], [None, "x", None], np.array([2.0, 1.0, 1.0]),
...                np.array([0.5, 0.25, 0.75], "f4"), np.zeros((3, 1)), np.array([7, 8, 9]),
...                np.array([1, 1, 1]))
>>> [(c.user_id, c.min_ts, c.max_ts, c.first_seq, c.count) for c in chunks]
[('b', 1.0, 2.0, 7, 2), ('a', 1.0, 1.0, 8, 1)]
>>> keys = unpack(chunks[0].keys)
>>> keys.timestamps.tolist(), keys.seqs.tolist(), keys.scores.tolist()
([1.0, 2.0], [9, 7], [0.75, 0.5])
>>> chunks[1].records
b'[[1.0,0.25,8,"x",1,[0.0]]]'
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import numpy as np

from streamscore.store import log_codec
from streamscore.store.log_codec import LoggedBatch

Row = TypeVar("Row", bound=tuple)

KEY_BYTES = 20  # per event: timestamp f8, seq i8, score f4
DETAILS = ("event_type", "attributes", "variant")  # an event's optional fields, in this order
DAY = 86_400.0
STEP = 8192  # events whose records `split` builds in one step


@dataclass(frozen=True, slots=True)
class Keys:
    """A chunk's page columns, sorted by (timestamp, seq)."""

    timestamps: np.ndarray  # float64
    seqs: np.ndarray  # int64
    scores: np.ndarray  # float32
    details: dict[str, np.ndarray] = field(default_factory=dict)  # object arrays, `DETAILS`

    def __len__(self) -> int:
        return len(self.seqs)

    def take(self, index: np.ndarray) -> Keys:
        """The keys at `index`, in that order."""
        return Keys(
            self.timestamps[index],
            self.seqs[index],
            self.scores[index],
            {name: values[index] for name, values in self.details.items()},
        )

    def row_details(self) -> list[dict[str, object]]:
        """Per key, its detail fields that are set."""
        rows: list[dict[str, object]] = [{} for _ in range(len(self))]
        for name, values in self.details.items():
            for row, value in zip(rows, values.tolist(), strict=True):
                if value is not None:
                    row[name] = value
        return rows


@dataclass(frozen=True, slots=True)
class Chunk:
    """One row of `history_chunks`."""

    user_id: str
    min_ts: float
    max_ts: float
    first_seq: int  # the smallest seq in the chunk: with user_id, it names the chunk
    count: int
    keys: bytes
    records: bytes
    details: bytes | None = None  # `pack_details`

    def row(self) -> tuple[str, float, float, int, int, bytes, str, str | None]:
        """The values of a `history_chunks` row, in column order."""
        return (
            self.user_id,
            self.min_ts,
            self.max_ts,
            self.first_seq,
            self.count,
            self.keys,
            self.records.decode(),
            None if self.details is None else self.details.decode(),
        )


def pack(timestamps: np.ndarray, seqs: np.ndarray, scores: np.ndarray) -> bytes:
    """Keys already sorted by (timestamp, seq), as chunk bytes."""
    return b"".join(
        (
            timestamps.astype(">f8", copy=False).tobytes(),
            seqs.astype(">i8", copy=False).tobytes(),
            scores.astype(">f4", copy=False).tobytes(),
        )
    )


def pack_details(columns: dict[str, Sequence[object]]) -> bytes | None:
    """A chunk's `details` column: the fields (of `DETAILS`) that some key has; None if none.

    >>> pack_details({"event_type": ["buy", None], "variant": [None, None]})
    b'{"event_type":["buy",null]}'
    """
    kept = {
        name: list(values) for name, values in columns.items() if any(v is not None for v in values)
    }
    return msgspec.json.encode(kept) if kept else None


def unpack(blob: bytes, details: bytes | str | None = None) -> Keys:
    n = len(blob) // KEY_BYTES
    return Keys(
        timestamps=np.frombuffer(blob, ">f8", n, 0).astype(np.float64),
        seqs=np.frombuffer(blob, ">i8", n, 8 * n).astype(np.int64),
        scores=np.frombuffer(blob, ">f4", n, 16 * n).astype(np.float32),
        details=(
            {}
            if details is None
            else {k: objects(v) for k, v in msgspec.json.decode(details).items()}
        ),
    )


def objects(values: Sequence[object]) -> np.ndarray:
    """A 1-D object array of `values` (dicts and strings stay whole)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def sort_keys(parts: Sequence[Keys]) -> Keys:
    """The union of several key sets, sorted by (timestamp, seq)."""
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p.timestamps for p in parts])
    seqs = np.concatenate([p.seqs for p in parts])
    names = sorted({name for p in parts for name in p.details})
    details = {
        name: np.concatenate([p.details.get(name, np.full(len(p), None)) for p in parts])
        for name in names
    }
    return Keys(ts, seqs, np.concatenate([p.scores for p in parts]), details).take(
        np.lexsort((seqs, ts))
    )


def user_runs(
    user_ids: Sequence[str], timestamps: np.ndarray, seqs: np.ndarray, *, by_day: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, the order that sorts by (user, timestamp, seq), run boundaries): run k,
    `order[starts[k]:starts[k + 1]]`, holds one user's events (of one UTC day if `by_day`)."""
    index: dict[str, int] = {}
    codes = np.array([index.setdefault(u, len(index)) for u in user_ids], dtype=np.int64)
    order = np.lexsort((seqs, timestamps, codes))
    ranked = codes[order]
    users = np.array(list(index), dtype=object)[ranked]
    change = ranked[1:] != ranked[:-1]
    if by_day:
        days = timestamps[order] // DAY  # floor division: the same day as `ts // DAY` everywhere
        change |= days[1:] != days[:-1]
    starts = np.concatenate(([0], np.flatnonzero(change) + 1, [len(users)]))
    return users, order, starts


def split(
    user_ids: Sequence[str],
    event_ids: Sequence[str | None],
    timestamps: np.ndarray,
    scores: np.ndarray,
    features: np.ndarray,
    seqs: np.ndarray,
    model_ids: np.ndarray,
    extra: Sequence[Sequence[object]] = (),
    details: dict[str, Sequence[object]] | None = None,
    step: int = STEP,
) -> list[Chunk]:
    """One chunk per user and day of a flush, users in order of first appearance. `extra`
    columns (event type, attributes, variant) are appended to each record when given;
    `details` (by field name) fill the chunks' `details` column.

    The records are built `step` events (whole runs) at a time: converting a whole flush at
    once is single C calls of ~100 ms for 250,000 events that hold the GIL, stalling the
    event loop and the commit thread for that long."""
    n = len(user_ids)
    if not n:
        return []
    users, order, starts = user_runs(user_ids, timestamps, seqs)
    ts, sq, sc = timestamps[order], seqs[order].astype(np.int64), scores[order]
    mins = np.minimum.reduceat(sq, starts[:-1]).tolist()
    bounds = starts.tolist()
    chunks = []
    first = 0  # run index
    while first < len(bounds) - 1:
        # whole runs up to `step` events (at least one run)
        last = max(first + 1, bisect.bisect_right(bounds, bounds[first] + step) - 1)
        low, high = bounds[first], bounds[last]
        picked = order[low:high].tolist()
        records = list(
            zip(
                ts[low:high].tolist(),
                sc[low:high].astype(np.float64).tolist(),
                sq[low:high].tolist(),
                [event_ids[i] for i in picked],
                model_ids[order[low:high]].tolist(),
                features[order[low:high]].tolist(),
                *([column[i] for i in picked] for column in extra),
                strict=True,
            )
        )
        for k in range(first, last):
            a, b = bounds[k], bounds[k + 1]
            chunks.append(
                Chunk(
                    user_id=str(users[a]),
                    min_ts=float(ts[a]),
                    max_ts=float(ts[b - 1]),
                    first_seq=mins[k],
                    count=b - a,
                    keys=pack(ts[a:b], sq[a:b], sc[a:b]),
                    records=msgspec.json.encode(records[a - low : b - low]),
                    details=(
                        None
                        if not details
                        else pack_details(
                            {
                                name: [col[i] for i in picked[a - low : b - low]]
                                for name, col in details.items()
                            }
                        )
                    ),
                )
            )
        first = last
    return chunks


def merge(user_id: str, parts: Sequence[tuple[bytes, bytes, bytes | str | None]]) -> Chunk:
    """One chunk holding the events of several chunks of a user, given as (keys, records,
    details)."""
    keys = sort_keys([unpack(k, v) for k, _, v in parts])
    records = b"[" + b",".join(r[1:-1] for _, r, _ in parts if len(r) > 2) + b"]"
    return Chunk(
        user_id=user_id,
        min_ts=float(keys.timestamps[0]),
        max_ts=float(keys.timestamps[-1]),
        first_seq=int(keys.seqs.min()),
        count=len(keys),
        keys=pack(keys.timestamps, keys.seqs, keys.scores),
        records=records,
        details=pack_details({k: v.tolist() for k, v in keys.details.items()}),
    )


def from_log(batches: Sequence[tuple[int, int, LoggedBatch]]) -> list[Chunk]:
    """The chunks of a flush of logged batches, given as (first_seq, model_id, batch).

    Batches whose feature widths differ (a model change) are split separately: a user may
    then get two chunks from one flush, which pages handle like any overlapping chunks.
    """
    by_width: dict[int, list[tuple[int, int, LoggedBatch]]] = {}
    for item in batches:
        by_width.setdefault(item[2].features.shape[1], []).append(item)
    chunks: list[Chunk] = []
    for group in by_width.values():
        logged = [b for *_, b in group]
        counts = [len(b.user_ids) for b in logged]
        models = [
            np.full(n, m) if b.model_ids is None else b.model_ids
            for (_, m, b), n in zip(group, counts, strict=True)
        ]
        described = any(
            b.event_types is not None or b.attributes is not None or b.variants is not None
            for b in logged
        )
        extra = (
            [
                [x for b, n in zip(logged, counts, strict=True) for x in (column(b) or [None] * n)]
                for column in (
                    lambda b: b.event_types,
                    lambda b: b.attributes,
                    lambda b: b.variants,
                )
            ]
            if described
            else []
        )
        chunks += split(
            [u for b in logged for u in b.user_ids],
            [e for b in logged for e in b.event_ids],
            np.concatenate([b.timestamps for b in logged]),
            np.concatenate([b.scores for b in logged]),
            np.concatenate([b.features for b in logged]),
            np.concatenate(
                [np.arange(s, s + n) for (s, _, _), n in zip(group, counts, strict=True)]
            ),
            np.concatenate(models),
            extra,
            dict(zip(DETAILS, extra, strict=True)) if extra else None,
        )
    return chunks


def log_records(
    rows: Iterable[tuple[int, int, bytes]], users: Sequence[str] | None
) -> Iterator[tuple[str, bytes]]:
    """(user_id, records JSON) of logged batches given as (first_seq, model_id, log_codec
    bytes), as the chunks they will become, of `users` only when given: how an export reads
    the events not chunked yet."""
    wanted = None if users is None else set(users)
    for first_seq, model_id, blob in rows:
        for chunk in from_log([(first_seq, model_id, log_codec.decode(bytes(blob)))]):
            if wanted is None or chunk.user_id in wanted:
                yield chunk.user_id, chunk.records


def take(rows: Iterable[Row], budget: int) -> list[Row]:
    """The logged batches, given as (first_seq, count, ...) in seq order, that one chunking
    step moves: the first, then as many as keep the step within `budget` events.

    >>> take([(1, 5), (6, 4), (10, 3)], budget=9)
    [(1, 5), (6, 4)]
    >>> take([(1, 50), (51, 1)], budget=9)
    [(1, 50)]
    """
    taken: list[Row] = []
    moved = 0
    for row in rows:
        if moved and moved + row[1] > budget:
            break
        moved += row[1]
        taken.append(row)
    return taken
