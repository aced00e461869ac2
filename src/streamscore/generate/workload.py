"""Synthetic request bodies, encoded once and re-stamped in place for every request.

Each template is a full body with fixed-width placeholders for timestamps (and event ids). Per
request, NumPy writes the current timestamps (and fresh ids) into a copy of the bytes, so the
generator spends microseconds per request, not per event, and stays out of the measurement.
"""

from __future__ import annotations

import numpy as np

TS_WIDTH = 14  # "1795324390.123"
ID_DIGITS = 12
_POW10 = 10 ** np.arange(12, -1, -1, dtype=np.int64)  # 13 digits of milliseconds


class Workload:
    def __init__(
        self,
        *,
        users: int,
        batch_size: int,
        late_fraction: float = 0.0,
        window: float = 300.0,
        seed: int = 0,
        ndjson: bool = False,
        event_ids: bool = False,
        run_id: str = "run",
        templates: int | None = None,
        features: int = 3,
        user_prefix: str = "user-",
        shift: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> None:
        """`shift`/`scale` (one per feature) move the feature distribution: drift on purpose."""
        rng = np.random.default_rng(seed)
        self.batch_size = batch_size
        self.ndjson = ndjson
        self.event_ids = event_ids
        self.run_id = run_id
        self.content_type = "application/x-ndjson" if ndjson else "application/json"
        self._user_prefix = user_prefix.encode()
        self._templates = []
        if templates is None:  # enough bodies that every user appears
            templates = max(16, min(1024, 3 * users // batch_size + 1))
        for _ in range(templates):
            user = rng.integers(0, users, batch_size)
            values = rng.random((batch_size, features))
            if scale is not None:
                values = values * scale
            if shift is not None:
                values = values + shift
            late = rng.random(batch_size) < late_fraction
            # On-time events land up to 2 s out of order; late ones behind the window.
            offsets = np.where(
                late, -(window + 5 + rng.random(batch_size) * 60), -rng.random(batch_size) * 2
            )
            self._templates.append(self._template(user, values, offsets))
        self._next = 0

    def _template(
        self, user: np.ndarray, features: np.ndarray, offsets: np.ndarray
    ) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
        parts: list[bytes] = []
        ts_at: list[int] = []
        id_at: list[int] = []
        size = 0
        sep = b"\n" if self.ndjson else b","
        head = b"" if self.ndjson else b'{"events":['
        parts.append(head)
        size += len(head)
        for i in range(len(user)):
            if i:
                parts.append(sep)
                size += len(sep)
            numbers = b",".join(b"%.6f" % x for x in features[i])
            start = b'{"user_id":"%s%d","features":[%s],"timestamp":' % (
                self._user_prefix,
                user[i],
                numbers,
            )
            ts_at.append(size + len(start))
            event = start + b"0" * TS_WIDTH
            if self.event_ids:
                prefix = b',"event_id":"%s-' % self.run_id.encode()
                id_at.append(size + len(event) + len(prefix))
                event += prefix + b"0" * ID_DIGITS + b'"'
            event += b"}"
            parts.append(event)
            size += len(event)
        tail = b"\n" if self.ndjson else b"]}"
        parts.append(tail)
        return b"".join(parts), np.array(ts_at), np.array(id_at, dtype=np.int64), offsets

    def body(self, now: float, first_id: int = 0) -> bytes:
        """The next body, stamped with times around `now` and ids `first_id...` (if any)."""
        template, ts_at, id_at, offsets = self._templates[self._next % len(self._templates)]
        self._next += 1
        buf = np.frombuffer(bytearray(template), dtype=np.uint8)
        ms = np.round((now + offsets) * 1000).astype(np.int64)
        digits = (ms[:, None] // _POW10[None, :]) % 10 + 48
        stamped = np.concatenate(
            [digits[:, :10], np.full((len(ms), 1), ord(".")), digits[:, 10:]], axis=1
        )
        buf[ts_at[:, None] + np.arange(TS_WIDTH)] = stamped
        if self.event_ids:
            ids = first_id + np.arange(len(id_at), dtype=np.int64)
            id_digits = (ids[:, None] // _POW10[-ID_DIGITS:][None, :]) % 10 + 48
            buf[id_at[:, None] + np.arange(ID_DIGITS)] = id_digits
        return buf.tobytes()


def event_id(run_id: str, number: int) -> str:
    """The id that `Workload.body` writes for event `number` of a run."""
    return f"{run_id}-{number:0{ID_DIGITS}d}"
