"""Value rules that types cannot express, checked on whole columns at once.

Timestamps must be on or after 2000-01-01 and at most `max_future_skew` seconds ahead of the
wall clock, so one event from a broken clock cannot jump stream time and empty every window.
Features must survive the cast to float32, which the model consumes. Ids must not contain
NUL, which PostgreSQL text cannot hold, nor may event types or attribute names and values:
both stores accept exactly the same events. User ids
starting with `SIMULATED_PREFIX` belong to the built-in simulator: real events may not use
them, so simulated traffic can never mix with, or be mistaken for, a real user's.
"""

from __future__ import annotations

import msgspec
import numpy as np

from streamscore.events import SIMULATED_PREFIX, EventBatch, Rejection

EPOCH_2000 = 946_684_800.0


def _has_nul(ids: list[str] | list[str | None]) -> np.ndarray:
    """Which ids contain NUL; one scan of the joined text in the usual case that none does."""
    if "\0" not in "".join(filter(None, ids)):  # type: ignore[arg-type]
        return np.zeros(len(ids), dtype=bool)
    return np.array([i is not None and "\0" in i for i in ids], dtype=bool)


def _text_has_nul(batch: EventBatch) -> np.ndarray:
    """Which events carry NUL in their event type or attributes (one scan when none does)."""
    n = len(batch)
    found = np.zeros(n, dtype=bool)
    if batch.event_types is not None:
        found |= _has_nul(batch.event_types)
    if batch.attributes is not None and b"\\u0000" in msgspec.json.encode(batch.attributes):
        found |= np.array([b"\\u0000" in msgspec.json.encode(a) for a in batch.attributes])
    return found


def _reserved(user_ids: list[str]) -> np.ndarray:
    """Which user ids are in the simulator's namespace; one scan in the usual case."""
    if SIMULATED_PREFIX not in "\0".join(user_ids):
        return np.zeros(len(user_ids), dtype=bool)
    return np.array([u.startswith(SIMULATED_PREFIX) for u in user_ids], dtype=bool)


def validate(
    batch: EventBatch, now: float, max_future_skew: float, reserved_ok: bool = False
) -> tuple[EventBatch, list[Rejection]]:
    """The events that pass every rule, and a rejection (first failed rule) for each other;
    `reserved_ok` admits the simulator's user ids."""
    ts = batch.timestamps
    too_old = ts < EPOCH_2000
    too_new = ts > now + max_future_skew
    with np.errstate(over="ignore", invalid="ignore"):
        bad_features = ~np.isfinite(batch.features.astype(np.float32)).all(axis=1)
    bad_ids = _has_nul(batch.user_ids) | _has_nul(batch.event_ids) | _text_has_nul(batch)
    reserved = np.zeros(len(ts), dtype=bool) if reserved_ok else _reserved(batch.user_ids)
    bad = too_old | too_new | bad_features | bad_ids | reserved
    if not bad.any():
        return batch, []
    rejections = []
    for pos in np.flatnonzero(bad):
        if too_old[pos]:
            kind, reason = "timestamp_too_old", "timestamp is before 2000-01-01T00:00:00Z"
        elif too_new[pos]:
            kind = "timestamp_in_future"
            reason = f"timestamp is more than {max_future_skew:g} s ahead of the server clock"
        elif bad_ids[pos]:
            kind, reason = (
                "id_invalid",
                "user_id, event_id, event_type and attributes must not contain NUL characters",
            )
        elif reserved[pos]:
            kind = "user_id_reserved"
            reason = f"user_id prefix {SIMULATED_PREFIX!r} is reserved for the simulator"
        else:
            kind, reason = (
                "features_out_of_range",
                "features must be finite numbers within float32 range",
            )
        event = {
            "user_id": batch.user_ids[pos],
            "timestamp": float(ts[pos]),
            "features": batch.features[pos].tolist(),
            "event_id": batch.event_ids[pos],
        }
        if batch.event_types is not None and batch.event_types[pos] is not None:
            event["event_type"] = batch.event_types[pos]
        if batch.attributes is not None and batch.attributes[pos] is not None:
            event["attributes"] = batch.attributes[pos]
        rejections.append(
            Rejection(int(batch.index[pos]), reason, msgspec.json.encode(event), kind)
        )
    return batch.select(~bad), rejections
