"""A partition's state as bytes: what a new owner starts from instead of the first message.

A checkpoint holds the windows' events, the feature engine's state and the stream time after
message `last_msg`; a new owner restores it, then replays only the messages after it
(`ClusterNode._take_over`), so a take-over reads the log since the last checkpoint, not since
the partition began. It is taken between two batches (under the partition's lock) and saved
with the owner's epoch, so a deposed owner cannot overwrite a newer owner's checkpoint.
"""

from __future__ import annotations

import msgspec
import numpy as np

from streamscore.cluster.owner import PartitionOwner
from streamscore.features.engine import Snapshot, encode_checkpoint


class _State(msgspec.Struct, array_like=True):
    last_msg: int
    time: float
    users: list[str]
    timestamps: bytes  # float64, little-endian
    keys: bytes  # int32 window keys, little-endian
    features: bytes | None


Taken = tuple[int, float, tuple[list[str], np.ndarray, np.ndarray], Snapshot | None]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_State)


def take(owner: PartitionOwner) -> Taken:
    """Copy the state (fast, between two batches); `encode` does the rest off the loop."""
    features = owner.features.snapshot() if owner.features is not None else None
    return owner.last_msg, owner.clock.time, owner.windows.snapshot(), features


def encode(taken: Taken) -> bytes:
    last_msg, time, (users, timestamps, keys), features = taken
    return _encoder.encode(
        _State(
            last_msg,
            time,
            users,
            timestamps.astype("<f8").tobytes(),
            keys.astype("<i4").tobytes(),
            None if features is None else encode_checkpoint(features),
        )
    )


def restore(owner: PartitionOwner, data: bytes) -> None:
    """Load a checkpoint into a fresh owner; it resumes after the checkpoint's message."""
    state = _decoder.decode(data)
    owner.windows.restore(
        state.users,
        np.frombuffer(state.timestamps, dtype="<f8").astype(np.float64),
        np.frombuffer(state.keys, dtype="<i4").astype(np.int32),
    )
    if owner.features is not None and state.features is not None:
        owner.features.restore(state.features)
    owner.clock.time = state.time
    owner.last_msg = state.last_msg
