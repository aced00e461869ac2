"""HandoffLock: a queued read is run by the holder when it lets go, never lost, never torn."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from streamscore.handoff import HandoffLock, served
from streamscore.windows.rolling_median import SLICE, RollingMedians


def test_a_read_waits_one_slice_not_the_whole_batch() -> None:
    """The updater takes the lock straight back after each slice (as `feed` does); a plain
    `threading.Lock` lets it, so a blocked reader could wait out every slice. Here the read
    is run at the end of the slice it arrived in."""
    lock = HandoffLock()
    slices_done = 0
    started = threading.Event()

    def updater() -> None:
        nonlocal slices_done
        for _ in range(40):
            with lock:
                started.set()
                time.sleep(0.005)
                slices_done += 1

    thread = threading.Thread(target=updater)
    thread.start()
    started.wait()
    time.sleep(0.012)
    at_submit = slices_done
    seen = lock.submit(lambda: slices_done).result(timeout=5)
    thread.join()
    assert seen <= at_submit + 1
    assert slices_done == 40


def test_a_failing_read_fails_its_own_future_only() -> None:
    lock = HandoffLock()
    with lock:
        bad = lock.submit(lambda: 1 // 0)
        good = lock.submit(lambda: "fine")
    with pytest.raises(ZeroDivisionError):
        bad.result(timeout=1)
    assert good.result(timeout=1) == "fine"
    with lock:  # and the lock is free again
        pass


def test_no_read_is_lost_or_sees_a_half_update() -> None:
    """Readers on four threads race two updaters: every future completes, and every read sees
    the two halves of each update together."""
    lock = HandoffLock()
    state = [0, 0]
    stop = threading.Event()

    def updater() -> None:
        while not stop.is_set():
            with lock:
                state[0] += 1
                time.sleep(0)  # invite a switch between the halves
                state[1] += 1

    def reader(out: list[tuple[int, int]]) -> None:
        futures = [lock.submit(lambda: (state[0], state[1])) for _ in range(3000)]
        out.extend(f.result(timeout=30) for f in futures)

    updaters = [threading.Thread(target=updater) for _ in range(2)]
    results: list[list[tuple[int, int]]] = [[] for _ in range(4)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in results]
    for t in updaters + readers:
        t.start()
    for t in readers:
        t.join(60)
    stop.set()
    for t in updaters:
        t.join(60)
    assert all(len(r) == 3000 for r in results)
    assert all(a == b for r in results for a, b in r)


def test_the_loop_keeps_serving_while_a_median_read_waits() -> None:
    """A median read awaited on the event loop leaves the loop free while an insert holds
    the lock, and answers once the slice ends."""
    medians = RollingMedians()
    medians.insert(["a"], np.array([1.0]), np.array([5.0], "f4"))

    async def scenario() -> tuple[tuple[float | None, int], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        with medians.lock:  # an insert slice in progress, on this very thread
            waiting = asyncio.ensure_future(served(medians.submit_get("a")))
            await asyncio.sleep(0.05)
            assert not waiting.done()
        answer = await asyncio.wait_for(waiting, 5)
        tick_task.cancel()
        return answer, ticks

    (value, count), ticks = asyncio.run(scenario())
    assert (value, count) == (5.0, 1)
    assert ticks >= 10  # the loop ran while the read waited


def test_a_long_insert_lets_reads_in_between_slices() -> None:
    medians = RollingMedians()
    n = SLICE * 8
    users = [f"u{i % 100}" for i in range(n)]
    rng = np.random.default_rng(0)
    ts, scores = np.sort(rng.uniform(0, 100, n)), rng.random(n).astype("f4")
    reads: list[int] = []
    thread = threading.Thread(target=medians.insert, args=(users, ts, scores))
    thread.start()
    while thread.is_alive():
        reads.append(medians.submit_get("u1").result(timeout=5)[1])
    thread.join()
    assert reads == sorted(reads)  # counts only grow, slice by slice
    assert medians.get("u1")[1] == users.count("u1")
