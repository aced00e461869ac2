"""Window memory is bounded by what is live: emptied users give their slot and arrays back."""

from __future__ import annotations

import numpy as np

from streamscore.windows.kernels import BLOCK
from streamscore.windows.rolling_median import RollingMedians


def test_a_million_one_time_users_reuse_slots() -> None:
    """10^6 distinct users, one event each, 10^4 live at a time: slots and bytes plateau."""
    medians = RollingMedians()
    window = 10_000
    batch = 10_000
    plateau = []
    for start in range(0, 1_000_000, batch):
        ids = [f"user-{i}" for i in range(start, start + batch)]
        ts = np.arange(start, start + batch, dtype=np.float64)
        medians.insert(ids, ts, np.ones(batch, dtype=np.float32))
        medians.expire(cutoff=start + batch - window)
        plateau.append(medians.memory_bytes())
        assert medians.users == medians.events == window
    # Between an insert and its expiry up to two windows' worth are live; slots double.
    assert medians.slots <= 4 * window
    # After the first window's worth, memory does not grow with the number of users ever seen.
    assert max(plateau[5:]) <= plateau[5]
    medians.expire(cutoff=np.inf)
    assert medians.users == medians.events == 0
    assert medians.get("user-999999") == (None, 0)


def test_an_emptied_hot_user_gives_its_capacity_back() -> None:
    medians = RollingMedians()
    medians.insert(["small"], np.array([2e6]), np.array([0.5], dtype=np.float32))
    idle = medians.memory_bytes()
    n = 200_000
    medians.insert(["hot"] * n, np.arange(n, dtype=np.float64), np.random.rand(n).astype("f4"))
    assert medians.memory_bytes() > idle + 16 * n
    medians.expire(cutoff=n)
    assert medians.get("hot") == (None, 0)
    assert medians.memory_bytes() <= idle + 1024


def test_blocks_stay_filled_under_adversarial_expiry() -> None:
    """Expiring every value but one per block would leave nearly empty blocks without merging."""
    medians = RollingMedians()
    n = 40 * BLOCK
    values = np.arange(n, dtype=np.float32)
    # Keepers (every 64th value) are the newest events, so expiry removes all the others.
    ts = np.where(np.arange(n) % 64 == 0, 1.0, 0.0)
    medians.insert(["u"] * n, ts, values)
    medians.expire(cutoff=0.5)
    kept = values[::64].astype(np.float64)
    assert medians.get("u") == (float(np.median(kept)), len(kept))
    # Left unmerged, the 40 blocks of 16 keys would hold 40 * BLOCK * 4 B = 160 KiB of keys alone.
    assert medians.memory_bytes() < 40 * BLOCK * 4 // 2
