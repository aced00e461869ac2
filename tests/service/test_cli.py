"""The command line against real files and stores: every bad option or unreachable store is one
line on stderr and status 2, `--version`, and `streamscore check` on each kind of problem."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from streamscore import __version__
from streamscore.cli import main
from streamscore.scoring.model import create_model
from streamscore.store.postgres import SCHEMA_VERSION as PG_VERSION
from streamscore.store.postgres import PostgresStore
from streamscore.store.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from streamscore.store.sqlite import SQLiteStore

from ..conftest import create_database, drop_database, free_port

CLOSED = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens there


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`streamscore ARGV` in process: (status, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own exits (--version, bad options)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_failure(code: int, err: str, *needles: str, logged: bool = False) -> None:
    """Status 2 and one line of stderr; `logged`: `serve`'s JSON log lines may come before."""
    assert code == 2 and "Traceback" not in err
    lines = err.splitlines()
    if logged:
        lines = [line for line in lines if not line.startswith('{"time"')]
    assert len(lines) == 1 and lines[0].startswith("streamscore"), err
    for needle in needles:
        assert needle in lines[0], err


@pytest.fixture
def database() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return create_model(tmp_path / "model.pt")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"streamscore {__version__}\n", "")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--window", "soon"], "--window"),
        (["create-model", "m.pt", "--features", "0"], "--features must be positive"),
        (["generate", "--users", "0"], "--users must be positive"),
        (["generate", "--late-fraction", "2"], "--late-fraction"),
        (["export", "--store", "sqlite:///x.db"], "--out"),
        (["export", "--store", "sqlite:///x.db", "--out", "x.parquet", "--format", "xml"], "xml"),
        (["export", "--store", "sqlite:///x.db", "--out", "x.txt"], "--format"),
        (["export", "--store", "sqlite:///x.db", "--out", "x.csv", "--since", "soon"], "soon"),
        (["export", "--store", "sqlite:///x.db", "--out", "x.csv", "--since", "9", "--until", "1"],
         "--since is after --until"),
        (["export", "--store", "redis://x", "--out", "x.csv"], "unsupported store URL"),
        (["check", "--store", "sqlite:///x.db"], "--model"),
        (["nonsense"], "invalid choice"),
    ],
)  # fmt: skip
def test_a_bad_option_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch, argv: list[str], needle: str
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    one_line_failure(code, err, needle)


def test_unreachable_stores_and_services_are_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path
) -> None:
    out = str(tmp_path / "x.parquet")
    code, _, err = run(capsys, "export", "--store", CLOSED, "--out", out)
    one_line_failure(code, err, "cannot connect to PostgreSQL")
    code, _, err = run(capsys, "export", "--store", f"sqlite:///{tmp_path}/none.db", "--out", out)
    one_line_failure(code, err, "no such file")
    code, _, err = run(capsys, "generate", "--url", f"http://127.0.0.1:{free_port()}")
    one_line_failure(code, err, "cannot reach")
    code, _, err = run(capsys, "create-model", "/proc/no/model.pt")
    one_line_failure(code, err, "/proc/no")
    assert not Path(out).exists()


def test_exporting_a_database_a_service_holds_says_so(
    capsys: pytest.CaptureFixture[str], database: str, tmp_path: Path
) -> None:
    held = PostgresStore(database)
    try:
        code, _, err = run(capsys, "export", "--store", database, "--out", str(tmp_path / "x.csv"))
    finally:
        held.close()
    one_line_failure(code, err, "another streamscore is using")
    assert not list(tmp_path.iterdir())  # not even a partial file


def test_serve_on_an_unreachable_store_logs_then_fails_in_one_line(model: Path) -> None:
    """In a process of its own: `serve` configures logging, which in process would outlive it."""
    done = subprocess.run(
        [sys.executable, "-m", "streamscore", "serve", "--store", CLOSED, "--model", str(model)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line_failure(done.returncode, done.stderr, "cannot connect to PostgreSQL", logged=True)


# -- streamscore check ------------------------------------------------------------------------


def check(capsys: pytest.CaptureFixture[str], store: str, model: Path, *extra: str):  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "check", "--store", store, "--model", str(model), *extra)
    assert err == ""
    return code, dict(line.split(": ", 1) for line in out.splitlines()[:-1])


FEATURES = resources.files("streamscore.features").joinpath("default.toml").read_text()


def test_check_passes_a_ready_deployment_on_both_stores(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path, database: str
) -> None:
    SQLiteStore(tmp_path / "events.db").close()
    PostgresStore(database).close()
    features = tmp_path / "features.toml"
    features.write_text(FEATURES)
    for store, version in (
        (f"sqlite:///{tmp_path}/events.db", SQLITE_VERSION),
        (database, PG_VERSION),
    ):
        code, lines = check(capsys, store, model, "--features", str(features))
        assert code == 0, lines
        assert lines["ok    store"] == f"schema version {version} (this release knows {version})"
        assert lines["ok    model"].endswith("loads, 3 input features")
        assert lines["ok    features"].startswith("valid: 1 feature set(s), version(s) ")


def test_check_reports_each_store_problem_without_changing_the_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path, database: str
) -> None:
    code, lines = check(capsys, CLOSED, model)
    assert code == 2 and lines["FAIL  store"].startswith("cannot reach postgresql://")
    assert lines["ok    model"]

    code, lines = check(capsys, database, model)  # an empty database: not migrated, left so
    assert code == 2 and "not migrated" in lines["FAIL  store"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None

    path = tmp_path / "events.db"
    code, lines = check(capsys, f"sqlite:///{path}", model)
    assert code == 2 and lines["FAIL  store"].startswith("no such file")
    assert not path.exists()

    path.write_bytes(b"not a database at all" * 100)
    code, lines = check(capsys, f"sqlite:///{path}", model)
    assert code == 2 and "is not a streamscore store" in lines["FAIL  store"]

    path.unlink()
    SQLiteStore(path).close()
    for version, words in ((SQLITE_VERSION - 1, "serve migrates it"), (99, "is newer than")):
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
        code, lines = check(capsys, f"sqlite:///{path}", model)
        assert code == 2 and words in lines["FAIL  store"], lines
        assert f"schema version {version}" in lines["FAIL  store"]
        with sqlite3.connect(path) as conn:  # read only: still the version it had
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            assert int(row[0]) == version


def test_check_reports_a_bad_model_and_a_bad_feature_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path
) -> None:
    SQLiteStore(tmp_path / "events.db").close()
    store = f"sqlite:///{tmp_path}/events.db"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model" * 50)
    code, lines = check(capsys, store, garbage)
    assert code == 2 and lines["FAIL  model"].startswith("refusing to load")
    assert lines["ok    store"]

    code, lines = check(capsys, store, tmp_path / "missing.pt")
    assert code == 2 and lines["FAIL  model"].startswith("no such file")

    bad = tmp_path / "features.toml"
    for text, words in (("sets = [", "not valid TOML"), ("[[sets]]\nversion = 1\n", "sets[0]")):
        bad.write_text(text)
        code, lines = check(capsys, store, model, "--features", str(bad))
        assert code == 2 and words in lines["FAIL  features"], lines
        assert lines["ok    model"]
