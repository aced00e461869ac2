"""`streamscore export`: a store's history in a time range to a Parquet or CSV file.

Reads the store directly: a SQLite file (also while a service runs on it), or a PostgreSQL
database that no service holds (the service's lock refuses a second user: export a running
PostgreSQL service with `GET /export`). The file is written under a temporary name and renamed
when complete, so a failed export leaves nothing that looks finished.
"""

from __future__ import annotations

import argparse
import math
import os
from datetime import UTC, datetime
from pathlib import Path

from streamscore.commands import Failed
from streamscore.history import export


def timestamp(text: str) -> float:
    """UNIX seconds, or an ISO 8601 time (UTC unless it names its offset).

    >>> timestamp("1767225600"), timestamp("2026-01-01T00:00:00Z"), timestamp("2026-01-01")
    (1767225600.0, 1767225600.0, 1767225600.0)
    """
    try:
        value = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither UNIX seconds nor an ISO 8601 time"
            ) from None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite time")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write stored events to Parquet or CSV",
        description="Write the events stored in [--since, --until] (user, timestamp, seq, "
        "event id and type, attributes, features, score, model version, variant) to a Parquet "
        "or CSV file, in bounded memory. Columns: docs/export.md.",
    )
    p.add_argument("--store", required=True, help="sqlite:///PATH or postgresql://...")
    p.add_argument("--since", type=timestamp, default=-math.inf, help="UNIX s or ISO 8601")
    p.add_argument("--until", type=timestamp, default=math.inf, help="UNIX s or ISO 8601")
    p.add_argument("--users", help="comma-separated user ids (default: every user)")
    p.add_argument("--format", choices=export.FORMATS, help="default: from the --out suffix")
    p.add_argument("--out", type=Path, required=True, help="the file to write (replaced)")
    p.add_argument("--store-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _format(args: argparse.Namespace) -> export.Format:
    if args.format:
        return args.format
    suffix = args.out.suffix.lstrip(".").lower()
    if suffix in export.FORMATS:
        return suffix  # type: ignore[return-value]
    raise Failed(f"--format: cannot tell from {args.out.name!r}; pass --format parquet or csv")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from streamscore.store.open import open_store, sqlite_path

    fmt = _format(args)
    if args.since > args.until:
        raise Failed("--since is after --until")
    if not args.out.parent.is_dir():
        raise Failed(f"--out: no such directory: {args.out.parent}")
    users = None if args.users is None else [u for u in args.users.split(",") if u]
    if users is not None and not users:
        raise Failed("--users names no user")
    path = sqlite_path(args.store)
    if path is not None and not path.is_file():
        raise Failed(f"--store: no such file: {path}")
    try:
        store = open_store(args.store, args.store_timeout)
    except ValueError as exc:  # not a store URL
        raise Failed(f"--store: {exc}") from None
    partial = args.out.with_name(args.out.name + ".partial")
    console = Console(stderr=True)
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("exporting {task.completed:,} events"),
            TimeElapsedColumn(),
            console=console,
            disable=args.quiet,
            transient=False,
        ) as progress:
            task = progress.add_task("export", total=None)
            written = export.write(
                store,
                partial,
                fmt,
                args.since,
                args.until,
                users,
                progress=lambda rows: progress.advance(task, rows),
            )
        os.replace(partial, args.out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        store.close()
    if not args.quiet:
        console.print(f"wrote {written:,} events to {args.out}")
    return 0
