"""Which partition a user belongs to: a stable hash of the UTF-8 user id, modulo P.

Every node, in every process and every release, must agree on the partition of a user, so the
hash is fixed here rather than Python's per-process salted `hash`: 64-bit FNV-1a over the UTF-8
bytes, then the MurmurHash3 `fmix64` finaliser (so that every bit `mod P` keeps depends on every
input byte, which FNV's multiply alone does not give), then `mod P`. It is computed column by column over the whole batch in
NumPy, so a batch of thousands of ids costs a few NumPy passes per byte of the longest id.

P is fixed when the cluster is created (`DEFAULT_PARTITIONS`): changing it would move users
between partitions and split their windows, so `bus.open_cluster` records it and refuses a node
configured with another.

>>> partition_of(["alice", "bob", "alice"], 64).tolist()
[52, 32, 52]
>>> subject("shop", 7)
'shop.events.7'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

DEFAULT_PARTITIONS = 64

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)

# One name is used for the JetStream stream, the key-value bucket, subjects and Redis keys;
# this is the intersection of what all of them accept.
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_cluster_name(name: str) -> str:
    """The name unchanged, or ValueError if a stream, bucket or subject could not carry it.

    >>> check_cluster_name("shop.eu")
    Traceback (most recent call last):
    ...
    ValueError: cluster name 'shop.eu' must match ^[A-Za-z0-9_-]{1,64}$
    """
    if not _CLUSTER_NAME.match(name):
        raise ValueError(f"cluster name {name!r} must match {_CLUSTER_NAME.pattern}")
    return name


def subject(cluster: str, partition: int) -> str:
    """The JetStream subject carrying one partition's events."""
    return f"{cluster}.events.{partition}"


def hash_ids(user_ids: Sequence[str]) -> np.ndarray:
    """uint64 [N]: fmix64(FNV-1a-64(utf8(id))) for each id (see the module docstring)."""
    encoded = [u.encode() for u in user_ids]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    h = np.full(len(encoded), _FNV_OFFSET, dtype=np.uint64)
    if len(encoded) == 0:
        return h
    flat = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # Column j holds byte j of every id that long; ids are mostly short and similar in length,
    # so this loops over a few dozen positions, each one vectorised over the batch.
    for j in range(int(lengths.max())):
        live = np.flatnonzero(lengths > j)
        h[live] = (h[live] ^ flat[starts[live] + j].astype(np.uint64)) * _FNV_PRIME
    h ^= h >> _SHIFT
    h *= _FMIX_1
    h ^= h >> _SHIFT
    h *= _FMIX_2
    h ^= h >> _SHIFT
    return h


def partition_of(user_ids: Sequence[str], partitions: int = DEFAULT_PARTITIONS) -> np.ndarray:
    """int64 [N]: the partition in [0, partitions) of each user id."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return (hash_ids(user_ids) % np.uint64(partitions)).astype(np.int64)
