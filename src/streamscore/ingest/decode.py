"""JSON and NDJSON bodies to columnar batches, with a reason for every event that is rejected.

The fast path decodes a whole body with one typed msgspec call. Only when that fails does it
decode event by event, so one bad event costs its request a second pass, never its good events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from streamscore.events import PRIORITIES, EventBatch, Rejection

MAX_USER_ID = 256
MAX_EVENT_ID = 256
MAX_EVENT_TYPE = 64
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_NAME = 64
MAX_ATTRIBUTE_TEXT = 256
FINITE = 1.7976931348623157e308  # the largest float64: the bounds exclude inf and NaN

Timestamp = float | Annotated[datetime, msgspec.Meta(tz=True)]  # UNIX s or RFC 3339 with zone
AttributeValue = (
    bool
    | Annotated[float, msgspec.Meta(ge=-FINITE, le=FINITE)]
    | Annotated[str, msgspec.Meta(max_length=MAX_ATTRIBUTE_TEXT)]
)
AttributeMap = Annotated[
    dict[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ATTRIBUTE_NAME)], AttributeValue],
    msgspec.Meta(max_length=MAX_ATTRIBUTES),
]


class BodyError(ValueError):
    """The body as a whole cannot be read: answered with 400 and nothing is stored."""


def event_type(n_features: int, features_required: bool = True) -> type[msgspec.Struct]:
    """The typed event for a model with `n_features` raw inputs; unknown fields are ignored.

    Without `features_required` (a model that reads only computed features) the raw vector is
    not read at all: the batch's `features` has 0 columns.
    """
    features: list[tuple[str, Any]] = []
    if features_required:
        features = [("features", tuple.__class_getitem__((float,) * n_features))]
    return msgspec.defstruct(
        "Event",
        [
            ("user_id", Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USER_ID)]),
            ("timestamp", Timestamp),
            *features,
            (
                "event_id",
                Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)] | None,
                None,
            ),
            ("priority", Literal["low", "normal", "high"], "normal"),
            (
                "event_type",
                Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPE)] | None,
                None,
            ),
            ("attributes", AttributeMap | None, None),
        ],
        forbid_unknown_fields=False,
    )


class _RawEnvelope(msgspec.Struct):
    events: list[msgspec.Raw]


class EventDecoder:
    """Decodes request bodies for a model with `n_features` raw inputs (0 and not read when
    `features_required` is false)."""

    def __init__(self, n_features: int, features_required: bool = True) -> None:
        self.n_features = n_features if features_required else 0
        self.event = event_type(n_features, features_required)
        envelope = msgspec.defstruct("Envelope", [("events", list[self.event])])
        self._envelope = msgspec.json.Decoder(envelope)
        self._events = msgspec.json.Decoder(list[self.event])
        self._one = msgspec.json.Decoder(self.event)
        self._raw_envelope = msgspec.json.Decoder(_RawEnvelope)

    def decode_json(self, body: bytes) -> tuple[EventBatch, list[Rejection]]:
        """`{"events": [...]}` to a batch; raises `BodyError` if there is no such list."""
        try:
            return self._columns(self._envelope.decode(body).events, None), []
        except msgspec.ValidationError:
            pass
        except msgspec.DecodeError as exc:
            raise BodyError(f"body is not valid JSON: {exc}") from None
        try:
            raws = self._raw_envelope.decode(body).events
        except msgspec.DecodeError as exc:
            raise BodyError(f'body must be an object with an "events" list: {exc}') from None
        return self._one_by_one(raws, range(len(raws)))

    def decode_lines(self, lines: list[tuple[int, bytes]]) -> tuple[EventBatch, list[Rejection]]:
        """Numbered NDJSON lines (one event each, see `ingest.ndjson`) to a batch."""
        indices = [i for i, _ in lines]
        raws = [line for _, line in lines]
        try:
            events = self._events.decode(b"[" + b",".join(raws) + b"]")
        except msgspec.DecodeError:
            return self._one_by_one(raws, indices)
        return self._columns(events, np.asarray(indices, dtype=np.int64)), []

    def _one_by_one(
        self, raws: list[Any], indices: Sequence[int]
    ) -> tuple[EventBatch, list[Rejection]]:
        good: list[Any] = []
        positions: list[int] = []
        rejected: list[Rejection] = []
        for index, raw in zip(indices, raws, strict=True):
            try:
                good.append(self._one.decode(raw))
                positions.append(index)
            except msgspec.DecodeError as exc:
                rejected.append(Rejection(index, _reason(exc), bytes(raw)))
        return self._columns(good, np.asarray(positions, dtype=np.int64)), rejected

    def _columns(self, events: list[Any], index: np.ndarray | None) -> EventBatch:
        n = len(events)
        if self.n_features:
            features = np.array([e.features for e in events], dtype=np.float64)
        else:
            features = np.zeros((n, 0))
        timestamps = [e.timestamp for e in events]
        try:
            ts = np.array(timestamps, dtype=np.float64)
        except TypeError:  # some are datetimes (RFC 3339 text)
            ts = np.array([t if type(t) is float else t.timestamp() for t in timestamps])
        event_types = [e.event_type for e in events]
        attributes = [e.attributes for e in events]
        return EventBatch(
            user_ids=[e.user_id for e in events],
            timestamps=ts.reshape(n),
            features=features.reshape(n, self.n_features),
            event_ids=[e.event_id for e in events],
            index=np.arange(n, dtype=np.int64) if index is None else index,
            priority=max((PRIORITIES[p] for p in {e.priority for e in events}), default=1),
            event_types=event_types if any(event_types) else None,
            attributes=attributes if any(a is not None for a in attributes) else None,
        )


def _reason(exc: msgspec.DecodeError) -> str:
    """msgspec's message, with its `$` path made relative to the event."""
    text = str(exc)
    return text.replace("- at `$.", "at `").replace("- at `$`", "").strip()
