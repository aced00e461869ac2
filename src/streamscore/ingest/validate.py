"""Value rules that types cannot express, checked on whole columns at once.

Timestamps must be on or after 2000-01-01 and at most `max_future_skew` seconds ahead of the
wall clock, so one event from a broken clock cannot jump stream time and empty every window.
Features must survive the cast to float32, which the model consumes. Ids must not contain
NUL, which PostgreSQL text cannot hold: both stores accept exactly the same events.
"""

from __future__ import annotations

import msgspec
import numpy as np

from streamscore.batch import EventBatch, Rejection

EPOCH_2000 = 946_684_800.0


def _has_nul(ids: list[str] | list[str | None]) -> np.ndarray:
    """Which ids contain NUL; one scan of the joined text in the usual case that none does."""
    if "\0" not in "".join(filter(None, ids)):  # type: ignore[arg-type]
        return np.zeros(len(ids), dtype=bool)
    return np.array([i is not None and "\0" in i for i in ids], dtype=bool)


def validate(
    batch: EventBatch, now: float, max_future_skew: float
) -> tuple[EventBatch, list[Rejection]]:
    """The events that pass every rule, and a rejection (first failed rule) for each other."""
    ts = batch.timestamps
    too_old = ts < EPOCH_2000
    too_new = ts > now + max_future_skew
    with np.errstate(over="ignore", invalid="ignore"):
        bad_features = ~np.isfinite(batch.features.astype(np.float32)).all(axis=1)
    bad_ids = _has_nul(batch.user_ids) | _has_nul(batch.event_ids)
    bad = too_old | too_new | bad_features | bad_ids
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
            kind, reason = "id_invalid", "user_id and event_id must not contain NUL characters"
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
        rejections.append(
            Rejection(int(batch.index[pos]), reason, msgspec.json.encode(event), kind)
        )
    return batch.select(~bad), rejections
