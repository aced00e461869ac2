"""The event log's batch format: one msgpack map per group commit, numeric columns as raw bytes.

Encoding a 4,000-event batch costs a few hundred microseconds and allocates no per-event Python
objects, which keeps the writer's critical path short. The layout (little-endian):

    {"u": [user_id, ...], "e": [event_id | nil, ...],
     "t": float64 timestamps, "s": float32 scores, "f": float64 features, row-major [n, F]}

>>> import numpy as np
>>> blob = encode(["a", "b"], [None, "x"], np.array([1.0, 2.0]), np.array([0.5, 0.25], "f4"),
...               np.array([[1.0, 2.0], [3.0, 4.0]]))
>>> batch = decode(blob)
>>> batch.user_ids, batch.event_ids, batch.timestamps.tolist(), batch.features.tolist()
(['a', 'b'], [None, 'x'], [1.0, 2.0], [[1.0, 2.0], [3.0, 4.0]])
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np

Attributes = dict[str, float | str | bool]


class _Batch(msgspec.Struct, omit_defaults=True):
    u: list[str]
    e: list[str | None]
    t: bytes
    s: bytes
    f: bytes
    y: list[str | None] | None = None  # event types, when any event has one
    a: list[Attributes | None] | None = None  # attributes, when any event has them
    m: bytes | None = None  # int32 model id per event, when not the batch's one model
    v: list[str | None] | None = None  # experiment variant per event, while one runs


@dataclass(frozen=True, slots=True)
class LoggedBatch:
    user_ids: list[str]
    event_ids: list[str | None]
    timestamps: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    event_types: list[str | None] | None = None
    attributes: list[Attributes | None] | None = None
    model_ids: np.ndarray | None = None  # None: every event has the batch's model
    variants: list[str | None] | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Batch)


def encode(
    user_ids: list[str],
    event_ids: list[str | None],
    timestamps: np.ndarray,
    scores: np.ndarray,
    features: np.ndarray,
    *,
    event_types: list[str | None] | None = None,
    attributes: list[Attributes | None] | None = None,
    model_ids: np.ndarray | None = None,
    variants: list[str | None] | None = None,
) -> bytes:
    """The optional columns are left out when absent, so old and new batches read alike."""
    return _encoder.encode(
        _Batch(
            u=user_ids,
            e=event_ids,
            t=timestamps.astype("<f8", copy=False).tobytes(),
            s=scores.astype("<f4", copy=False).tobytes(),
            f=np.ascontiguousarray(features, dtype="<f8").tobytes(),
            y=event_types,
            a=attributes,
            m=None if model_ids is None else model_ids.astype("<i4", copy=False).tobytes(),
            v=variants,
        )
    )


def decode(blob: bytes) -> LoggedBatch:
    raw = _decoder.decode(blob)
    n = len(raw.u)
    return LoggedBatch(
        user_ids=raw.u,
        event_ids=raw.e,
        timestamps=np.frombuffer(raw.t, dtype="<f8"),
        scores=np.frombuffer(raw.s, dtype="<f4"),
        features=np.frombuffer(raw.f, dtype="<f8").reshape(n, -1),
        event_types=raw.y,
        attributes=raw.a,
        model_ids=None if raw.m is None else np.frombuffer(raw.m, dtype="<i4"),
        variants=raw.v,
    )
