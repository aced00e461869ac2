"""Value rules that types cannot express, checked on whole columns at once.

Timestamps must be on or after 2000-01-01 and at most `max_future_skew` seconds ahead of the
wall clock, so one event from a broken clock cannot jump stream time and empty every window.
Features must survive the cast to float32, which the model consumes.
"""

from __future__ import annotations

import msgspec
import numpy as np

from streamscore.batch import EventBatch, Rejection

EPOCH_2000 = 946_684_800.0


def validate(
    batch: EventBatch, now: float, max_future_skew: float
) -> tuple[EventBatch, list[Rejection]]:
    """The events that pass every rule, and a rejection (first failed rule) for each other."""
    ts = batch.timestamps
    too_old = ts < EPOCH_2000
    too_new = ts > now + max_future_skew
    with np.errstate(over="ignore", invalid="ignore"):
        bad_features = ~np.isfinite(batch.features.astype(np.float32)).all(axis=1)
    bad = too_old | too_new | bad_features
    if not bad.any():
        return batch, []
    rejections = []
    for pos in np.flatnonzero(bad):
        if too_old[pos]:
            kind, reason = "timestamp_too_old", "timestamp is before 2000-01-01T00:00:00Z"
        elif too_new[pos]:
            kind = "timestamp_in_future"
            reason = f"timestamp is more than {max_future_skew:g} s ahead of the server clock"
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
