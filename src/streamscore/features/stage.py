"""The feature engine inside the service: fed by the commit step, checkpointed, versioned.

- **Updates.** `update(events, scores, clock)` is a `WindowedStatistic`: the commit step calls
  it after the durable write and before the acks, so a read after a 2xx sees the request's
  events. It counts the store's seqs as it goes (one per committed event), which is how every
  engine knows exactly which stored events it holds.
- **Versions.** The fingerprint of every version ever declared is kept in the store
  (`features.fingerprints`); starting with a changed definition of one of them raises
  `VersionChanged` (`serve` exits 2 with its message). A version seen for the first time on a
  store that already has events is **backfilled** in a background thread from
  `store.scan` (seq order, so it equals what streaming would have computed), then catches up
  with the live stream under the update lock and goes live; until then its reads answer
  `NotReady` with the progress.
- **Checkpoints.** Versions are computed by groups (one `FeatureEngine` each: all versions of
  the first start, then each backfilled batch of new versions). Every `checkpoint_every`
  seconds a background thread saves each changed group's state with the seq it covers,
  holding the update lock only while the engine's arrays are copied
  (`FeatureEngine.snapshot`); the copy is encoded and written after. Checkpoints are
  **incremental**: a whole base (`features.checkpoint.<versions>`), then deltas holding only
  the users updated since the previous checkpoint (`...delta1`, `...delta2`, ...), each tagged
  with its base's id. A new base is written once the deltas add up to the base's size (or
  after `MAX_DELTAS`), so a restart reads at most about twice the state. A restart restores
  the base, lays the deltas of that base over it in order, and replays only the events after
  the last one's seq. A failed save makes the next checkpoint a whole base again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily

from streamscore.events import EventBatch
from streamscore.features.definitions import FeatureDefinitions
from streamscore.features.engine import FeatureEngine, encode_checkpoint
from streamscore.store.base import Store
from streamscore.store.log_codec import LoggedBatch

log = logging.getLogger(__name__)

FINGERPRINTS = "features.fingerprints"
GROUPS = "features.groups"
MAX_DELTAS = 64  # delta checkpoints before a new base, at most
SLICE = 2048  # events per engine update (and per hold of its lock)
CATCH_UP = 20_000  # events a backfill may still trail by when it takes the update lock


class VersionChanged(ValueError):
    """A declared version's definition differs from the one the store computed before."""


class NotReady(RuntimeError):
    """The version is still being backfilled (503 with its progress)."""


@dataclass
class Group:
    """One engine computing some versions, holding every stored event up to `seq`."""

    engine: FeatureEngine
    seq: int
    live: bool
    backfill_total: int = 0  # events to backfill (0: none)
    backfill_done: int = 0
    saved_seq: int = -1  # the seq of its last checkpoint
    base_id: int = 0  # of its last whole checkpoint (0: none yet: the next one is whole)
    base_bytes: int = 0
    deltas: int = 0  # delta checkpoints saved over that base
    delta_bytes: int = 0
    error: str | None = None
    versions: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return "features.checkpoint." + "+".join(sorted(self.versions))


def _columns(n: int, batch: EventBatch | LoggedBatch) -> tuple[list, list]:
    types = batch.event_types if batch.event_types is not None else [None] * n
    attrs = batch.attributes if batch.attributes is not None else [None] * n
    return types, attrs


def feed(engine: FeatureEngine, batch: EventBatch | LoggedBatch, scores: np.ndarray) -> None:
    """In slices of `SLICE` events: readers wait for the engine's lock one slice at most."""
    n = len(batch.user_ids)
    types, attrs = _columns(n, batch)
    for lo in range(0, n, SLICE):
        hi = min(n, lo + SLICE)
        engine.update(
            batch.user_ids[lo:hi], batch.timestamps[lo:hi], types[lo:hi], attrs[lo:hi],
            scores[lo:hi],
        )  # fmt: skip


def replay(engine: FeatureEngine, store: Store, after: int, until: int) -> int:
    """Feed `engine` the stored events with `after < seq <= until`; returns how many."""
    count = 0
    for _, batch in store.scan(after, until):
        feed(engine, batch, batch.scores)
        count += len(batch.user_ids)
    return count


def check_versions(definitions: FeatureDefinitions, store: Store) -> dict[str, str]:
    """Refuse a changed definition of a version the store knows; record the new ones."""
    raw = store.load_state(FINGERPRINTS)
    known: dict[str, str] = json.loads(raw) if raw else {}
    for version in definitions.versions:
        mine = definitions.fingerprint(version)
        if known.get(version, mine) != mine:
            raise VersionChanged(
                f"feature version {version!r} changed since this store computed it "
                f"(fingerprint {known[version]}, now {mine}): declare the new definition "
                f"under a new version instead, and pin clients to it with ?version="
            )
        known[version] = mine
    store.save_state(FINGERPRINTS, json.dumps(known, sort_keys=True).encode())
    return known


def save_group(store: Store, group: Group, data: bytes, seq: int, delta: bool = False) -> None:
    """Save a checkpoint of `group` covering the stored events up to `seq`: a whole base
    (a new base id), or the next delta over the group's current base."""
    if delta:
        group.deltas += 1
        key = f"{group.key}.delta{group.deltas}"
    else:
        group.base_id, group.deltas, group.delta_bytes = time.time_ns(), 0, 0
        key = group.key
    store.save_state(key, seq.to_bytes(8, "little") + group.base_id.to_bytes(8, "little") + data)
    if delta:
        group.delta_bytes += len(data)
        return
    group.base_bytes = len(data)
    raw = store.load_state(GROUPS)
    groups: list[list[str]] = json.loads(raw) if raw else []
    mine = sorted(group.versions)
    if mine not in groups:
        # A version lives in one group only: a newer checkpoint of it supersedes older groups.
        groups = [g for g in groups if not set(g) & set(mine)] + [mine]
        store.save_state(GROUPS, json.dumps(groups).encode())


def _unpack(blob: bytes) -> tuple[int, int, bytes]:
    """(seq, base id, checkpoint); a checkpoint of the release before deltas has no base id
    (its data, a NumPy zip, follows the seq at once)."""
    seq = int.from_bytes(blob[:8], "little")
    if blob[8:10] == b"PK":
        return seq, 0, blob[8:]
    return seq, int.from_bytes(blob[8:16], "little"), blob[16:]


def load_group(store: Store, group: Group) -> int | None:
    """Restore `group`'s engine from its base and that base's deltas, in order; returns the
    seq it then covers (None: no usable checkpoint)."""
    blob = store.load_state(group.key)
    if blob is None:
        return None
    seq, base_id, data = _unpack(blob)
    try:
        group.engine.restore(data)
    except ValueError as exc:
        log.warning("feature checkpoint %s not restored: %s", group.key, exc)
        return None
    group.base_id, group.base_bytes = base_id, len(data)
    while base_id and (blob := store.load_state(f"{group.key}.delta{group.deltas + 1}")):
        delta_seq, delta_base, data = _unpack(blob)
        if delta_base != base_id or delta_seq < seq:
            break  # left over from an earlier base
        group.engine.apply_delta(data)
        group.deltas, group.delta_bytes, seq = (
            group.deltas + 1,
            group.delta_bytes + len(data),
            delta_seq,
        )
    return seq


class FeatureStage:
    """Every declared version, computed from the commit step and served to the API."""

    def __init__(
        self,
        definitions: FeatureDefinitions,
        store: Store,
        default_version: str | None = None,
        checkpoint_every: float = 30.0,
    ) -> None:
        self.definitions = definitions
        self.store = store
        self.default_version = default_version or definitions.versions[-1]
        definitions[self.default_version]  # raises KeyError for an undeclared one
        self.checkpoint_every = checkpoint_every
        self.fingerprints = check_versions(definitions, store)
        self.lock = threading.Lock()  # orders updates, backfill catch-up and checkpoints
        self.seq = store.last_seq()
        self.replayed = 0
        self.groups: list[Group] = []
        self._saving = threading.Lock()  # one checkpoint at a time (periodic, backfill, close)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        started = time.perf_counter()
        self._restore()
        self.restore_seconds = time.perf_counter() - started

    def _restore(self) -> None:
        remaining = list(self.definitions.versions)
        raw = self.store.load_state(GROUPS)
        for versions in json.loads(raw) if raw else []:
            if not set(versions) <= set(remaining):
                continue  # a version left the file: what is left of the group is backfilled
            group = Group(FeatureEngine(self.definitions, versions), 0, True, versions=versions)
            seq = load_group(self.store, group)
            if seq is None:
                continue
            self.replayed += replay(group.engine, self.store, seq, self.seq)
            group.seq = group.saved_seq = self.seq
            self.groups.append(group)
            remaining = [v for v in remaining if v not in versions]
        if remaining:
            versions = tuple(remaining)
            group = Group(FeatureEngine(self.definitions, versions), 0, False, versions=versions)
            if self.seq == 0:  # nothing stored yet: nothing to backfill
                group.live = True
            else:
                group.backfill_total = self.seq
            self.groups.append(group)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for group in self.groups:
            if not group.live:
                self._spawn(f"backfill {'+'.join(group.versions)}", self._backfill, group)
        self._spawn("feature checkpoints", self._checkpoints)

    def backfill_now(self, version: str | None) -> None:
        """Backfill `version`'s group in this thread (before `start`: a model reading it)."""
        for group in self.groups:
            if (version or self.default_version) in group.versions and not group.live:
                self._backfill(group)

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads, then checkpoint once more (a clean restart replays nothing)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.checkpoint()

    # -------------------------------------------------------------- writes

    def update(self, events: EventBatch, scores: np.ndarray, clock: object) -> None:
        """The commit step's call, after the durable write of `events` (seqs follow on)."""
        with self.lock:
            n = len(events)
            if n:
                scores = np.asarray(scores, dtype=np.float64)
                for group in self.groups:
                    if group.live:
                        feed(group.engine, events, scores)
            self.seq += n
            for group in self.groups:
                if group.live:
                    group.seq = self.seq

    def _backfill(self, group: Group) -> None:
        """Stored history first, off the lock; the last stretch under it, then live."""
        started = time.perf_counter()
        try:
            while not self._stop.is_set():
                target = self.seq
                if target - group.seq <= CATCH_UP:
                    with self.lock:
                        group.backfill_done += replay(group.engine, self.store, group.seq, self.seq)
                        group.seq = self.seq
                        group.live = True
                    break
                for _, batch in self.store.scan(group.seq, target):
                    feed(group.engine, batch, batch.scores)
                    group.backfill_done += len(batch.user_ids)
                    if self._stop.is_set():
                        return
                group.seq = target
        except Exception as exc:  # reported in /features/versions, retried at the next start
            group.error = f"{type(exc).__name__}: {exc}"
            log.exception("feature backfill failed")
            return
        if group.live:
            log.info(
                "feature backfill done",
                extra={"versions": group.versions, "seconds": time.perf_counter() - started},
            )
            self.checkpoint()

    def _checkpoints(self) -> None:
        while not self._stop.wait(self.checkpoint_every):
            try:
                self.checkpoint()
            except Exception:  # the next period retries; a restart replays more meanwhile
                log.exception("feature checkpoint failed")

    def checkpoint(self) -> int:
        """Save every live group that changed since its last checkpoint; returns bytes saved."""
        saved = 0
        with self._saving:
            for group in self.groups:
                if not group.live or group.seq == group.saved_seq:
                    continue
                delta = bool(group.base_id) and (
                    group.delta_bytes < group.base_bytes and group.deltas < MAX_DELTAS
                )
                with self.lock:  # held for the copy only, not the encoding
                    snapshot, seq = group.engine.snapshot(delta), group.seq
                try:
                    data = encode_checkpoint(snapshot)
                    save_group(self.store, group, data, seq, delta)
                except Exception:
                    group.base_id = 0  # the snapshot forgot what changed: save all next time
                    raise
                group.saved_seq = seq
                saved += len(data)
        return saved

    # -------------------------------------------------------------- reads

    def engine(self, version: str | None) -> tuple[str, FeatureEngine]:
        """(version, its engine); KeyError if undeclared, NotReady while backfilling."""
        version = version or self.default_version
        for group in self.groups:
            if version in group.versions:
                if not group.live:
                    raise NotReady(
                        f"feature version {version!r} is being backfilled "
                        f"({100 * self._progress(group):.0f} % done); retry later"
                    )
                return version, group.engine
        raise KeyError(
            f"unknown feature version {version!r}; declared: {self.definitions.versions}"
        )

    def _progress(self, group: Group) -> float:
        if group.live:
            return 1.0
        return min(1.0, group.backfill_done / max(group.backfill_total, 1))

    def versions(self) -> dict[str, Any]:
        out = []
        for version in self.definitions.versions:
            group = next(g for g in self.groups if version in g.versions)
            out.append(
                {
                    "version": version,
                    "fingerprint": self.fingerprints[version],
                    "features": list(self.definitions[version].names),
                    "state": "failed" if group.error else "ready" if group.live else "backfilling",
                    "backfill": {
                        "progress": self._progress(group),
                        "events": group.backfill_done,
                        "total": group.backfill_total,
                        "error": group.error,
                    },
                }
            )
        return {"default": self.default_version, "versions": out}

    def memory_bytes(self) -> int:
        return sum(g.engine.memory_bytes() for g in self.groups)

    @property
    def users(self) -> int:
        return max((g.engine.users for g in self.groups), default=0)

    def collect(self) -> Iterator[object]:
        """Prometheus: backfill progress per version, users, memory."""
        progress = GaugeMetricFamily(
            "streamscore_features_backfill_progress",
            "share of stored events a version has computed (1 = live)",
            labels=["version"],
        )
        for version in self.definitions.versions:
            group = next(g for g in self.groups if version in g.versions)
            progress.add_metric([version], self._progress(group))
        yield progress
        yield GaugeMetricFamily(
            "streamscore_features_users", "users with feature state", value=self.users
        )
        yield GaugeMetricFamily(
            "streamscore_features_memory_bytes",
            "feature state in memory",
            value=self.memory_bytes(),
        )
