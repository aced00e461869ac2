"""Named models with immutable versions `NAME@<first 12 hex of the weights' sha256>`.

Every version is validated exactly as `--model` (`load_model`) and kept as a file
`DIR/NAME/<digest>.pt`, so uploads survive restarts; the active version is a named state of
the store (`models.active`), so it survives them too, on either store. `--model PATH` is
registered as `default` at every start; when it differs from the one given at the last start
(`models.cli`), the operator changed the flag and it becomes active again.

>>> import tempfile
>>> from streamscore.scoring.model import create_model
>>> class Store(dict):
...     def register_model(self, version): return self.setdefault(version, len(self) + 1)
...     def save_state(self, key, value): self[key] = value
...     def load_state(self, key): return self.get(key)
>>> root = Path(tempfile.mkdtemp())
>>> registry = ModelRegistry(Store(), root / "models")
>>> first = registry.add("default", create_model(root / "a.pt", seed=1).read_bytes())
>>> second = registry.add("m2", create_model(root / "b.pt", seed=2).read_bytes())
>>> registry.activate(first.version)
>>> [m["name"] for m in registry.listing()["models"]], registry.active == first.version
(['default', 'm2'], True)
>>> ModelRegistry(registry.store, root / "models").versions.keys() == registry.versions.keys()
True
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from streamscore.scoring.model import LoadedModel, ModelLoadError, load_model
from streamscore.scoring.scorer import Scorer

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ACTIVE_KEY = "models.active"
CLI_KEY = "models.cli"


class RegistryStore(Protocol):
    def register_model(self, version: str) -> int: ...
    def save_state(self, key: str, value: bytes) -> None: ...
    def load_state(self, key: str) -> bytes | None: ...


class UnknownVersion(KeyError):
    """No such model version (404 / 400)."""


@dataclass(eq=False)
class Version:
    name: str
    version: str
    scorer: Scorer
    model_id: int  # the store's id, recorded with every score it produces
    events: int = 0  # scored on the ingest path (not window re-scoring nor shadow)
    seconds: float = 0.0

    def record(self, events: int, seconds: float) -> None:
        self.events += events
        self.seconds += seconds

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "n_features": self.scorer.n_features,
            "events_scored": self.events,
            "mean_scoring_seconds_per_event": self.seconds / self.events if self.events else None,
        }


class ModelRegistry:
    def __init__(self, store: RegistryStore, directory: Path, threads: int = 1) -> None:
        self.store = store
        self.directory = directory
        self.threads = threads
        self.versions: dict[str, Version] = {}
        self._lock = threading.Lock()  # uploads from HTTP threads
        saved = store.load_state(ACTIVE_KEY)
        self.active: str | None = None
        for path in sorted(directory.glob("*/*.pt")):
            try:
                self._register(path.parent.name, load_model(path, path.parent.name))
            except ModelLoadError:  # a file dropped in by hand: skip it, say so in the listing
                continue
        if saved is not None and saved.decode() in self.versions:
            self.active = saved.decode()

    def add(self, name: str, data: bytes) -> Version:
        """Validate and keep a model file's bytes as a version of `name` (idempotent)."""
        if not NAME.fullmatch(name):
            raise ModelLoadError("a model name is 1-64 letters, digits, '_', '.' or '-'")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.pt"
            path.write_bytes(data)
            model = load_model(path, name)
        with self._lock:
            known = self.versions.get(model.version)
            if known is not None:
                return known
            target = self.directory / name / f"{model.version.split('@')[1]}.pt"
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".tmp{os.getpid()}")
            partial.write_bytes(data)
            os.replace(partial, target)  # a crash never leaves half a model under its name
            return self._register(name, model)

    def add_cli(self, path: Path) -> Version:
        """`--model PATH` as a version of `default`; active if new to this store's last start."""
        version = self.add("default", path.read_bytes())
        digest = hashlib.sha256(version.version.encode()).hexdigest().encode()
        if self.active is None or self.store.load_state(CLI_KEY) != digest:
            self.activate(version.version)
            self.store.save_state(CLI_KEY, digest)
        return version

    def _register(self, name: str, model: LoadedModel) -> Version:
        version = Version(
            name,
            model.version,
            Scorer(model, self.threads),
            self.store.register_model(model.version),
        )
        self.versions[model.version] = version
        return version

    def get(self, version: str) -> Version:
        try:
            return self.versions[version]
        except KeyError:
            raise UnknownVersion(version) from None

    def activate(self, version: str) -> None:
        """Record `version` as active (the caller swaps the scoring model)."""
        self.get(version)
        self.store.save_state(ACTIVE_KEY, version.encode())
        self.active = version

    def names(self) -> list[str]:
        return sorted({v.name for v in self.versions.values()})

    def listing(self) -> dict[str, Any]:
        models = []
        for name in self.names():
            versions = [v for v in self.versions.values() if v.name == name]
            active = self.active if self.active and self.active.split("@")[0] == name else None
            models.append(
                {
                    "name": name,
                    "versions": [v.version for v in versions],
                    "active": active,
                    "counters": [v.summary() for v in versions],
                }
            )
        return {"models": models, "active": self.active}
