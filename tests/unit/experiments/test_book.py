"""`ExperimentBook`: events with event types convert users, and a crash between saves loses no
count (the log's tail after the save's mark is observed again), on a real SQLite store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.events import EventBatch
from streamscore.experiments.book import ExperimentBook, ExperimentObserver
from streamscore.experiments.experiment import Experiment, Variant
from streamscore.store import log_codec
from streamscore.store.open import open_store
from streamscore.windows.event_time import StreamClock

VARIANTS = [Variant("control", "default@aa", 0.5), Variant("treatment", "m2@bb", 0.5)]
OUTCOME = {"event_type": "purchase"}
CLOCK = StreamClock(300.0)


def event_batch(rows: list[tuple[str, float, str | None]]) -> EventBatch:
    n = len(rows)
    return EventBatch(
        [r[0] for r in rows],
        np.array([r[1] for r in rows]),
        np.zeros((n, 1)),
        [None] * n,
        np.arange(n),
        event_types=[r[2] for r in rows],
    )


def logged(batch: EventBatch, scores: np.ndarray) -> log_codec.LoggedBatch:
    return log_codec.decode(
        log_codec.encode(
            batch.user_ids, batch.event_ids, batch.timestamps, scores, batch.features,
            event_types=batch.event_types,
        )
    )  # fmt: skip


def test_events_with_types_convert_users_through_the_commit_observer(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'events.db'}", 5.0)
    book = ExperimentBook(store)
    book.start("buy", VARIANTS, OUTCOME, events_total=0)
    observer = ExperimentObserver(book, lambda: 4)
    rows = [("a", 1.0, "view"), ("a", 2.0, "purchase"), ("b", 1.0, "purchase"), ("b", 0.5, None)]
    events = event_batch(rows)
    observer.observe(events, events.features.astype(np.float32), np.ones(4, np.float32), CLOCK)
    result = book.result("buy")
    assert result is not None
    by_user = {u: VARIANTS[book.running.assign([u])[0]].name for u in "ab"}  # type: ignore[union-attr]
    conversions = {v["name"]: v["conversions"] for v in result["variants"]}
    assert conversions[by_user["a"]] >= 1  # a bought after their first event
    assert sum(conversions.values()) == 1  # b's only later event is not a purchase
    store.close()


batches = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from([f"u{i}" for i in range(12)]),
            st.floats(0, 100, allow_nan=False),
            st.sampled_from(["view", "purchase", None]),
        ),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(batches, st.data())
def test_a_crash_between_saves_loses_no_count(groups: list, data: st.DataObject) -> None:
    crash_after = data.draw(st.integers(0, len(groups)))
    saved_after = data.draw(st.integers(0, crash_after))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'events.db'}", 5.0)
        book = ExperimentBook(store)
        book.start("exp", VARIANTS, OUTCOME, events_total=0)
        oracle = Experiment("exp", VARIANTS, OUTCOME)
        log, total = [], 0
        for k, rows in enumerate(groups):
            batch = event_batch(rows)
            scores = np.arange(len(rows), dtype=np.float32)
            log.append(logged(batch, scores))
            total += len(rows)
            oracle.observe(batch.user_ids, batch.timestamps, batch.event_types or [], scores)
            if k < crash_after:  # acknowledged, then observed, before the crash
                book.observe(batch, scores, total)
            if k + 1 == saved_after:
                book.save(total)
        restarted = ExperimentBook(store)  # what the last save kept
        restarted.replay(iter(log), total)
        assert restarted.result("exp") == oracle.result()
        store.close()
