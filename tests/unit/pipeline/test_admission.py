"""Admission: the bound on events accepted but not yet durable."""

from __future__ import annotations

import asyncio

import pytest

from streamscore.pipeline.admission import Admission, Overloaded


def test_low_priority_is_refused_first_under_overload() -> None:
    async def scenario() -> None:
        admission = Admission(max_in_flight=100, max_wait=0.05)
        await admission.acquire(60)
        with pytest.raises(Overloaded):
            await admission.acquire(10, low=True)  # low may fill only half the bound
        await admission.acquire(30)  # normal still fits

    asyncio.run(scenario())
