"""The scoring stage on its own thread: forward calls cut across jobs, scores land in the right
job, and a failing model fails exactly the jobs of its forward call."""

from __future__ import annotations

import threading

import numpy as np
import torch

from streamscore.events import EventBatch
from streamscore.pipeline.job import Job
from streamscore.scoring.cost import CostModel
from streamscore.scoring.model import LoadedModel
from streamscore.scoring.policy import FixedPolicy
from streamscore.scoring.scorer import Scorer, ScoringFailed
from streamscore.scoring.stage import ScoringStage


class SumOrRaise(torch.nn.Module):
    """Scores a row by its sum; a row starting with 666 makes the whole call raise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] == 666).any()):
            raise RuntimeError("poisoned row")
        return x.sum(dim=1)


def job(rows: np.ndarray) -> Job:
    n = len(rows)
    events = EventBatch(["u"] * n, np.zeros(n), rows, [None] * n, np.arange(n))
    return Job(events, duplicates=0, arrived=0.0)


def run_stage(jobs: list[Job], size: int) -> tuple[list[Job], list[tuple[Job, BaseException]]]:
    scored: list[Job] = []
    failed: list[tuple[Job, BaseException]] = []
    settled = threading.Semaphore(0)

    def on_scored(done: list[Job]) -> None:
        scored.extend(done)
        for _ in done:
            settled.release()

    def on_failed(j: Job, exc: BaseException) -> None:
        failed.append((j, exc))
        settled.release()

    policy = FixedPolicy(size, 0.001, budget=0.02, max_batch=size, cost=CostModel(0, 0, 1))
    scorer = Scorer(LoadedModel(module=SumOrRaise(), n_features=2, version="sum"))
    stage = ScoringStage(scorer, policy, size, on_scored, on_failed)
    stage.start()
    for j in jobs:
        stage.submit(j)
    for _ in jobs:
        assert settled.acquire(timeout=10)
    stage.close()
    return scored, failed


def test_scores_are_cut_across_jobs_and_land_in_place() -> None:
    rng = np.random.default_rng(1)
    jobs = [job(rng.random((n, 2))) for n in (1, 7, 3, 12, 5)]
    scored, failed = run_stage(jobs, size=4)  # forward calls of 4 split most jobs
    assert not failed and {id(j) for j in scored} == {id(j) for j in jobs}
    for j in jobs:
        np.testing.assert_allclose(j.scores, j.events.features.sum(axis=1), rtol=1e-6)


def test_a_failing_forward_call_fails_only_its_jobs() -> None:
    good = job(np.ones((3, 2)))
    bad = job(np.array([[666.0, 1.0]]))
    after = job(np.full((2, 2), 2.0))
    scored, failed = run_stage([good, bad, after], size=3)  # [good], [bad + after[0]], [after[1]]
    failed_ids = {id(j) for j, _ in failed}
    assert id(bad) in failed_ids and id(good) not in failed_ids
    assert all(isinstance(exc, ScoringFailed) for _, exc in failed)
    assert id(good) in {id(j) for j in scored}
    np.testing.assert_allclose(good.scores, [2.0, 2.0, 2.0])
