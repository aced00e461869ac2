"""Event ids for events the caller sent without one, so that a retry can never double-count.

An id is `<prefix>-<sequence>`: the prefix is a random uuid4 hex per client unless the caller
names one, the sequence counts the ids this client has given. Cheaper than a uuid4 per event,
unique across clients, and with a named prefix deterministic: a producer that restarts and
replays its input from the start with the same prefix re-sends the same ids, which the server
recognises within its dedupe horizon.

The id is written into the caller's event (dict key or `Event` field), so re-sending the same
objects after an error is safe too.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from streamscore.client.types import Event


class EventIds:
    """Gives ids to the events that lack one.

    >>> ids = EventIds("load-1")
    >>> events = [{"user_id": "a"}, {"user_id": "b", "event_id": "mine"}, Event("c", 1.0, [0.0])]
    >>> ids.assign(events)
    >>> [e["event_id"] for e in events[:2]], events[2].event_id
    (['load-1-0', 'mine'], 'load-1-1')
    """

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or uuid.uuid4().hex
        self._sequence = itertools.count()

    def assign(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, dict):
                if event.get("event_id") is None:
                    event["event_id"] = f"{self.prefix}-{next(self._sequence)}"
            elif isinstance(event, Event) and event.event_id is None:
                event.event_id = f"{self.prefix}-{next(self._sequence)}"
