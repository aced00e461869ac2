"""Deterministic, stateless assignment of users to experiment variants.

A user's position is ``u = int.from_bytes(sha256(name + "\\0" + user_id)[:8], "big") >> 11``
scaled by ``2**-53``: the top 53 bits of the digest's first 8 bytes, so ``u`` is exactly
representable as a float64 and uniform on ``[0, 1)``. The user gets the first variant whose
cumulative normalised weight exceeds ``u``. Nothing is stored, so the assignment is sticky across
restarts and processes; hashing the experiment name in decorrelates experiments (a user in
"treatment" of one experiment is not more likely to be in "treatment" of the next). The NUL
separator keeps ("ab", "c") and ("a", "bc") apart, which is why names must not contain NUL.

>>> users = ["alice", "bob", "carol", "dave"]
>>> positions("checkout-v2", users).round(4).tolist()
[0.276, 0.2148, 0.9047, 0.6332]
>>> assign("checkout-v2", users, [0.5, 0.5]).tolist()
[0, 0, 1, 1]
>>> assign("checkout-v2", users, [0.25, 0.75]).tolist()  # alice's 0.276 moves past 0.25
[1, 0, 1, 1]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def positions(name: str, user_ids: Sequence[str]) -> np.ndarray:
    """Each user's uniform position in [0, 1) for experiment `name` (float64)."""
    if "\0" in name:
        raise ValueError("an experiment name must not contain NUL")
    prefix = name.encode() + b"\0"
    digests = b"".join(hashlib.sha256(prefix + u.encode()).digest()[:8] for u in user_ids)
    top = np.frombuffer(digests, dtype=">u8").astype(np.uint64) >> np.uint64(11)
    return top.astype(np.float64) * 2.0**-53


def cumulative_weights(weights: Sequence[float]) -> np.ndarray:
    """Normalised cumulative weights, the last forced to exactly 1 so every position maps."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("weights must be a non-empty list of positive numbers")
    cumulative = np.cumsum(w / w.sum())
    cumulative[-1] = 1.0
    return cumulative


def assign(name: str, user_ids: Sequence[str], weights: Sequence[float]) -> np.ndarray:
    """The variant index (int64) of each user, by the documented hash of (name, user_id)."""
    return np.searchsorted(cumulative_weights(weights), positions(name, user_ids), side="right")
