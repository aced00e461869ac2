"""One A/B experiment's state: assignment, exposure and conversion counts, and its verdict.

The sample of the test is *users*: a user enters at their first event observed while the
experiment runs (that event counts as an event, never as a conversion) and converts once, at the
first later-observed event of theirs that matches `outcome` and whose timestamp is not before
their first event's (a matching event that happened before exposure but arrived late does not
count). So a user who only ever sends one "purchase" event has not converted. The conversion
indicator of a user can flip from 0 to 1 later; under no difference both variants' users share
its distribution at every moment (assignment ignores behaviour), so the p-value's guarantee
holds. The difference and its interval are about "converted so far": while recent users have
not yet had time to convert, a real difference is diluted and grows toward its eventual size.

After each `observe` batch the sequential test is updated with the current counts (control =
first variant, treatment = second); the p-value is a running minimum, so it depends only on
those batch-end looks, each of which is allowed. Exactly two variants are supported: assignment
works for any number, but a verdict over several treatments would need a multiplicity rule.

>>> exp = Experiment("demo", [Variant("control", "default@aa", 0.5),
...                           Variant("treatment", "m2@bb", 0.5)], {"event_type": "purchase"})
>>> exp.observe(["alice", "alice", "alice"], np.array([1.0, 2.0, 3.0]),
...             ["view", "purchase", "purchase"], np.array([0.25, 0.5, 0.75]))
>>> [(v["users"], v["events"], v["conversions"]) for v in exp.result()["variants"]]
[(1, 3, 1), (0, 0, 0)]
>>> exp.result()["decision"]
'waiting for users in both variants (1 so far)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from streamscore.experiments.assignment import assign
from streamscore.experiments.intervals import wilson_interval
from streamscore.experiments.sequential import DEFAULT_TAU, MixtureSPRT


class Variant(msgspec.Struct, frozen=True):
    name: str
    model: str
    weight: float


class _Snapshot(msgspec.Struct):
    name: str
    variants: list[Variant]
    outcome: dict[str, str]
    status: str
    alpha: float
    tau: float
    users: list[int]
    events: list[int]
    conversions: list[int]
    score_sum: list[float]
    log_lambda_max: float
    lower: float
    upper: float
    user_ids: list[str]
    user_variant: bytes
    first_timestamp: bytes
    converted: bytes


class Experiment:
    """Counts per variant plus a compact per-user record (row in three NumPy arrays)."""

    def __init__(
        self,
        name: str,
        variants: Sequence[Variant],
        outcome: Mapping[str, str],
        alpha: float = 0.05,
        tau: float = DEFAULT_TAU,
    ) -> None:
        if len(variants) != 2 or variants[0].name == variants[1].name:
            raise ValueError("an experiment needs exactly two variants with distinct names")
        if set(outcome) != {"event_type"} or not isinstance(outcome["event_type"], str):
            raise ValueError('outcome must be {"event_type": <string>}')
        self.name = name
        self.variants = list(variants)
        self.weights = [v.weight for v in variants]
        assign(name, [], self.weights)  # validates the name and the weights up front
        self.outcome = dict(outcome)
        self.status = "running"
        self.alpha = alpha
        self.test = MixtureSPRT(alpha, tau)
        self.users = np.zeros(2, np.int64)
        self.events = np.zeros(2, np.int64)
        self.conversions = np.zeros(2, np.int64)
        self.score_sum = np.zeros(2, np.float64)
        self._rows: dict[str, int] = {}
        self._variant = np.zeros(1024, np.int8)
        self._first_timestamp = np.zeros(1024, np.float64)
        self._converted = np.zeros(1024, np.bool_)

    def assign(self, user_ids: Sequence[str]) -> np.ndarray:
        """Variant index per user (0 = control), e.g. to pick each event's scoring model."""
        return assign(self.name, user_ids, self.weights)

    def variant_of(self, user_id: str) -> Variant:
        return self.variants[int(self.assign([user_id])[0])]

    def observe(
        self,
        user_ids: Sequence[str],
        timestamps: np.ndarray,
        event_types: Sequence[str | None],
        scores: np.ndarray,
    ) -> None:
        """Count one batch of scored events, in arrival order; ignored once stopped."""
        n = len(user_ids)
        if self.status != "running" or n == 0:
            return
        timestamps = np.asarray(timestamps, dtype=np.float64)
        rows = np.fromiter((self._rows.get(u, -1) for u in user_ids), np.int64, n)
        first = np.zeros(n, np.bool_)
        new = np.flatnonzero(rows < 0)
        if len(new):
            self._enter([user_ids[i] for i in new])
            rows[new] = [self._rows[user_ids[i]] for i in new]
            entered, at = np.unique(rows[new], return_index=True)
            first[new[at]] = True
            self._first_timestamp[entered] = timestamps[new[at]]
        variant = self._variant[rows]
        self.events += np.bincount(variant, minlength=2)
        self.score_sum += np.bincount(variant, weights=np.asarray(scores, np.float64), minlength=2)
        target = self.outcome["event_type"]
        matching = np.fromiter((e == target for e in event_types), np.bool_, n)
        converts = (
            matching & ~first & (timestamps >= self._first_timestamp[rows]) & ~self._converted[rows]
        )
        if converts.any():
            converted = np.unique(rows[converts])
            self._converted[converted] = True
            self.conversions += np.bincount(self._variant[converted], minlength=2)
        self.test.update(self.users[0], self.conversions[0], self.users[1], self.conversions[1])

    def _enter(self, user_ids: list[str]) -> None:
        """Give each new user (duplicates allowed, first wins) a row and its variant."""
        fresh = list(dict.fromkeys(user_ids))
        start = len(self._rows)
        end = start + len(fresh)
        if end > len(self._variant):
            capacity = max(end, 2 * len(self._variant))
            for attr in ("_variant", "_first_timestamp", "_converted"):
                old = getattr(self, attr)
                grown = np.zeros(capacity, old.dtype)
                grown[:start] = old[:start]
                setattr(self, attr, grown)
        self._rows.update(zip(fresh, range(start, end), strict=True))
        variants = self.assign(fresh)
        self._variant[start:end] = variants
        self._converted[start:end] = False
        self.users += np.bincount(variants, minlength=2)

    def stop(self) -> None:
        """Freeze the experiment: later batches are ignored, the verdict stays as it is."""
        self.status = "stopped"

    def result(self) -> dict[str, Any]:
        users = self.users.tolist()
        conversions = self.conversions.tolist()
        lower, upper = wilson_interval(self.conversions, self.users, 1 - self.alpha)
        rates = [c / u if u else None for c, u in zip(conversions, users, strict=True)]
        variants = [
            {
                "name": v.name,
                "model": v.model,
                "users": users[i],
                "events": int(self.events[i]),
                "conversions": conversions[i],
                "conversion_rate": rates[i],
                "interval": [float(lower[i]), float(upper[i])],
                "score_mean": float(self.score_sum[i] / self.events[i]) if self.events[i] else None,
            }
            for i, v in enumerate(self.variants)
        ]
        difference = rates[1] - rates[0] if rates[0] is not None and rates[1] is not None else None
        lo, hi = float(self.test.lower), float(self.test.upper)
        p_value = float(self.test.p_value)
        significant = p_value <= self.alpha
        return {
            "name": self.name,
            "status": self.status,
            "variants": variants,
            "difference": difference,
            "difference_interval": [lo, hi],
            "p_value": p_value,
            "significant": significant,
            "decision": self._decision(difference, (lo + hi) / 2, p_value, significant),
        }

    def _decision(
        self, difference: float | None, interval_mid: float, p_value: float, significant: bool
    ) -> str:
        total = int(self.users.sum())
        control, treatment = self.variants[0].name, self.variants[1].name
        prefix = "stopped: " if self.status == "stopped" else ""
        if difference is None:
            return f"{prefix}waiting for users in both variants ({total} so far)"
        if significant:
            # The confidence sequence excludes 0, so its sign is the direction (the latest
            # point estimate may lie outside an intersection of earlier intervals).
            verb = "better" if interval_mid > 0 else "worse"
            return (
                f"{prefix}{treatment} converts {verb} than {control} "
                f"({100 * difference:+.1f} pp, always-valid p={p_value:.2g})"
            )
        return (
            f"{prefix}no significant difference {'yet ' if not prefix else ''}after {total} users "
            f"(always-valid p={p_value:.2g})"
        )

    def to_bytes(self) -> bytes:
        size = len(self._rows)
        return msgspec.msgpack.encode(
            _Snapshot(
                name=self.name,
                variants=self.variants,
                outcome=self.outcome,
                status=self.status,
                alpha=self.alpha,
                tau=self.test.tau,
                users=self.users.tolist(),
                events=self.events.tolist(),
                conversions=self.conversions.tolist(),
                score_sum=self.score_sum.tolist(),
                log_lambda_max=float(self.test.log_lambda_max),
                lower=float(self.test.lower),
                upper=float(self.test.upper),
                user_ids=list(self._rows),
                user_variant=self._variant[:size].tobytes(),
                first_timestamp=self._first_timestamp[:size].astype("<f8").tobytes(),
                converted=self._converted[:size].tobytes(),
            )
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> Experiment:
        s = msgspec.msgpack.decode(blob, type=_Snapshot)
        exp = cls(s.name, s.variants, s.outcome, s.alpha, s.tau)
        exp.status = s.status
        exp.test = MixtureSPRT.restore(s.alpha, s.tau, s.log_lambda_max, s.lower, s.upper)
        exp.users = np.array(s.users, np.int64)
        exp.events = np.array(s.events, np.int64)
        exp.conversions = np.array(s.conversions, np.int64)
        exp.score_sum = np.array(s.score_sum, np.float64)
        exp._rows = dict(zip(s.user_ids, range(len(s.user_ids)), strict=True))
        exp._variant = np.frombuffer(s.user_variant, np.int8).copy()
        exp._first_timestamp = np.frombuffer(s.first_timestamp, "<f8").astype(np.float64)
        exp._converted = np.frombuffer(s.converted, np.bool_).copy()
        return exp
