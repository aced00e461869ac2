"""The hot path after decoding, top to bottom: admit -> dedupe -> score -> commit -> ack.

    event loop              scoring thread               commit thread
    ----------              --------------               -------------
    submit(batch)           queue jobs by priority;      group the scored jobs of many
      admission (bound)     when the batching policy     requests into one durable write,
      claim event_ids       says so, one forward call    then stream time, windows, dedupe
      Job ───────────q───▶  over slices of them ──q────▶ resolve each job's future
    await the job ◀────────────────────────────────────── (an ack means durable)

One hand-off per stage, no callbacks back into the pipeline: a `Job` carries a request's new
events through both threads. Copies of event ids still in flight wait for their original's
outcome (duplicate if it committed, processed if it failed). Every wait here has a bound:
admission (`Overloaded` after `max_wait`), the ack (`AckTimeout` after `ack_timeout`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from streamscore.events import LOW, EventBatch, IngestResult
from streamscore.pipeline.admission import Admission, Overloaded
from streamscore.pipeline.commit import Committer
from streamscore.pipeline.dedupe import EventIdDeduper
from streamscore.pipeline.job import Job
from streamscore.scoring.stage import ScoringStage


class AckTimeout(Overloaded):
    """The events were not durable within `ack_timeout` seconds (503; a retry is deduplicated
    by event_id, so it is safe)."""


class PipelineDown(Overloaded):
    """A pipeline thread is not running (503 until it is back)."""


async def outcome(future: asyncio.Future[IngestResult], timeout: float) -> IngestResult:
    """What `future` (a job's, settled by the commit step) comes to; `AckTimeout` after
    `timeout` seconds, leaving the job to finish. A caller cancelled meanwhile is cancelled,
    even if the outcome lands at that very moment: `asyncio.wait_for` on Python 3.11 would
    then return the outcome and lose the cancellation, so a cancelled caller (the simulator
    being stopped) went on as if nothing had happened.

    >>> async def cancelled_as_it_lands():
    ...     future = asyncio.get_running_loop().create_future()
    ...     waiting = asyncio.ensure_future(outcome(future, 10.0))
    ...     await asyncio.sleep(0)
    ...     future.set_result(IngestResult(processed=1))
    ...     waiting.cancel()
    ...     try:
    ...         return await waiting
    ...     except asyncio.CancelledError:
    ...         return "cancelled"
    >>> asyncio.run(cancelled_as_it_lands())
    'cancelled'
    """
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(future)
    except TimeoutError:
        raise AckTimeout(
            f"events not durable within {timeout:g} s; retry (event_ids dedupe)"
        ) from None


class Pipeline:
    def __init__(
        self,
        admission: Admission,
        deduper: EventIdDeduper,
        scoring: ScoringStage,
        committer: Committer,
        ack_timeout: float,
        model_inputs: Callable[[EventBatch], np.ndarray] | None = None,
    ) -> None:
        """`model_inputs` builds the model's float32 input rows for a batch of new events
        (from computed features); without it the model reads the events' raw `features`."""
        self.model_inputs = model_inputs
        self.admission = admission
        self.deduper = deduper
        self.scoring = scoring
        self.committer = committer
        self.ack_timeout = ack_timeout

    def start(self) -> None:
        self.scoring.start()
        self.committer.start()

    def close(self) -> None:
        """Finish what was submitted, then stop both threads."""
        self.scoring.close()
        self.committer.close()

    def problems(self) -> list[str]:
        found = []
        if not self.scoring.alive:
            found.append("scoring thread is not running")
        if not self.committer.alive:
            found.append("commit thread is not running")
        return found

    async def submit(self, batch: EventBatch) -> IngestResult:
        """Resolves once every new event of `batch` is durable; raises on overload or failure."""
        if len(batch) == 0:
            return IngestResult()
        if down := self.problems():
            raise PipelineDown("; ".join(down))
        size = len(batch)
        # Before anything is held: if building the inputs fails, nothing needs releasing.
        inputs = None if self.model_inputs is None else self.model_inputs(batch)
        await self.admission.acquire(size, low=batch.priority == LOW)
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()

        def finished(done: asyncio.Future[IngestResult]) -> None:
            # Released when the pipeline is done with the events, even if the client left.
            self.admission.release(size)
            if not done.cancelled():
                done.exception()  # retrieved, so a departed client's error is not logged

        future.add_done_callback(finished)
        claim = self.deduper.claim(batch.event_ids, future)
        job = Job(batch.select(claim.fresh), claim.duplicates, time.monotonic(), future)
        if job.size and inputs is not None:
            job.features = inputs[claim.fresh]
        if job.size:
            self.scoring.submit(job)
        else:  # nothing to score: the commit step still counts its duplicates durably
            self.committer.submit([job])
        result = await self._outcome(future)
        for owner, positions in claim.waits.items():
            result += await self._copies(batch, owner, positions)  # type: ignore[arg-type]
        return result

    async def _outcome(self, future: asyncio.Future[IngestResult]) -> IngestResult:
        return await outcome(future, self.ack_timeout)

    async def _copies(
        self, batch: EventBatch, owner: asyncio.Future[IngestResult], positions: list[int]
    ) -> IngestResult:
        """Copies of ids another request had in flight: duplicates once it committed them,
        processed here if its write failed."""
        try:
            await self._outcome(owner)
        except AckTimeout:
            raise
        except Exception:
            keep = np.zeros(len(batch), dtype=bool)
            keep[positions] = True
            return await self.submit(batch.select(keep))
        return await self.submit_duplicates(len(positions))

    async def submit_duplicates(self, count: int) -> IngestResult:
        """Count `count` duplicates durably (they travel through the commit step, unscored)."""
        empty = EventBatch.empty(self.scoring.scorer.n_features)
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self.committer.submit([Job(empty, count, time.monotonic(), future)])
        return await self._outcome(future)
