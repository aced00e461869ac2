"""JSON and NDJSON bodies to columnar batches, with a reason for every event that is rejected.

The fast path decodes a whole body with one typed msgspec call. Only when that fails does it
decode event by event, so one bad event costs its request a second pass, never its good events.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from streamscore.batch import EventBatch, Rejection
from streamscore.batching.pending import PRIORITIES

MAX_USER_ID = 256
MAX_EVENT_ID = 256


class BodyError(ValueError):
    """The body as a whole cannot be read: answered with 400 and nothing is stored."""


def event_type(n_features: int) -> type[msgspec.Struct]:
    """The typed event for a model with `n_features` inputs; unknown fields are ignored."""
    features = tuple.__class_getitem__((float,) * n_features)
    return msgspec.defstruct(
        "Event",
        [
            ("user_id", Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USER_ID)]),
            ("timestamp", float),
            ("features", features),
            (
                "event_id",
                Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)] | None,
                None,
            ),
            ("priority", Literal["low", "normal", "high"], "normal"),
        ],
        forbid_unknown_fields=False,
    )


class _RawEnvelope(msgspec.Struct):
    events: list[msgspec.Raw]


class EventDecoder:
    """Decodes request bodies for a model with `n_features` inputs."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self.event = event_type(n_features)
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
        return self._one_by_one(raws, 0)

    def decode_lines(
        self, lines: list[bytes], first_index: int
    ) -> tuple[EventBatch, list[Rejection]]:
        """NDJSON lines (one event each, no blank lines) to a batch, indexed from `first_index`."""
        try:
            events = self._events.decode(b"[" + b",".join(lines) + b"]")
        except msgspec.DecodeError:
            return self._one_by_one(lines, first_index)
        return self._columns(events, np.arange(first_index, first_index + len(events))), []

    def _one_by_one(self, raws: list[Any], first_index: int) -> tuple[EventBatch, list[Rejection]]:
        good: list[Any] = []
        positions: list[int] = []
        rejected: list[Rejection] = []
        for offset, raw in enumerate(raws):
            try:
                good.append(self._one.decode(raw))
                positions.append(first_index + offset)
            except msgspec.DecodeError as exc:
                rejected.append(Rejection(first_index + offset, _reason(exc), bytes(raw)))
        return self._columns(good, np.asarray(positions, dtype=np.int64)), rejected

    def _columns(self, events: list[Any], index: np.ndarray | None) -> EventBatch:
        n = len(events)
        features = np.array([e.features for e in events], dtype=np.float64)
        return EventBatch(
            user_ids=[e.user_id for e in events],
            timestamps=np.fromiter((e.timestamp for e in events), dtype=np.float64, count=n),
            features=features.reshape(n, self.n_features),
            event_ids=[e.event_id for e in events],
            index=np.arange(n, dtype=np.int64) if index is None else index,
            priority=max((PRIORITIES[p] for p in {e.priority for e in events}), default=1),
        )


def _reason(exc: msgspec.DecodeError) -> str:
    """msgspec's message, with its `$` path made relative to the event."""
    text = str(exc)
    return text.replace("- at `$.", "at `").replace("- at `$`", "").strip()
