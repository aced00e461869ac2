"""Page-Hinkley change detection on the mean of K values, saying when the mean changed.

The test (Page 1954, "Continuous inspection schemes", Biometrika 41; Hinkley 1971, "Inference
about the change-point from cumulative sum tests", Biometrika 58) in its known-mean form
(Basseville & Nikiforov 1993, *Detection of Abrupt Changes*, §2.2): values are standardised
by a baseline mean and scale (the reference's), and for an upward change

    m_t = Σ_{i≤t} (z_i - δ),    alarm when m_t - min_{s≤t} m_s > λ,

(downward: the same on -z). `δ` is the smallest shift worth seeing, in standard deviations;
shifts below it pull `m` down and are never reported. The change happened just after the last
minimum of `m`, Hinkley's maximum-likelihood estimate of the change time, which is what is
reported, with the alarm's time and the shift estimated from the events since the change. The
baseline then moves to the new mean, so a later change (a return included) is seen too. River's
`PageHinkley` uses the running mean instead of a reference; here the reference is known.

Defaults, δ = 0.1 and λ = 100: for normal values the mean time to a false alarm (Siegmund's
approximation, (e^{2δb} - 1 - 2δb) / 2δ², b = λ + 1.166) is ~3·10¹⁰ events per direction, and a
0.5 sd shift is reported after ~250 events, 0.2 sd after ~1,000.

>>> detector = PageHinkley(columns=1)
>>> detector.start(0, mean=0.0, scale=1.0)
>>> values = np.r_[np.zeros(1000), np.ones(1000)][:, None]
>>> [(c.direction, c.event, round(c.shift, 2)) for c in detector.update(values, np.arange(2000.0))]
[('up', 1000, 1.0)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True, slots=True)
class ChangePoint:
    column: int
    direction: str  # "up" or "down"
    event: int  # events seen before the change: the first changed event's 0-based position
    time: float  # timestamp of the last event before the change
    detected_event: int  # events seen when the alarm was raised
    detected_time: float
    shift: float  # estimated change of the mean, in the value's units


class PageHinkley:
    def __init__(self, columns: int, delta: float = 0.1, threshold: float = 100.0) -> None:
        self.delta = delta
        self.threshold = threshold
        self.mean = np.zeros(columns)
        self.scale = np.full(columns, np.inf)  # infinite: the column is not watched (z = 0)
        self._sum = np.zeros((2, columns))  # [up, down] x column
        self._min = np.zeros((2, columns))
        self._min_event = np.zeros((2, columns), dtype=np.int64)
        self._min_time = np.full((2, columns), np.nan)
        self.events = 0
        self._last_time = np.nan

    def start(self, column: int, mean: float, scale: float) -> None:
        """Watch a column against a baseline; a constant baseline (scale 0) gets a scale of 1e-9 of
        its magnitude, so any move of it is a change, yet z stays finite."""
        self.mean[column] = mean
        self.scale[column] = scale if scale > 0 else 1e-9 * max(1.0, abs(mean))
        self._restart(column)

    def stop(self, column: int) -> None:
        self.scale[column] = np.inf
        self._restart(column)

    def _restart(self, column: int) -> None:
        self._sum[:, column] = 0.0
        self._min[:, column] = 0.0
        self._min_event[:, column] = self.events
        self._min_time[:, column] = self._last_time

    def add_column(self) -> None:
        self.mean = np.append(self.mean, 0.0)
        self.scale = np.append(self.scale, np.inf)
        self._sum = np.append(self._sum, np.zeros((2, 1)), axis=1)
        self._min = np.append(self._min, np.zeros((2, 1)), axis=1)
        self._min_event = np.append(self._min_event, np.full((2, 1), self.events), axis=1)
        self._min_time = np.append(self._min_time, np.full((2, 1), self._last_time), axis=1)

    def remove_column(self, column: int) -> None:
        self.mean = np.delete(self.mean, column)
        self.scale = np.delete(self.scale, column)
        for name in ("_sum", "_min", "_min_event", "_min_time"):
            setattr(self, name, np.delete(getattr(self, name), column, axis=1))

    def update(self, values: np.ndarray, timestamps: np.ndarray) -> list[ChangePoint]:
        """Feed N events (`values` float64 [N, K]); the changes detected among them, in order."""
        found: list[ChangePoint] = []
        low = 0
        while low < len(values):
            taken = _scan(
                values[low:],
                timestamps[low:],
                self.mean,
                self.scale,
                self.delta,
                self.threshold,
                self.events,
                self._sum,
                self._min,
                self._min_event,
                self._min_time,
            )
            self.events += taken
            self._last_time = float(timestamps[low + taken - 1])
            low += taken
            excess = self._sum - self._min
            if (excess > self.threshold).any():
                found += self._alarms(excess)
        return found

    def _alarms(self, excess: np.ndarray) -> list[ChangePoint]:
        found: list[ChangePoint] = []
        for side, column in zip(*np.nonzero(excess > self.threshold), strict=True):
            if any(c.column == column for c in found):  # both sides at once: the first wins
                continue
            length = self.events - int(self._min_event[side, column])
            shift_z = excess[side, column] / length + self.delta
            shift = float((shift_z if side == 0 else -shift_z) * self.scale[column])
            found.append(
                ChangePoint(
                    column=int(column),
                    direction="up" if side == 0 else "down",
                    event=int(self._min_event[side, column]),
                    time=float(self._min_time[side, column]),
                    detected_event=self.events,
                    detected_time=self._last_time,
                    shift=shift,
                )
            )
            self.mean[column] += shift
            self._restart(int(column))
        return found


@njit(cache=True, nogil=True)
def _scan(  # type: ignore[no-untyped-def]
    values, timestamps, mean, scale, delta, threshold, events, sums, lows, low_event, low_time
):
    """Advance the detectors event by event, in place, up to the first alarm; the events taken."""
    n, columns = values.shape
    for i in range(n):
        alarm = False
        for c in range(columns):
            z = (values[i, c] - mean[c]) / scale[c]
            for side in range(2):
                s = sums[side, c] + (z if side == 0 else -z) - delta
                sums[side, c] = s
                if s < lows[side, c]:
                    lows[side, c] = s
                    low_event[side, c] = events + i + 1
                    low_time[side, c] = timestamps[i]
                elif s - lows[side, c] > threshold:
                    alarm = True
        if alarm:
            return i + 1
    return n
