"""The dead-letter buffer is bounded in bytes, whatever the rejected events weigh."""

from __future__ import annotations

import tracemalloc

from streamscore.events import Rejection
from streamscore.history.dead_letters import RAW_LIMIT, DeadLetters


def test_a_flood_of_large_rejections_holds_a_bounded_number_of_bytes() -> None:
    letters = DeadLetters()  # the service's defaults
    raw = "é".encode() * RAW_LIMIT  # the largest raw text kept, two bytes per character
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, 30_000, 1000):
            letters.add([Rejection(start + i, "bad " * 20, raw) for i in range(1000)])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= 12 * 2**20, f"{held / 2**20:.0f} MiB"  # 10 MiB with the defaults
    assert letters.bytes <= letters.max_bytes
    rows = letters.take()
    assert letters.dropped == 30_000 - len(rows) > 0
    assert [idx for _, idx, _, _ in rows] == list(range(30_000 - len(rows), 30_000))  # newest kept
    assert letters.bytes == 0


def test_skipped_rejections_are_counted_as_dropped() -> None:
    letters = DeadLetters(buffer=3)
    letters.add([Rejection(i, "bad") for i in range(5)])
    letters.skip(10)
    assert len(letters.take()) == 3 and letters.dropped == 12
