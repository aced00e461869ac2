"""Feature sets declared in TOML, parsed into typed, validated, fingerprinted definitions.

A file holds one or more `[[sets]]`, each with its own `version`; a set lists `[[sets.features]]`
(windowed aggregations, per-event/session features) and `[[sets.composites]]`. Declaring what
is computed apart from how (tiles, kernels) is what Feast/Tecton/Chronon do; the fingerprint lets
a service refuse an existing version whose definition changed instead of silently mixing values.

>>> defs = parse('''
... [[sets]]
... version = "v1"
... [[sets.features]]
... name = "events"
... aggregation = "count"
... windows = ["5m", "1h"]
... [[sets.features]]
... name = "hour_of_day"
... kind = "hour_of_day"
... ''')
>>> defs["v1"].names
('events_5m', 'events_1h', 'hour_of_day')
>>> defs["v1"].horizon, defs.fingerprint("v1") == parse(defs.canonical("v1")).fingerprint("v1")
(3600.0, True)
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from streamscore.features.windows import TILES_PER_WINDOW

AGGREGATIONS = ("count", "sum", "mean", "min", "max", "last", "distinct_count", "median")
NUMERIC_AGGREGATIONS = ("sum", "mean", "min", "max", "median")
KINDS = ("hour_of_day", "seconds_since_previous", "session_events", "is_active_session")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")


class DefinitionError(ValueError):
    """A feature file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Source:
    """What an aggregation reads: the event itself, its score, its type, or one attribute."""

    kind: str  # "event" | "score" | "event_type" | "attribute"
    attribute: str | None = None

    @property
    def label(self) -> str:
        return f"attributes.{self.attribute}" if self.kind == "attribute" else self.kind


@dataclass(frozen=True)
class Window:
    """A sliding event-time window and the tile its pre-aggregates are kept at (W/60)."""

    label: str
    seconds: float

    @property
    def tile(self) -> float:
        return self.seconds / TILES_PER_WINDOW


@dataclass(frozen=True)
class Aggregate:
    """One declared aggregation; it yields a feature per window, named `<name>_<window>`."""

    name: str
    aggregation: str
    source: Source
    event_types: tuple[str, ...] | None
    windows: tuple[Window, ...]

    @property
    def names(self) -> tuple[str, ...]:
        if not self.windows:
            return (self.name,)
        return tuple(f"{self.name}_{w.label}" for w in self.windows)


@dataclass(frozen=True)
class EventFeature:
    """A per-event or session feature of the user's latest event (`kind` in KINDS)."""

    name: str
    kind: str


@dataclass(frozen=True)
class Composite:
    """`100 * sum(weight * min(1, input / cap))` over numeric features (null inputs count 0).

    Inputs are non-negative counts, flags and durations and the weights sum to 1, so the value
    always lies in [0, 100].
    """

    name: str
    inputs: tuple[tuple[str, float, float], ...]  # (feature, weight, cap)


@dataclass(frozen=True)
class FeatureSet:
    version: str
    session_gap: float
    # An event later than this (behind stream time when it arrives) joins no session: sessions
    # older than that are dropped, which bounds their memory.
    session_lookback: float
    aggregates: tuple[Aggregate, ...]
    event_features: tuple[EventFeature, ...]
    composites: tuple[Composite, ...]
    names: tuple[str, ...] = field(default=())

    @cached_property
    def horizon(self) -> float:
        """Longest window (at least the session gap): older events count in no feature."""
        spans = [w.seconds for a in self.aggregates for w in a.windows]
        return max([self.session_gap, *spans])


class FeatureDefinitions:
    """Every version declared in one file, by version name."""

    def __init__(self, sets: dict[str, FeatureSet]) -> None:
        self.sets = sets

    def __getitem__(self, version: str) -> FeatureSet:
        if version not in self.sets:
            raise KeyError(f"unknown feature version {version!r}; declared: {sorted(self.sets)}")
        return self.sets[version]

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(self.sets)

    def canonical(self, version: str) -> str:
        """The set as normalised TOML: same meaning, same text (what the fingerprint hashes)."""
        fs = self[version]
        lines = ["[[sets]]", f'version = "{fs.version}"', f'session_gap = "{int(fs.session_gap)}s"']
        lines.append(f'session_lookback = "{int(fs.session_lookback)}s"')
        for a in sorted(fs.aggregates, key=lambda a: a.name):
            lines += ["[[sets.features]]", f'name = "{a.name}"', f'aggregation = "{a.aggregation}"']
            lines.append(f'of = "{a.source.label}"')
            if a.event_types is not None:
                lines.append(f"where.event_type = {json.dumps(sorted(a.event_types))}")
            if a.windows:
                lines.append(f"windows = {json.dumps([w.label for w in a.windows])}")
        for e in sorted(fs.event_features, key=lambda e: e.name):
            lines += ["[[sets.features]]", f'name = "{e.name}"', f'kind = "{e.kind}"']
        for c in sorted(fs.composites, key=lambda c: c.name):
            lines += ["[[sets.composites]]", f'name = "{c.name}"']
            for name, weight, cap in sorted(c.inputs):
                lines.append(f"inputs.{name} = {{ weight = {weight!r}, cap = {cap!r} }}")
        return "\n".join(lines) + "\n"

    def fingerprint(self, version: str) -> str:
        """sha256 of the canonical form: equal iff the version computes the same features."""
        return hashlib.sha256(self.canonical(version).encode()).hexdigest()[:16]


def load(path: str | Path) -> FeatureDefinitions:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read feature file: {exc}") from exc
    return parse(text, origin=str(path))


def default() -> FeatureDefinitions:
    """The feature set shipped with the package (`default.toml`)."""
    text = resources.files("streamscore.features").joinpath("default.toml").read_text()
    return parse(text, origin="default.toml")


def parse(text: str, origin: str = "<features>") -> FeatureDefinitions:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"{origin}: not valid TOML: {exc}") from exc
    _keys(doc, {"sets"}, origin)
    raw_sets = doc.get("sets")
    if not isinstance(raw_sets, list) or not raw_sets:
        raise DefinitionError(f"{origin}: declare at least one [[sets]] with a version")
    sets: dict[str, FeatureSet] = {}
    for i, raw in enumerate(raw_sets):
        fs = _feature_set(raw, f"{origin}: sets[{i}]")
        if fs.version in sets:
            raise DefinitionError(f"{origin}: version {fs.version!r} declared twice")
        sets[fs.version] = fs
    return FeatureDefinitions(sets)


def parse_duration(text: object, where: str) -> float:
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise DefinitionError(f"{where}: duration {text!r} is not like '5m', '1h', '7d', '90s'")
    return float(int(match[1]) * UNITS[match[2]])


def _feature_set(raw: Any, where: str) -> FeatureSet:
    if not isinstance(raw, dict):
        raise DefinitionError(f"{where}: must be a table")
    _keys(raw, {"version", "session_gap", "session_lookback", "features", "composites"}, where)
    version = raw.get("version")
    if not isinstance(version, str) or not re.match(r"^v[0-9]+[a-z0-9_.-]*$", version):
        raise DefinitionError(f"{where}: version must be a string like 'v1', got {version!r}")
    where = f"{where} (version {version})"
    gap = parse_duration(raw.get("session_gap", "30m"), f"{where}: session_gap")
    lookback = parse_duration(raw.get("session_lookback", "24h"), f"{where}: session_lookback")
    if lookback < gap:
        raise DefinitionError(f"{where}: session_lookback must be at least session_gap")
    aggregates: list[Aggregate] = []
    event_features: list[EventFeature] = []
    for j, item in enumerate(raw.get("features", [])):
        spot = f"{where}: features[{j}]"
        if not isinstance(item, dict):
            raise DefinitionError(f"{spot}: must be a table")
        if "kind" in item:
            event_features.append(_event_feature(item, spot))
        else:
            aggregates.append(_aggregate(item, spot))
    names: list[str] = [n for a in aggregates for n in a.names]
    names += [e.name for e in event_features]
    kinds = {n: "numeric" for n in names}
    for a in aggregates:
        if a.aggregation == "last" and a.source.kind != "score":
            kinds.update(dict.fromkeys(a.names, "any"))
    composites = [
        _composite(c, f"{where}: composites[{k}]", kinds)
        for k, c in enumerate(raw.get("composites", []))
    ]
    names += [c.name for c in composites]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DefinitionError(f"{where}: feature name {name!r} declared twice")
        seen.add(name)
    if not names:
        raise DefinitionError(f"{where}: declares no features")
    return FeatureSet(
        version,
        gap,
        lookback,
        tuple(aggregates),
        tuple(event_features),
        tuple(composites),
        tuple(names),
    )


def _aggregate(item: dict[str, Any], where: str) -> Aggregate:
    _keys(item, {"name", "aggregation", "of", "where", "windows"}, where)
    name = _name(item.get("name"), where)
    where = f"{where} ({name})"
    agg = item.get("aggregation")
    if agg not in AGGREGATIONS:
        raise DefinitionError(f"{where}: aggregation {agg!r} is not one of {AGGREGATIONS}")
    source = _source(item.get("of", "event"), where)
    if source.kind == "event" and agg != "count":
        raise DefinitionError(f"{where}: {agg} needs `of` (score, event_type or attributes.X)")
    if source.kind == "event_type" and agg in NUMERIC_AGGREGATIONS:
        raise DefinitionError(f"{where}: {agg} needs a numeric source, event_type is a string")
    event_types = None
    if "where" in item:
        cond = item["where"]
        if not isinstance(cond, dict) or set(cond) != {"event_type"}:
            raise DefinitionError(f"{where}: `where` supports only event_type = [...]")
        types = cond["event_type"]
        if isinstance(types, str):
            types = [types]
        if not types or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in types):
            raise DefinitionError(f"{where}: where.event_type must list 1-64 character strings")
        event_types = tuple(sorted(set(types)))
    raw_windows = item.get("windows", [])
    if not isinstance(raw_windows, list) or (not raw_windows and agg != "last"):
        raise DefinitionError(f"{where}: windows must be a non-empty list like ['1h', '24h']")
    windows = []
    for label in raw_windows:
        seconds = parse_duration(label, f"{where}: window")
        if seconds % TILES_PER_WINDOW:
            raise DefinitionError(f"{where}: window {label!r} must be a whole number of minutes")
        windows.append(Window(label, seconds))
    if len({w.seconds for w in windows}) != len(windows):
        raise DefinitionError(f"{where}: a window is listed twice")
    return Aggregate(name, agg, source, event_types, tuple(windows))


def _event_feature(item: dict[str, Any], where: str) -> EventFeature:
    _keys(item, {"name", "kind"}, where)
    name = _name(item.get("name"), where)
    if item["kind"] not in KINDS:
        raise DefinitionError(f"{where} ({name}): kind {item['kind']!r} is not one of {KINDS}")
    return EventFeature(name, item["kind"])


def _composite(item: Any, where: str, kinds: dict[str, str]) -> Composite:
    if not isinstance(item, dict):
        raise DefinitionError(f"{where}: must be a table")
    _keys(item, {"name", "inputs"}, where)
    name = _name(item.get("name"), where)
    where = f"{where} ({name})"
    raw = item.get("inputs")
    if not isinstance(raw, dict) or not raw:
        raise DefinitionError(f"{where}: inputs must map feature names to {{weight, cap}}")
    inputs = []
    for feature, spec in raw.items():
        if kinds.get(feature) != "numeric":
            raise DefinitionError(f"{where}: input {feature!r} is not a numeric feature of the set")
        if not isinstance(spec, dict) or set(spec) != {"weight", "cap"}:
            raise DefinitionError(f"{where}: input {feature!r} needs exactly weight and cap")
        weight, cap = spec["weight"], spec["cap"]
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (weight, cap)):
            raise DefinitionError(f"{where}: input {feature!r}: weight and cap must be numbers")
        if weight <= 0 or cap <= 0:
            raise DefinitionError(f"{where}: input {feature!r}: weight and cap must be > 0")
        inputs.append((feature, float(weight), float(cap)))
    if abs(sum(w for _, w, _ in inputs) - 1.0) > 1e-9:
        raise DefinitionError(f"{where}: weights must sum to 1 (the score stays within 0-100)")
    return Composite(name, tuple(inputs))


def _source(text: object, where: str) -> Source:
    if text in ("event", "score", "event_type"):
        return Source(str(text))
    if isinstance(text, str) and text.startswith("attributes."):
        attribute = text.removeprefix("attributes.")
        if 0 < len(attribute) <= 64:
            return Source("attribute", attribute)
    raise DefinitionError(
        f"{where}: `of` {text!r} is not event, score, event_type or attributes.<name>"
    )


def _name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(f"{where}: name {name!r} must match {_NAME.pattern}")
    return name


def _keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise DefinitionError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
