"""A model that reads computed features: what it declares, and its input rows per event.

A model declares its inputs in a sidecar next to it, `MODEL.features.json` (for `model.pt`,
`model.features.json`):

    {"version": "v1", "features": ["events_1h", "purchases_24h", "is_active_session"],
     "raw": false, "null": 0.0}

Its input row is `[raw vector (if "raw"), then the listed features in the listed order]`, as
float32: numbers as they are, booleans 0/1, null (an empty window's mean, no previous event)
as `null` (default 0.0). Categorical features (`last` of an event type or text attribute) are
not model inputs and refused at start. The model's width must equal the number of listed
features, plus the raw vector's width when `raw` is true; with `"raw": false` events need no
`features` at all. Each row holds the user's features with the event itself applied (see
`FeatureEngine.preview`): the event counts in its windows, its own score does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamscore.events import EventBatch
from streamscore.features.definitions import FeatureDefinitions
from streamscore.features.engine import FeatureEngine
from streamscore.features.stage import FeatureStage


class InputsError(ValueError):
    """The sidecar cannot work with this model or feature file (`serve` exits 2)."""


@dataclass(frozen=True)
class ModelFeatures:
    version: str | None  # None: the service's default version
    names: tuple[str, ...]
    raw: bool = False
    null: float = 0.0


def sidecar(model: Path) -> Path:
    return model.with_suffix(".features.json")


def load(model: Path) -> ModelFeatures | None:
    """The model's declared feature inputs, or None when it reads only the raw vector."""
    path = sidecar(model)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputsError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - {"version", "features", "raw", "null"}:
        raise InputsError(f"{path}: expected an object with version, features, raw, null")
    names = doc.get("features")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InputsError(f"{path}: features must be a non-empty list of feature names")
    version, raw, null = doc.get("version"), doc.get("raw", False), doc.get("null", 0.0)
    if version is not None and not isinstance(version, str):
        raise InputsError(f"{path}: version must be a string")
    if not isinstance(raw, bool) or not isinstance(null, int | float) or isinstance(null, bool):
        raise InputsError(f"{path}: raw must be true/false and null a number")
    return ModelFeatures(version, tuple(names), raw, float(null))


def raw_width(spec: ModelFeatures | None, model_width: int) -> int:
    """How many raw `features` each event must carry for this model."""
    if spec is None:
        return model_width
    width = model_width - len(spec.names) if spec.raw else 0
    if width < 0 or (not spec.raw and model_width != len(spec.names)):
        raise InputsError(
            f"the model reads {model_width} inputs but its sidecar lists {len(spec.names)} "
            f"features{' plus the raw vector' if spec.raw else ''}"
        )
    return width


def check(spec: ModelFeatures, definitions: FeatureDefinitions, default_version: str) -> None:
    version = spec.version or default_version
    try:
        FeatureEngine(definitions, [version]).vector(["probe"], version, spec.names)
    except (KeyError, ValueError) as exc:
        raise InputsError(f"model features: {exc}") from None


class ModelInputs:
    """`Pipeline(model_inputs=...)`: each new event's float32 input row."""

    def __init__(self, spec: ModelFeatures, stage: FeatureStage) -> None:
        self.spec = spec
        self.stage = stage

    def __call__(self, batch: EventBatch) -> np.ndarray:
        version, engine = self.stage.engine(self.spec.version)
        n = len(batch)
        rows = engine.preview(
            batch.user_ids,
            batch.timestamps,
            batch.event_types if batch.event_types is not None else [None] * n,
            batch.attributes if batch.attributes is not None else [None] * n,
            version,
            self.spec.names,
        )
        np.nan_to_num(rows, copy=False, nan=self.spec.null)
        if self.spec.raw:
            return np.hstack([batch.features.astype(np.float32), rows])
        return rows
