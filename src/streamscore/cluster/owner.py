"""One owned partition: its users' windows and features, fed from the bus.

Duplicates never reach an owner: the ingesting node publishes every event that has an
`event_id` as a message of its own named by that id, and JetStream stores a name once within
its duplicate window. So an owner keeps every message it is given, in stream order.

A batch of messages goes through `prepare` (scores and history chunks: nothing kept changes
yet), then the history commit (`ClusterHistory.commit`, by the caller, off the event loop),
then `apply` (windows, features, stream time). Both are deterministic given the messages, so
replaying the partition's messages on take-over (`apply` without a commit) rebuilds exactly
the state the last owner had, with the same seqs and chunks on every node.

Stream time is the cluster's: `advance` moves the partition's clock (and its windows and
features) to it, so a partition that receives nothing still ends its windows where the other
partitions do, and at rest every value equals what one node would hold for the same stream.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from streamscore.cluster.history import event_seq
from streamscore.events import EventBatch
from streamscore.features.definitions import FeatureDefinitions
from streamscore.features.engine import FeatureEngine
from streamscore.features.stage import feed
from streamscore.history.chunks import Chunk, from_log
from streamscore.scoring.scorer import Scorer
from streamscore.store.log_codec import LoggedBatch
from streamscore.windows.event_time import StreamClock
from streamscore.windows.rolling_median import RollingMedians


@dataclass(frozen=True, slots=True)
class Message:
    """One bus message: the events one request sent to this partition."""

    sequence: int  # the stream sequence JetStream gave it
    events: LoggedBatch  # as published: no scores yet


@dataclass(slots=True)
class Prepared:
    messages: list[Message]
    events: EventBatch  # in stream order
    scores: np.ndarray  # float32, one per event
    clock: StreamClock  # the partition's clock after the batch
    chunks: list[Chunk]

    @property
    def last_msg(self) -> int:
        return self.messages[-1].sequence


@dataclass(slots=True)
class Shown:
    """What the online store shows of the partition, so that only changes are rewritten."""

    shown: set[str] = field(default_factory=set)  # users it shows with events
    cutoff: float = math.nan  # the window cutoff of its medians
    features_time: float = math.nan  # the stream time of its features
    features_at: float = -math.inf  # when they were written (monotonic)


class PartitionOwner:
    def __init__(
        self,
        partition: int,
        scorer: Scorer,
        model_id: int,
        window: float,
        features: FeatureDefinitions | None,
        stored: int = 0,
        epoch: int = 0,
    ) -> None:
        self.partition = partition
        self.scorer = scorer
        self.model_id = model_id
        self.clock = StreamClock(window)
        self.windows = RollingMedians()
        self.features = FeatureEngine(features) if features is not None else None
        self.last_msg = 0  # the last message applied to this state
        self.stored = stored  # the last message whose events the history holds
        self.epoch = epoch  # of the lease it is owned under (fences its writes)
        self.online = Shown()

    @property
    def caught_up(self) -> bool:
        """The state holds everything the history does: reads may be answered."""
        return self.last_msg >= self.stored

    def prepare(self, messages: list[Message]) -> Prepared:
        """Everything the batch comes to, without changing the state (see the module doc)."""
        batches = [m.events for m in messages]
        scores = self.scorer.score(np.concatenate([b.features for b in batches]).astype(np.float32))
        logged = []
        offset = 0
        for message, batch in zip(messages, batches, strict=True):
            n = len(batch.user_ids)
            logged.append(
                (
                    event_seq(message.sequence, 0),
                    self.model_id,
                    dataclasses.replace(batch, scores=scores[offset : offset + n]),
                )
            )
            offset += n
        events = EventBatch.concat([_as_events(b) for b in batches])
        clock = StreamClock(self.clock.window, self.clock.time)
        clock.advance(events.timestamps)
        return Prepared(messages, events, scores, clock, from_log(logged))

    def apply(self, prepared: Prepared) -> None:
        """Keep a prepared batch: its history is committed (or was, before a take-over)."""
        clock = prepared.clock
        self.clock.time = clock.time
        self.windows.update(prepared.events, prepared.scores, clock)
        if self.features is not None:
            feed(self.features, prepared.events, prepared.scores.astype(np.float64))
        self.last_msg = prepared.last_msg

    def advance(self, time: float) -> bool:
        """Move to the cluster's stream time; True if the windows' cutoff moved."""
        if time <= self.clock.time:
            return False
        self.clock.time = time
        self.windows.expire(self.clock.cutoff)
        if self.features is not None:
            self.features.advance(time)
        return True


def _as_events(batch: LoggedBatch) -> EventBatch:
    n = len(batch.user_ids)
    return EventBatch(
        batch.user_ids,
        batch.timestamps,
        batch.features,
        batch.event_ids,
        np.arange(n, dtype=np.int64),
        event_types=batch.event_types,
        attributes=batch.attributes,
    )
