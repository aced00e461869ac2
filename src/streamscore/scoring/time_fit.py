"""Online fit of a forward call's processing time as a function of its batch size.

The model is `t(n) = a + b*n` (a fixed per-call part and a per-event part), refit on the recent
batches only (at most `window` of them, none older than `horizon` seconds), so that when the
machine gets slower or faster the fit follows within seconds. A quadratic term is used only
while it measurably predicts better: its two-fold cross-validated error must be at least 10 %
below the line's, and its curvature must be positive (a concave fit would promise ever cheaper
giant batches). Outliers (a GC pause, a preempted thread) are dropped by a 3-MAD rule before
the final fit. When recent sizes are too alike to separate `a` from `b`, only the overall
scale of the previous fit is updated. Refits happen at most every `refit_every` seconds (a fit
costs ~0.2 ms; a batch of one event costs less than that).

>>> fit = TimeFit(min_samples=4)
>>> for n in (1, 10, 100, 1000, 10, 100):
...     fit.add(n, 50e-6 + 1e-6 * n, now=0.0)
>>> round(fit.intercept * 1e6), round(fit.slope * 1e6, 3), fit.degree
(50, 1.0, 1)
>>> round(float(fit.predict(500)) * 1e6)
550
"""

from __future__ import annotations

from collections import deque

import numpy as np

QUADRATIC_GAIN = 0.9  # the quadratic must cut cross-validated error by 10 % to be used


class TimeFit:
    def __init__(
        self,
        window: int = 256,
        horizon: float = 5.0,
        min_samples: int = 16,
        refit_every: float = 0.05,
    ) -> None:
        self.window = window
        self.horizon = horizon
        self.min_samples = min_samples
        self.refit_every = refit_every
        self._refitted = -float("inf")
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=window)  # (t, n, s)
        self.coef = np.zeros(3)  # a, b, c of a + b*n + c*n^2
        self.degree = 1
        self.ready = False
        self.error = float("nan")  # mean |predicted - actual| / actual of the recent batches
        self._errors: deque[float] = deque(maxlen=window)

    @property
    def intercept(self) -> float:
        return float(self.coef[0])

    @property
    def slope(self) -> float:
        return float(self.coef[1])

    def predict(self, size: float | np.ndarray) -> np.ndarray:
        n = np.asarray(size, dtype=np.float64)
        return np.maximum(self.coef[0] + self.coef[1] * n + self.coef[2] * n * n, 1e-9)

    def add(self, size: int, seconds: float, now: float) -> None:
        """Record one batch, score the current fit on it, and refit."""
        if self.ready:
            self._errors.append(abs(float(self.predict(size)) - seconds) / max(seconds, 1e-9))
            self.error = float(np.mean(self._errors))
        self._samples.append((now, float(size), seconds))
        while len(self._samples) > self.min_samples and self._samples[0][0] < now - self.horizon:
            self._samples.popleft()
        if len(self._samples) >= self.min_samples and (
            not self.ready or now - self._refitted >= self.refit_every
        ):
            self._refitted = now
            self._refit()

    def _refit(self) -> None:
        _, n, t = (np.array(col) for col in zip(*self._samples, strict=True))
        if np.ptp(n) < max(2.0, 0.1 * float(np.mean(n))):
            if self.ready:  # sizes too alike: keep the shape, follow the level
                self.coef = self.coef * float(np.median(t / self.predict(n)))
            else:
                self.coef = np.array([float(np.median(t)), 0.0, 0.0])
                self.ready = True
            return
        keep = _inliers(n, t, _lstsq(n, t, 1))
        n, t = n[keep], t[keep]
        line = _lstsq(n, t, 1)
        self.coef, self.degree = line, 1
        if len(n) >= 8 and len(np.unique(n)) >= 4:
            quad_error = _cross_validated(n, t, 2)
            quadratic = _lstsq(n, t, 2)
            if quadratic[2] > 0 and quad_error < QUADRATIC_GAIN * _cross_validated(n, t, 1):
                self.coef, self.degree = quadratic, 2
        self.ready = True


def _design(n: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([n**k for k in range(degree + 1)], axis=1)


def _lstsq(n: np.ndarray, t: np.ndarray, degree: int) -> np.ndarray:
    scale = max(float(n.max()), 1.0)  # conditioning: fit in units of the largest size
    sol = np.linalg.lstsq(_design(n / scale, degree), t, rcond=None)[0]
    coef = np.zeros(3)
    coef[: degree + 1] = sol / scale ** np.arange(degree + 1)
    coef[0] = max(coef[0], 0.0)
    return coef


def _predict(coef: np.ndarray, n: np.ndarray) -> np.ndarray:
    return coef[0] + coef[1] * n + coef[2] * n * n


def _inliers(n: np.ndarray, t: np.ndarray, coef: np.ndarray) -> np.ndarray:
    residual = t - _predict(coef, n)
    mad = float(np.median(np.abs(residual - np.median(residual)))) or 1e-12
    return np.abs(residual - np.median(residual)) <= 3 * 1.4826 * mad


def _cross_validated(n: np.ndarray, t: np.ndarray, degree: int) -> float:
    """Mean absolute error of fits on one half predicting the other (even/odd batches)."""
    errors = []
    for train in (slice(0, None, 2), slice(1, None, 2)):
        test = slice(1, None, 2) if train.start == 0 else slice(0, None, 2)
        coef = _lstsq(n[train], t[train], degree)
        errors.append(np.mean(np.abs(_predict(coef, n[test]) - t[test])))
    return float(np.mean(errors))
