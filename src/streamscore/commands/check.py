"""`streamscore check`: is this deployment ready? The store is reachable and at the schema
this release knows (read only: never migrated nor locked), the model loads, the feature file
is valid. One line per check; exit 0 when all pass, 2 otherwise."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable
from pathlib import Path

from streamscore.store.open import POSTGRES_PREFIXES, sqlite_path


class Problem(Exception):
    """What a check found wrong, in one line."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="validate a deployment: store, model, feature file",
        description="Check that the store is reachable and migrated (without migrating it), "
        "that the model loads and that the feature file is valid; exit 0 if so, else 2.",
    )
    p.add_argument("--store", required=True, help="sqlite:///PATH or postgresql://...")
    p.add_argument("--model", type=Path, required=True, help="the model file serve will load")
    p.add_argument("--features", type=Path, help="a feature definitions file (TOML)")
    p.add_argument("--store-timeout", type=float, default=5.0, help="seconds (default 5)")


def schema_version(url: str, timeout: float) -> tuple[int, int]:
    """(the store's schema version, the one this release knows), read without changing it."""
    path = sqlite_path(url)
    if path is not None:
        from streamscore.store.sqlite import SCHEMA_VERSION

        if not path.is_file():
            raise Problem(f"no such file: {path} (serve creates it)")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as conn:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise Problem(f"{path} is not a streamscore store: {exc}") from None
        return int(row[0]) if row else 0, SCHEMA_VERSION
    if url.startswith(POSTGRES_PREFIXES):
        import psycopg

        from streamscore.store.postgres import SCHEMA_VERSION, redact

        try:
            with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
                if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
                    return 0, SCHEMA_VERSION
                row = conn.execute("SELECT version FROM schema_version").fetchone()
        except psycopg.Error as exc:
            raise Problem(f"cannot reach {redact(url)}: {' '.join(str(exc).split())}") from None
        return (row[0] if row else 0), SCHEMA_VERSION
    raise Problem(f"unsupported URL {url!r}: expected sqlite:///PATH or postgresql://...")


def check_store(url: str, timeout: float) -> str:
    found, known = schema_version(url, timeout)
    if found == 0:
        raise Problem(f"not migrated: no streamscore schema yet (serve creates version {known})")
    if found > known:
        raise Problem(f"schema version {found} is newer than {known}, the one this release knows")
    if found < known:
        raise Problem(f"schema version {found}, this release knows {known}: serve migrates it")
    return f"schema version {found} (this release knows {known})"


def check_model(path: Path) -> str:
    from streamscore.scoring.model import load_model

    try:
        model = load_model(path)
    except FileNotFoundError:
        raise Problem(f"no such file: {path}") from None
    except (OSError, ValueError) as exc:
        raise Problem(" ".join(str(exc).split())) from None
    return f"{model.version} loads, {model.n_features} input features"


def check_features(path: Path) -> str:
    from streamscore.features.definitions import DefinitionError, load

    try:
        definitions = load(path)
    except DefinitionError as exc:
        raise Problem(" ".join(str(exc).split())) from None
    versions = definitions.versions
    return f"valid: {len(versions)} feature set(s), version(s) {', '.join(versions)}"


def run(args: argparse.Namespace) -> int:
    checks: list[tuple[str, Callable[[], str]]] = [
        ("store", lambda: check_store(args.store, args.store_timeout)),
        ("model", lambda: check_model(args.model)),
    ]
    if args.features is not None:
        checks.append(("features", lambda: check_features(args.features)))
    failed = 0
    for name, check in checks:
        try:
            print(f"ok    {name}: {check()}")
        except Problem as exc:
            failed += 1
            print(f"FAIL  {name}: {exc}")
    print("deployment ok" if not failed else f"{failed} problem(s) found")
    return 2 if failed else 0
