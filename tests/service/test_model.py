"""Model creation and loading: deterministic demo weights, TorchScript, refusal of pickles."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.scoring.model import InefficientModel, ModelLoadError, create_model, load_model
from streamscore.scoring.scorer import Scorer


def test_create_model_is_deterministic(tmp_path: Path) -> None:
    first = load_model(create_model(tmp_path / "a.pt"))
    subprocess.run(
        [sys.executable, "-m", "streamscore", "create-model", str(tmp_path / "b.pt")], check=True
    )
    second = load_model(tmp_path / "b.pt")
    for (name, a), (_, b) in zip(
        first.module.state_dict().items(), second.module.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert first.n_features == 3
    assert first.version.split("@")[1] == second.version.split("@")[1]


def test_scorer_matches_plain_forward(tmp_path: Path) -> None:
    model = load_model(create_model(tmp_path / "m.pt"))
    x = torch.randn(1000, 3)
    with torch.no_grad():
        expected = model.module(x).numpy()
    got = Scorer(model).score(x.numpy())
    assert got.shape == (1000,)
    assert got.tolist() == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-7)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))

    marker = ""


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"net.0.weight": _Evil()}, evil)  # a torch.save zip with a hostile pickle inside
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Evil()))
    for path in (evil, plain):
        with pytest.raises(ModelLoadError, match="refusing to load"):
            load_model(path)
    assert not marker.exists()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"uY", b"", b"\x80\x02", b"PK\x03\x04", b"}q."]) | st.binary(max_size=64))
def test_any_garbage_file_is_refused_not_crashed_on(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """An uploaded model is untrusted bytes: whatever torch's loaders raise becomes a 400."""
    path = tmp_path_factory.mktemp("garbage") / "upload.pt"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError):
        load_model(path)


def test_state_dict_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelLoadError, match="does not match the default MLP"):
        load_model(path)


def test_torchscript_model_with_five_features_serves(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "five.pt"
    torch.manual_seed(1)
    torch.jit.script(InefficientModel(5)).save(str(path))
    loaded = load_model(path)
    assert loaded.n_features == 5
    server = server_factory(model=path)
    now = time.time()
    events = [
        {"user_id": "u", "timestamp": now, "features": [1, 2, 3, 4, 5]},
        {"user_id": "u", "timestamp": now, "features": [1, 2, 3]},
    ]
    with server.client() as client:
        body = client.post("/ingest", json={"events": events}).json()
        assert body["processed"] == 1
        assert body["errors"][0]["index"] == 1 and "length 5" in body["errors"][0]["error"]
        with torch.no_grad():
            expected = loaded.module(torch.tensor([[1.0, 2, 3, 4, 5]])).item()
        assert client.get("/users/u/median").json()["median"] == pytest.approx(expected, rel=1e-6)


def test_serve_refuses_a_pickle_with_a_clear_error(tmp_path: Path) -> None:
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamscore",
            "serve",
            "--model",
            str(plain),
            "--store",
            f"sqlite:///{tmp_path / 'e.db'}",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "refusing to load" in result.stderr


class SeedModel(torch.nn.Module):
    """Seed 000's `utils/create_model.py` class, as users of the seed services have it."""

    def __init__(self, input_size: int = 3) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_size, 128),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(128, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.parametrize("wrap", ["layers", "bare", "nested"])
def test_the_seeds_state_dict_loads_and_scores_as_the_seed_does(tmp_path: Path, wrap: str) -> None:
    torch.manual_seed(7)
    seed = SeedModel(4).eval()
    state = seed.state_dict()
    if wrap == "bare":
        state = {k.removeprefix("layers."): v for k, v in state.items()}
    elif wrap == "nested":
        state = {"model." + k: v for k, v in state.items()}
    path = tmp_path / "inefficient_model.pt"
    torch.save(state, path)
    loaded = load_model(path)
    assert loaded.n_features == 4
    x = torch.randn(64, 4)
    with torch.no_grad():
        expected = seed(x).squeeze(-1).numpy()
    assert (Scorer(loaded).score(x.numpy()) == expected).all()


def test_another_architecture_is_refused_with_how_to_export(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 1)).state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"torch\.jit\.script\(model\)\.save"):
        load_model(path)
