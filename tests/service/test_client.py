"""The Python client against real servers: results, errors by index, paging, retries through
rate limits, store failures and a `kill -9` mid-stream, asyncio equivalence, and import weight."""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamscore.client import (
    AsyncClient,
    Client,
    Event,
    EventError,
    RequestRejected,
    RetriesExhausted,
    Unauthorized,
)
from streamscore.client.stream import batches

from ..conftest import Server, store_lock, wait_until

DOC = Path(__file__).parents[2] / "docs" / "client.md"
README = Path(__file__).parents[2] / "README.md"


def event(user: str, ts: float, x: float = 0.5) -> dict:
    return {"user_id": user, "timestamp": ts, "features": [x, -x, 2 * x]}


def stored(server: Server, users: str = "%") -> tuple[int, int]:
    """Rows in the event store (of users LIKE `users`), and distinct event ids among them, once
    history caught up."""
    with Client(server.url) as client:
        assert wait_until(lambda: client.stats().index_lag_events == 0)
    ((rows, ids),) = server.query(
        f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE user_id LIKE '{users}'"
    )
    return rows, ids


def test_ingest_reports_bad_events_by_index_and_never_double_counts(
    server_factory, store_kind: str
) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_kind=store_kind)
    now = time.time()
    events: list = [event("u1", now), {"user_id": "u1", "timestamp": now, "features": [1.0]}]
    events += [Event("u2", now, [0.1, 0.2, 0.3]), {"timestamp": now, "features": [1, 2, 3]}]
    events += [event("u1", now - 1, 0.25)]
    with Client(server.url, batch_size=2) as client:  # three requests: indices must be shifted
        result = client.ingest(events)
        assert (result.processed, result.rejected, result.duplicates) == (3, 2, 0)
        assert [e.index for e in result.errors] == [1, 3]
        assert all(isinstance(e, EventError) and e.error for e in result.errors)
        assert "features" in result.errors[0].error and "user_id" in result.errors[1].error
        ids = [e["event_id"] if isinstance(e, dict) else e.event_id for e in events]
        assert len(set(ids)) == 5 and all(ids)
        # The ids were written into the caller's events: sending them again stores nothing.
        again = client.ingest(events)
        assert (again.processed, again.duplicates, again.rejected) == (0, 3, 2)
    assert stored(server) == (3, 3)


def test_history_iterates_across_pages_median_and_stats(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_kind=store_kind)
    now = time.time()
    sent = [event("pager", now - 100 + i, i / 10) for i in range(23)]
    with Client(server.url) as client:
        assert client.ingest(sent).processed == 23
        wait_until(lambda: client.stats().index_lag_events == 0)
        points = list(client.history("pager", page_size=5))
        assert [p.timestamp for p in points] == [e["timestamp"] for e in sent]
        rows = server.query("SELECT timestamp, score FROM events WHERE user_id = 'pager'")
        assert sorted((p.timestamp, p.score) for p in points) == sorted(rows)
        window = list(client.history("pager", since=now - 90, until=now - 85, page_size=2))
        assert [p.timestamp for p in window] == [now - 100 + i for i in range(10, 16)]
        median = client.median("pager")
        assert median.count == 23
        assert median.median == pytest.approx(statistics.median(s for _, s in rows))
        assert client.median("nobody").median is None
        stats = client.stats()
        assert stats.event_count == 23 and stats.users_tracked == 1
        assert stats.ingest_requests == 1


@pytest.mark.serial  # run alone (scripts/test): it times the rate limit's refill
def test_rides_out_rate_limits_and_refuses_bad_keys(server_factory, caplog) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(api_keys="KEY", rate_limit=200, rate_burst=200)
    now = time.time()
    events = [event(f"r{i % 7}", now - i / 1000) for i in range(600)]
    with (
        caplog.at_level(logging.WARNING, logger="streamscore.client"),
        Client(server.url, api_key="KEY", batch_size=200) as client,
    ):
        started = time.monotonic()
        assert client.ingest(events).processed == 600
        assert time.monotonic() - started > 1.0  # 200 events/s: the bucket refilled twice
    assert any("429" in r.getMessage() for r in caplog.records)
    assert stored(server) == (600, 600)
    for key in (None, "WRONG"):
        with Client(server.url, api_key=key) as client:
            started = time.monotonic()
            with pytest.raises(Unauthorized) as refused:
                client.ingest(events[:1])
            assert refused.value.status == 401 and time.monotonic() - started < 1.0


@pytest.mark.serial  # run alone (scripts/test): it times the give-up
def test_rides_out_a_failing_store_then_gives_up_in_time(server_factory, caplog) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_timeout=0.3)
    now = time.time()

    def hold_lock(seconds: float, locked: threading.Event) -> None:
        with store_lock(server):
            locked.set()
            time.sleep(seconds)

    with Client(server.url) as client:
        locked = threading.Event()
        holder = threading.Thread(target=hold_lock, args=(2.0, locked))
        holder.start()
        locked.wait()
        with caplog.at_level(logging.WARNING, logger="streamscore.client"):
            assert client.ingest([event("s", now, 0.1), event("s", now, 0.2)]).processed == 2
        holder.join()
        assert any("503" in r.getMessage() for r in caplog.records)

    with Client(server.url, retry_for=1.5) as client:
        locked = threading.Event()
        holder = threading.Thread(target=hold_lock, args=(3.0, locked))
        holder.start()
        locked.wait()
        started = time.monotonic()
        with pytest.raises(RetriesExhausted) as exhausted:
            client.ingest([event("s", now, 0.3)])
        assert time.monotonic() - started < 2.5
        assert exhausted.value.attempts >= 2 and exhausted.value.last.status == 503  # type: ignore[attr-defined]
        holder.join()
        assert client.ingest([event("s", now, 0.3)]).processed == 1  # the refused id: retryable
    assert stored(server) == (3, 3)


def test_kill_9_mid_stream_stores_every_event_exactly_once(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_kind=store_kind)
    total, kill_at = 6000, 2500
    restarted = threading.Event()

    def source() -> Iterator[dict]:
        now = time.time()
        for i in range(total):
            if i == kill_at:  # batches are in flight: kill, and come back a little later
                server.kill()
                threading.Thread(target=lambda: (server.start(), restarted.set())).start()
            yield event(f"k{i % 50}", now - (i % 100) / 100, (i % 13) / 13)

    with Client(server.url, batch_size=250, linger=0.01, timeout=10) as client:
        result = client.ingest_stream(source())
    assert restarted.is_set()
    assert result.rejected == 0
    assert result.processed + result.duplicates == total
    assert stored(server) == (total, total)


def test_stream_error_indices_count_from_the_start_of_the_stream(module_server: Server) -> None:
    server = module_server
    now = time.time()
    bad = {7, 12, 29}
    events = ({"user_id": "x"} if i in bad else event("st", now - i / 100) for i in range(40))
    with Client(server.url) as client:
        result = client.ingest_stream(events, batch_size=10)
    assert (result.processed, result.rejected) == (37, 3)
    assert [e.index for e in result.errors] == sorted(bad)
    with Client(server.url) as client, pytest.raises(RequestRejected) as refused:
        list(client.history("st", page_size=0))  # a 4xx other than 429: raised at once
    assert refused.value.status == 422


def test_linger_sends_a_partial_batch_while_the_source_waits() -> None:
    def slow() -> Iterator[int]:
        yield from range(5)
        time.sleep(0.4)
        yield from range(5, 8)

    assert [len(b) for b in batches(slow(), size=100, linger=0.05)] == [5, 3]

    def failing() -> Iterator[int]:
        yield from range(3)
        raise ValueError("source broke")

    seen: list[list[int]] = []
    with pytest.raises(ValueError, match="source broke"):
        for batch in batches(failing(), size=2, linger=0.01):
            seen.append(batch)
    assert [x for batch in seen for x in batch] == [0, 1, 2]


def test_async_client_matches_the_sync_client(module_server: Server) -> None:
    server = module_server
    now = time.time()
    events = [event(f"a{i % 3}", now - i / 10, i / 40) for i in range(30)]
    events[4] = {"user_id": "a0", "timestamp": "soon", "features": [0, 0, 0]}

    async def use() -> tuple:
        async def source():  # an async iterable with pauses
            for e in events[15:]:
                await asyncio.sleep(0.001)
                yield dict(e)

        async with AsyncClient(server.url, batch_size=4) as client:
            first = await client.ingest([dict(e) for e in events[:15]])
            second = await client.ingest_stream(source())
            while (await client.stats()).index_lag_events:
                await asyncio.sleep(0.05)
            history = [p async for p in client.history("a1", page_size=3)]
            return first, second, history, await client.median("a1"), await client.stats()

    first, second, history, median, stats = asyncio.run(use())
    assert (first.processed, [e.index for e in first.errors]) == (14, [4])
    assert (second.processed, second.errors) == (15, [])
    with Client(server.url) as client:
        assert list(client.history("a1", page_size=100)) == history
        assert client.median("a1") == median
        assert stored(server, "a_") == (29, 29)
        assert stats.event_count >= 29
        again = client.ingest_stream(iter(events))  # new ids: the same events stored again
        assert (again.processed, again.rejected) == (29, 1)


def test_importing_the_client_stays_light() -> None:
    code = (
        "import sys, streamscore.client\n"
        "heavy = {'torch', 'numpy', 'fastapi', 'starlette', 'pydantic', 'scipy', 'uvicorn'}\n"
        "loaded = {m.split('.')[0] for m in sys.modules} & heavy\n"
        "ours = {m for m in sys.modules if m.startswith('streamscore.')}\n"
        "print(sorted(loaded), sorted(m for m in ours if not m.startswith('streamscore.client')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


def test_the_documented_example_runs_as_written(module_server: Server, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    server = module_server
    (example,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(example.strip().splitlines()) <= 15
    readme = [
        b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "Client" in b
    ]
    assert readme == [example], "the README shows the same example"
    monkeypatch.setenv("STREAMSCORE_URL", server.url)
    exec(compile(example, str(DOC), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1 []" and lines[1] == "10000"
    assert lines[2].startswith("Median(user_id='user-1', median=") and "count=101" in lines[2]
    assert lines[3] == "101"
    assert stored(server, "user-%") == (10_001, 10_001)
