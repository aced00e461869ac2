"""Shadow scoring: a second model version scores every forward call's rows on its own thread,
off the ack path, and is compared with the scores that were served.

The scoring stage hands each call's inputs and scores to `offer`, which never blocks: when the
bounded queue is full the rows are dropped and counted, so a slow shadow costs ingest nothing.
The comparison keeps running sums (means, Pearson correlation, mean absolute difference) and
the latest per-call latencies of both sides for their p99.

>>> import torch
>>> from streamscore.scoring.model import LoadedModel
>>> class Double(torch.nn.Module):
...     def forward(self, x: torch.Tensor) -> torch.Tensor:
...         return 2 * x.sum(1)
>>> shadow = Shadow(Scorer(LoadedModel(Double(), 1, "twice@00")))
>>> shadow.offer(np.array([[1.0], [2.0], [3.0]], "f4"), np.array([1.0, 2.0, 3.0], "f4"), 0.001)
>>> shadow.close()
>>> c = shadow.comparison()
>>> c["events"], c["primary_mean"], c["shadow_mean"], c["correlation"], c["mean_abs_difference"]
(3, 2.0, 4.0, 1.0, 2.0)
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from streamscore.scoring.scorer import Scorer, ScoringFailed

log = logging.getLogger(__name__)

CAPACITY = 64  # forward calls queued for the shadow before rows are dropped
LATENCIES = 2048  # per-call latencies kept for the p99s
_STOP = None


class Shadow:
    def __init__(self, scorer: Scorer, capacity: int = CAPACITY) -> None:
        self.scorer = scorer
        self.version = scorer.version
        self.dropped = 0  # rows not shadow-scored because the queue was full
        self.failed = 0  # rows whose shadow forward call raised
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray, float] | None] = queue.Queue(
            capacity
        )
        self._sums = np.zeros(6)  # n, sum a, sum b, sum a^2, sum b^2, sum ab  (a primary)
        self._abs = 0.0
        self._primary: deque[float] = deque(maxlen=LATENCIES)
        self._shadow: deque[float] = deque(maxlen=LATENCIES)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def offer(self, inputs: np.ndarray, scores: np.ndarray, seconds: float) -> None:
        """From the scoring thread; never waits."""
        try:
            self._queue.put_nowait((inputs, scores, seconds))
        except queue.Full:
            self.dropped += len(scores)

    def close(self) -> None:
        """Score what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            inputs, primary, seconds = item
            started = time.perf_counter()
            try:
                shadow = self.scorer.score(inputs).astype(np.float64)
            except ScoringFailed as exc:
                self.failed += len(primary)
                log.warning("shadow model %s failed: %s", self.version, exc)
                continue
            elapsed = time.perf_counter() - started
            a = primary.astype(np.float64)
            with self._lock:
                self._sums += (len(a), a.sum(), shadow.sum(), a @ a, shadow @ shadow, a @ shadow)
                self._abs += float(np.abs(a - shadow).sum())
                self._primary.append(seconds)
                self._shadow.append(elapsed)

    def comparison(self) -> dict[str, Any]:
        with self._lock:
            n, sa, sb, saa, sbb, sab = self._sums.tolist()
            mae = self._abs
            primary, shadow = list(self._primary), list(self._shadow)
        mean_a = sa / n if n else None
        mean_b = sb / n if n else None
        correlation = None
        if n > 1:
            va, vb = saa - sa * sa / n, sbb - sb * sb / n
            if va > 0 and vb > 0:
                correlation = max(-1.0, min(1.0, (sab - sa * sb / n) / math.sqrt(va * vb)))
        return {
            "version": self.version,
            "events": int(n),
            "dropped": self.dropped,
            "failed": self.failed,
            "primary_mean": mean_a,
            "shadow_mean": mean_b,
            "correlation": correlation,
            "mean_abs_difference": mae / n if n else None,
            "primary_p99_seconds": _p99(primary),
            "shadow_p99_seconds": _p99(shadow),
        }


def _p99(values: list[float]) -> float | None:
    return float(np.quantile(values, 0.99)) if values else None
