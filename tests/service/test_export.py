"""History out: the store scan and the export files against the batches written (both stores,
chunked and not yet chunked), `streamscore export` and `GET /export` against a real server, and
a round trip: re-ingesting an export into a fresh server gives identical medians and histories.

STREAMSCORE_LONG=1 adds the bounded-memory run: a generated store of
STREAMSCORE_EXPORT_EVENTS (default 20,000,000) events exported by a child process whose peak
RSS must stay under 500 MB.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from bench.run import build_history_store
from streamscore.client import Client
from streamscore.history import export
from streamscore.store import log_codec
from streamscore.store.base import Store
from streamscore.store.postgres import PostgresStore
from streamscore.store.sqlite import SQLiteStore

from ..conftest import LONG, Server, create_database, drop_database, wait_until

NOW = time.time()


@pytest.fixture
def store(tmp_path: Path, store_kind: str) -> Iterator[Store]:
    if store_kind == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "events.db")
        yield opened
        opened.close()
        return
    url = create_database()
    opened = PostgresStore(url)
    yield opened
    opened.close()
    drop_database(url)


def batch(rng: random.Random, n: int, described: bool) -> dict:
    """The columns of one logged batch: a few users, close timestamps (ties included)."""
    users = [f"u{rng.randrange(5)}" for _ in range(n)]
    columns: dict = {
        "user_ids": users,
        "event_ids": [rng.choice([None, f"e{rng.random()}"]) for _ in range(n)],
        "timestamps": np.array([NOW - rng.randrange(200) / 2 for _ in range(n)]),
        "scores": np.array([rng.random() for _ in range(n)], np.float32),
        "features": np.array([[rng.random(), -1.5, 1e-300] for _ in range(n)]),
    }
    if described:
        columns["event_types"] = [rng.choice([None, "click", "buy"]) for _ in range(n)]
        columns["attributes"] = [
            rng.choice([None, {"n": 2, "s": "x", "b": True}]) for _ in range(n)
        ]
        columns["variants"] = [rng.choice([None, "a", "b"]) for _ in range(n)]
    return columns


def expected_rows(written: list[tuple[int, int, dict]], versions: dict[int, str]) -> list[dict]:
    """The oracle: every event written, as an export row."""
    rows = []
    for first_seq, model_id, b in written:
        for i, user in enumerate(b["user_ids"]):
            attributes = b.get("attributes", [None] * len(b["user_ids"]))[i]
            rows.append(
                {
                    "user_id": user,
                    "timestamp": float(b["timestamps"][i]),
                    "seq": first_seq + i,
                    "event_id": b["event_ids"][i],
                    "event_type": b.get("event_types", [None] * (i + 1))[i],
                    "attributes": None if attributes is None else attributes,
                    "features": b["features"][i].tolist(),
                    "score": float(b["scores"][i]),
                    "model_version": versions[model_id],
                    "variant": b.get("variants", [None] * (i + 1))[i],
                }
            )
    return sorted(rows, key=lambda r: r["seq"])


def normalized(rows: list[dict]) -> list[dict]:
    """Rows of any export format in seq order, attributes parsed, features as lists."""
    out = []
    for row in rows:
        row = dict(row)
        for name in ("attributes", "features"):
            if isinstance(row.get(name), str):
                row[name] = json.loads(row[name])
        for name in ("event_id", "event_type", "attributes", "variant"):
            row.setdefault(name, None)
        out.append(row)
    return sorted(out, key=lambda r: r["seq"])


def read_csv(path: Path) -> list[dict]:
    """CSV as written, strings kept (an empty cell of a string column is null)."""
    options = pa_csv.ConvertOptions(column_types=export.CSV_SCHEMA, strings_can_be_null=True)
    return pa_csv.read_csv(path, convert_options=options).to_pylist()


def test_export_matches_every_written_event_chunked_or_not(
    store: Store, tmp_path: Path, store_kind: str
) -> None:
    rng = random.Random(7)
    models = {store.register_model("m-old@1"), store.register_model("m-new@2")}
    versions = store.model_versions()
    assert set(versions) == models
    written, seq = [], 1
    for k in range(12):
        b = batch(rng, rng.randrange(1, 40), described=k % 3 != 0)
        model_id = sorted(models)[k % 2]
        store.append(seq, log_codec.encode(**b), model_id, 0, 0, NOW, len(b["user_ids"]))
        written.append((seq, model_id, b))
        seq += len(b["user_ids"])
        if k == 7:  # batches 0-7 become chunks; 8-11 stay in the log (the tail)
            while store.index_pending():
                pass
    assert store.indexed_seq < seq - 1
    want = expected_rows(written, versions)

    assert normalized(_all(store)) == want
    since, until = NOW - 60, NOW - 20
    inside = [r for r in want if since <= r["timestamp"] <= until and r["user_id"] in ("u1", "u3")]
    assert 0 < len(inside) < len(want)
    assert normalized(_all(store, since, until, ["u1", "u3"])) == inside

    out = tmp_path / "out.parquet"
    assert export.write(store, out, "parquet", -np.inf, np.inf) == len(want)
    assert pq.read_schema(out) == export.SCHEMA
    assert normalized(pq.read_table(out).to_pylist()) == want
    assert export.write(store, tmp_path / "out.csv", "csv", since, until, ["u1", "u3"]) == len(
        inside
    )
    assert normalized(read_csv(tmp_path / "out.csv")) == inside


def _all(store: Store, since: float = -np.inf, until: float = np.inf, users=None) -> list[dict]:  # type: ignore[no-untyped-def]
    lines = b"".join(export.ndjson(store, since, until, users)).splitlines()
    return [msgspec.json.decode(line) for line in lines]


def test_an_empty_range_writes_an_empty_file_with_the_schema(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    assert export.write(store, out, "parquet", 0.0, 1.0) == 0
    assert pq.read_table(out).schema == export.SCHEMA and pq.read_table(out).num_rows == 0


def test_an_export_during_ingest_and_chunking_is_one_consistent_snapshot(store: Store) -> None:
    """While batches are logged, chunked, compacted and truncated, every export holds exactly
    the events of seqs 1..K for some K: none twice, none missing."""
    rng = random.Random(11)
    model_id = store.register_model("m@1")
    done, stop = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        seq = 1
        try:
            for _ in range(150):
                if stop.is_set():
                    return
                b = batch(rng, 20, described=False)
                store.append(seq, log_codec.encode(**b), model_id, 0, 0, NOW, 20)
                seq += 20
                store.truncate_log(seq)
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    def index() -> None:
        try:
            while not done.is_set():
                store.index_pending()
                store.compact()
                time.sleep(0.001)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=index)]
    for thread in threads:
        thread.start()
    sizes = []
    try:
        while not done.is_set():
            seqs = sorted(r["seq"] for r in _all(store))
            assert seqs == list(range(1, len(seqs) + 1))
            sizes.append(len(seqs))
    finally:  # the store closes after the test: its threads must be done by then
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures
    assert len(set(sizes)) > 2  # exports did overlap the writes
    assert sorted(r["seq"] for r in _all(store)) == list(range(1, 150 * 20 + 1))


def events_for(users: int, per_user: int, seed: int) -> list[dict]:
    """Events with timestamp ties and out-of-order arrival, half with event ids."""
    rng = random.Random(seed)
    events = []
    for u in range(users):
        for k in range(per_user):
            event = {
                "user_id": f"user-{u}",
                "timestamp": NOW - 100 + rng.randrange(60) / 4,
                "features": [rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(-2, 2)],
            }
            if k % 2:
                event["event_id"] = f"user-{u}-{k}"
            events.append(event)
    rng.shuffle(events)
    return events


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamscore", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(server: Server, users: list[str]) -> dict[str, tuple]:
    """Each user's median and count, and history as (timestamp, score) pairs."""
    with Client(server.url) as client:
        assert wait_until(lambda: client.stats().index_lag_events == 0)
        result = {}
        for user in users:
            median = client.median(user)
            history = [(p.timestamp, p.score) for p in client.history(user)]
            result[user] = (median.median, median.count, history)
    return result


def test_export_round_trips_through_a_fresh_server(
    server_factory, tmp_path: Path, store_kind: str
) -> None:  # type: ignore[no-untyped-def]
    source = server_factory("source", store_kind=store_kind, index_interval=0.2)
    events = events_for(users=6, per_user=60, seed=3)
    with Client(source.url, batch_size=50) as client:
        assert client.ingest(events).processed == len(events)
    users = sorted({e["user_id"] for e in events})
    before = snapshot(source, users)
    assert all(count == 60 for _, count, _ in before.values())

    lines = httpx.get(source.url + "/export", params={"since": 0, "until": 2e9}, timeout=60)
    assert lines.status_code == 200
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    served = normalized([json.loads(line) for line in lines.text.splitlines()])
    assert len(served) == len(events)
    one_user = httpx.get(
        source.url + "/export", params={"since": 0, "until": 2e9, "users": "user-2"}
    )
    assert normalized([json.loads(x) for x in one_user.text.splitlines()]) == [
        r for r in served if r["user_id"] == "user-2"
    ]

    store_url = str(source.options["store"])
    if store_kind == "postgresql":  # the service holds the database: export it stopped
        source.stop()
    parquet, csv = tmp_path / "h.parquet", tmp_path / "h.csv"
    for out in (parquet, csv):
        done = cli("export", "--store", store_url, "--out", str(out), "--quiet")
        assert done.returncode == 0, done.stderr
    rows = pq.read_table(parquet).to_pylist()
    assert normalized(rows) == served
    assert normalized(read_csv(csv)) == served

    rows.sort(key=lambda r: (r["timestamp"], r["seq"]))  # the order the source saw them in
    replay = [
        {"user_id": r["user_id"], "timestamp": r["timestamp"], "features": r["features"]}
        | ({"event_id": r["event_id"]} if r["event_id"] else {})
        for r in rows
    ]
    same_model = {"model": source.options["model"]} if store_kind == "postgresql" else {}
    target = server_factory("target", store_kind=store_kind, **same_model)
    with Client(target.url, batch_size=50) as client:
        assert client.ingest(replay).processed == len(events)
    after = snapshot(target, users)
    for user in users:  # identical events scored again, in other batches: identical scores
        assert after[user] == before[user]
    again = httpx.get(target.url + "/export", params={"since": 0, "until": 2e9}, timeout=60)
    replayed = sorted(map(json.loads, again.text.splitlines()), key=lambda r: r["seq"])
    assert [(r["seq"], _unscored(r)) for r in replayed] == [
        (seq, _unscored(r)) for seq, r in enumerate(rows, replayed[0]["seq"])
    ]


def _unscored(row: dict) -> tuple:
    return (row["user_id"], row["timestamp"], row["features"], row.get("event_id"))


@pytest.mark.serial  # run alone (scripts/test): it measures the exporter's memory
@pytest.mark.skipif(not LONG, reason="STREAMSCORE_LONG=1: builds a large store")
def test_a_large_store_exports_in_bounded_memory(tmp_path: Path) -> None:
    events = int(os.environ.get("STREAMSCORE_EXPORT_EVENTS", 20_000_000))
    path = tmp_path / "events.db"
    build_history_store(path, events, per_user=1000)
    out = tmp_path / "all.parquet"
    # VmHWM, the peak of this process's own memory: ru_maxrss would count the forked parent's.
    code = (
        "import re, sys; from streamscore.cli import main; "
        f"rc = main(['export', '--store', 'sqlite:///{path}', '--out', '{out}', '--quiet']); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); sys.exit(rc)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    rss_mb = int(done.stdout.split()[-1]) / 1024
    print(f"\nexported {events:,} events in {seconds:.0f} s, peak RSS {rss_mb:.0f} MB")
    assert pq.ParquetFile(out).metadata.num_rows == events
    assert rss_mb < 500
