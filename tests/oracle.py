"""Brute-force reference semantics: every statistic recomputed from the full event list."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch
from hypothesis import strategies as st

from streamscore.scoring.model import InefficientModel


def reference_model(path: Path) -> InefficientModel:
    state = torch.load(path, weights_only=True)
    model = InefficientModel(state["net.0.weight"].shape[1])
    model.load_state_dict(state)
    return model.eval()


def reference_scores(model: InefficientModel, features: list[list[float]]) -> list[float]:
    with torch.no_grad():
        out = model(torch.tensor(features, dtype=torch.float32).reshape(len(features), -1))
    return out.reshape(-1).tolist()


@dataclass
class Oracle:
    window: float
    stream_time: float = -math.inf
    processed: list[tuple[str, float, float]] = field(default_factory=list)  # user, ts, score
    late: int = 0
    duplicates: int = 0
    seen_ids: set[str] = field(default_factory=set)

    def ingest(self, events: list[dict], scores: list[float]) -> tuple[int, int, int]:
        """Apply valid events in arrival order; returns (processed, duplicates, late)."""
        processed = duplicates = late = 0
        for event, score in zip(events, scores, strict=True):
            event_id = event.get("event_id")
            if event_id is not None:
                if event_id in self.seen_ids:
                    duplicates += 1
                    continue
                self.seen_ids.add(event_id)
            if event["timestamp"] < self.stream_time - self.window:
                late += 1
            self.stream_time = max(self.stream_time, event["timestamp"])
            self.processed.append((event["user_id"], event["timestamp"], score))
            processed += 1
        self.late += late
        self.duplicates += duplicates
        return processed, duplicates, late

    def window_scores(self, user: str) -> list[float]:
        low = self.stream_time - self.window
        # Late events are never in a window: at arrival ts < T - W, and T only grows.
        return [s for u, t, s in self.processed if u == user and t >= low]

    def median(self, user: str) -> tuple[float | None, int]:
        scores = self.window_scores(user)
        if not scores:
            return None, 0
        return float(np.median(np.array(scores, dtype=np.float32).astype(np.float64))), len(scores)

    def history(self, user: str) -> list[tuple[float, float]]:
        # Stable sort keeps arrival order for equal timestamps, as seq does in the store.
        rows = [(t, s) for u, t, s in self.processed if u == user]
        return sorted(rows, key=lambda r: r[0])

    def users(self) -> set[str]:
        return {u for u, _, _ in self.processed}


# Randomized streams for the oracle tests: six users, offsets around a base time (many in the
# window, some far behind it: late; repeats of the same timestamp), event ids that repeat
# (duplicates), and cuts of the stream into requests (size, NDJSON or not).
event = st.fixed_dictionaries(
    {
        "user": st.integers(0, 5),
        "offset": st.integers(-200, 120).map(float) | st.floats(-5, 5).map(lambda x: round(x, 3)),
        "features": st.lists(st.floats(-10, 10, width=32), min_size=3, max_size=3),
        "event_id": st.none() | st.integers(0, 15),
    }
)
stream = st.lists(event, min_size=1, max_size=120)
splits = st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=8)


def wire_events(events: list[dict], users: list[str], base: float, tag: str) -> list[dict]:
    """Drawn `event`s as the API's events: user ids from `users`, times around `base`, event
    ids unique to `tag` (so that examples never share ids)."""
    wire = []
    for e in events:
        item = {"user_id": users[e["user"]], "timestamp": base + e["offset"]}
        item["features"] = e["features"]
        if e["event_id"] is not None:
            item["event_id"] = f"{tag}-id-{e['event_id']}"
        wire.append(item)
    return wire


def send_checked(
    client: httpx.Client,
    oracle: Oracle,
    model: InefficientModel,
    wire: list[dict],
    cuts: list[tuple[int, bool]],
) -> None:
    """Send `wire` cut into requests by `cuts` (then 40 at a time), as JSON or NDJSON, feeding
    the oracle in the same order; every answer's counts equal the oracle's."""
    from .conftest import post_events

    start = 0
    for size, ndjson in itertools.chain(cuts, itertools.repeat((40, False))):
        chunk = wire[start : start + size]
        if not chunk:
            return
        start += size
        scores = reference_scores(model, [e["features"] for e in chunk])
        expected = oracle.ingest(chunk, scores)
        body = post_events(client, chunk, ndjson)
        assert body["rejected"] == 0
        assert (body["processed"], body["duplicates"], body["late"]) == expected
