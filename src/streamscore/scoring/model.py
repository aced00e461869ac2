"""The scoring model: the seeds' default MLP, its deterministic creation, and safe loading.

Loading never unpickles arbitrary objects: a state_dict goes through
`torch.load(weights_only=True)`, anything else must be TorchScript.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DEMO_SEED = 20250925


class InefficientModel(nn.Module):
    """The seeds' model: Linear(F,128) -> ReLU -> Dropout(0) -> Linear(128,128) -> ReLU -> Linear(128,1)."""

    def __init__(self, n_features: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, 128),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Linear(128, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ModelLoadError(ValueError):
    """The file is neither a tensor-only state_dict of the default MLP nor TorchScript."""


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    n_features: int
    version: str  # "<name>@<weights sha256 prefix>": ties stored scores to exact weights


def create_model(path: Path, n_features: int = 3, seed: int = DEMO_SEED) -> Path:
    """Write the default MLP's state_dict with weights fixed by `seed` (same seed, same bytes)."""
    torch.manual_seed(seed)
    model = InefficientModel(n_features)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def load_model(path: Path, name: str = "default") -> LoadedModel:
    """Load a state_dict (weights only) or a TorchScript file, in eval mode, as a version of
    model `name` (versions of files loaded before the registry, `<file>@<digest>`, stay valid
    in stores: they are only labels of their model ids)."""
    if _is_torchscript(path):
        module, n_features = _load_torchscript(path)
    else:
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except OSError:  # a missing or unreadable file: the caller says which
            raise
        except Exception as exc:  # untrusted bytes: torch's unpickler raises all sorts on junk
            raise ModelLoadError(
                f"refusing to load {path}: not a weights-only state_dict ({_first_line(exc)}) "
                "and not TorchScript"
            ) from None
        module, n_features = _from_state_dict(state)
    module.eval()
    version = f"{name}@{_weights_digest(module)}"
    return LoadedModel(module=module, n_features=n_features, version=version)


def _weights_digest(module: nn.Module) -> str:
    """Hash of the weights themselves, so the same weights give the same version in any file."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


MLP_KEYS = ("0.weight", "0.bias", "3.weight", "3.bias", "5.weight", "5.bias")
EXPORT_HINT = (
    "export other architectures as TorchScript: "
    "torch.jit.script(model).save(path) (or torch.jit.trace(model, example).save(path))"
)


def _from_state_dict(state: object) -> tuple[nn.Module, int]:
    """The default MLP from its state_dict, whatever the Sequential's attribute is called
    (`net` here, `layers` in the seeds' `InefficientModel`, none for a bare Sequential)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError("model file holds no state_dict of tensors")
    prefixes = {key[: -len("0.weight")] for key in state if key.endswith("0.weight")}
    prefix = next((p for p in prefixes if set(state) == {p + k for k in MLP_KEYS}), None)
    first = None if prefix is None else state[prefix + "0.weight"]
    if first is None or first.ndim != 2:
        raise ModelLoadError(
            "state_dict does not match the default MLP (Linear(F,128) -> ReLU -> Dropout -> "
            f"Linear(128,128) -> ReLU -> Linear(128,1), keys like layers.0.weight); {EXPORT_HINT}"
        )
    n_features = int(first.shape[1])
    module = InefficientModel(n_features)
    try:
        module.load_state_dict({"net." + k: state[prefix + k] for k in MLP_KEYS})
    except RuntimeError as exc:
        raise ModelLoadError(
            f"state_dict does not match the default MLP: {_first_line(exc)}; {EXPORT_HINT}"
        ) from None
    return module, n_features


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry compiled code; state_dict archives carry only data."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):  # looks like a zip, is not one
        return False
    return any("/code/" in name or name.endswith("constants.pkl") for name in names)


def _load_torchscript(path: Path) -> tuple[nn.Module, int]:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # untrusted bytes, whatever the loader raises
        raise ModelLoadError(
            f"refusing to load {path}: broken TorchScript ({_first_line(exc)})"
        ) from None
    n_features = _infer_n_features(module)
    try:
        probe = module(torch.zeros(2, n_features))
    except Exception as exc:  # the model's own code
        raise ModelLoadError(
            f"model fails on a [2, {n_features}] probe: {_first_line(exc)}"
        ) from None
    if probe.reshape(-1).shape != (2,):
        raise ModelLoadError(f"model maps [2, {n_features}] to {list(probe.shape)}, not [2]")
    return module, n_features


def _infer_n_features(module: nn.Module) -> int:
    declared = getattr(module, "n_features", None)
    if isinstance(declared, int):
        return declared
    for param in module.parameters():
        if param.ndim == 2:
            return int(param.shape[1])
    raise ModelLoadError(
        "cannot infer the feature count: give the module an `n_features` attribute"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
