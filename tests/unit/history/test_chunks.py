"""Chunk encoding round-trips, and a flush's chunks and merges hold exactly its events."""

from __future__ import annotations

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.history import chunks
from streamscore.history.pages import ChunkRef, page

finite = st.floats(-1e12, 1e12, allow_nan=False)
events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "ü", "user-0000042"]),
        st.sampled_from([0.0, 1.5, -2.0, 1e9]) | finite,
        st.floats(-1e6, 1e6, allow_nan=False, width=32),
        st.none() | st.text(max_size=5),
    ),
    max_size=60,
)


def flush(
    rows: list[tuple[str, float, float, str | None]],
    first_seq: int = 1,
    variants: list[str | None] | None = None,
    step: int = chunks.STEP,
) -> list[chunks.Chunk]:
    n = len(rows)
    return chunks.split(
        [r[0] for r in rows],
        [r[3] for r in rows],
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float32),
        np.arange(2 * n, dtype=np.float64).reshape(n, 2),
        np.arange(first_seq, first_seq + n),
        np.full(n, 7),
        [[None] * n, [None] * n, variants] if variants is not None else (),
        {"variant": variants} if variants is not None else None,
        step,
    )


@given(finite_ts=st.lists(finite, max_size=50), data=st.data())
def test_keys_round_trip(finite_ts: list[float], data: st.DataObject) -> None:
    n = len(finite_ts)
    seqs = np.array(data.draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)), np.int64)
    scores = np.array(data.draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), "f4")
    ts = np.array(finite_ts, dtype=np.float64)
    keys = chunks.unpack(chunks.pack(ts, seqs, scores))
    assert keys.timestamps.tobytes() == ts.tobytes()
    assert keys.seqs.tolist() == seqs.tolist()
    assert keys.scores.tobytes() == scores.tobytes()


@given(events, st.sampled_from([1, 2, 7, chunks.STEP]))
def test_a_flush_splits_into_one_sorted_chunk_per_user_and_day(rows, step) -> None:  # type: ignore[no-untyped-def]
    """Whatever the number of events converted per step (small steps cut the flush into
    many groups of whole runs)."""
    got = flush(rows, step=step)
    day = lambda ts: ts // chunks.DAY  # noqa: E731
    assert sorted((c.user_id, day(c.min_ts)) for c in got) == sorted(
        {(r[0], day(r[1])) for r in rows}
    )
    for chunk in got:
        want = sorted(
            (ts, seq, np.float32(score).item(), eid)
            for seq, (user, ts, score, eid) in enumerate(rows, start=1)
            if user == chunk.user_id and day(ts) == day(chunk.min_ts)
        )
        keys = chunks.unpack(chunk.keys)
        assert list(zip(keys.timestamps.tolist(), keys.seqs.tolist(), strict=True)) == [
            (ts, seq) for ts, seq, *_ in want
        ]
        assert keys.scores.tolist() == [w[2] for w in want]
        assert (chunk.min_ts, chunk.max_ts, chunk.count) == (want[0][0], want[-1][0], len(want))
        assert chunk.first_seq == min(w[1] for w in want)
        records = msgspec.json.decode(chunk.records)
        assert [(r[0], r[2], r[1], r[3]) for r in records] == want
        assert all(r[4] == 7 and r[5] == [2.0 * (r[2] - 1), 2.0 * (r[2] - 1) + 1] for r in records)


@given(events, st.data(), st.sampled_from([1, 3, chunks.STEP]))
def test_details_and_records_follow_their_events_at_any_step(rows, data, step) -> None:  # type: ignore[no-untyped-def]
    variants = data.draw(
        st.lists(st.none() | st.sampled_from(["A", "B"]), min_size=len(rows), max_size=len(rows))
    )
    for chunk in flush(rows, variants=variants, step=step):
        keys = chunks.unpack(chunk.keys, chunk.details)
        want = {seq: variants[seq - 1] for seq in keys.seqs.tolist()}
        got = keys.details.get("variant")
        assert (got.tolist() if got is not None else [None] * len(keys)) == [
            want[seq] for seq in keys.seqs.tolist()
        ]
        records = msgspec.json.decode(chunk.records)
        assert [r[-1] for r in records] == [want[r[2]] for r in records]


@given(events, events)
def test_merge_holds_both_chunks(first, second) -> None:  # type: ignore[no-untyped-def]
    # The second flush ran during an experiment: its events carry their seq as variant.
    during = [f"v{1000 + i}" for i in range(len(second))]
    parts = [
        c for c in flush(first) + flush(second, 1000, during) if c.user_id == "a"
    ]  # fmt: skip
    if not parts:
        return
    merged = chunks.merge("a", [(c.keys, c.records, c.details) for c in parts])
    keys = chunks.unpack(merged.keys)
    want = sorted(
        (t, s)
        for c in parts
        for t, s in zip(
            *[chunks.unpack(c.keys).timestamps.tolist(), chunks.unpack(c.keys).seqs.tolist()],
            strict=True,
        )
    )
    assert list(zip(keys.timestamps.tolist(), keys.seqs.tolist(), strict=True)) == want
    assert merged.count == len(want) == len(msgspec.json.decode(merged.records))
    assert merged.first_seq == min(s for _, s in want)
    details = chunks.unpack(merged.keys, merged.details).row_details()
    assert details == [{"variant": f"v{s}"} if s >= 1000 else {} for _, s in want]
    assert (merged.details is None) == (not any(details))


@settings(max_examples=200)
@given(
    st.lists(events, min_size=1, max_size=5),
    st.floats(-2e12, 2e12),
    st.floats(-2e12, 2e12),
    st.tuples(st.sampled_from([-3e12, 0.0, 1.5, 1e9]), st.integers(0, 200)),
    st.integers(0, 30),
)
def test_page_equals_a_sort_of_everything(flushes, low, high, after, limit) -> None:  # type: ignore[no-untyped-def]
    every = [c for k, rows in enumerate(flushes) for c in flush(rows, first_seq=1 + 100 * k)]
    mine = [c for c in every if c.user_id == "b"]
    blobs = {c.first_seq: c.keys for c in mine}
    refs = [ChunkRef(c.first_seq, c.min_ts, c.count) for c in mine]
    got = page(refs, lambda ids: [(blobs[i], None) for i in ids], None, low, high, after, limit)
    rows = sorted(
        (t, s, float(sc))
        for c in mine
        for t, s, sc in zip(
            *[getattr(chunks.unpack(c.keys), f).tolist() for f in ("timestamps", "seqs", "scores")],
            strict=True,
        )
        if low <= t <= high and (t, s) > after
    )[:limit]
    assert got == [(t, sc, s, {}) for t, s, sc in rows]
