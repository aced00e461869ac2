"""`streamscore features backfill`: compute versions from stored history, offline.

Run it with the service stopped (or before declaring the version to a running one): it builds
the versions' state from every stored event in seq order (`store.scan`), exactly what
streaming would have computed, and saves it as a checkpoint. The next `serve` restores it and
replays only the events stored after it, instead of backfilling at start.
"""

from __future__ import annotations

import argparse
import sys
import time

from streamscore.features import definitions as feature_definitions
from streamscore.features.engine import FeatureEngine
from streamscore.features.stage import Group, check_versions, replay, save_group


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="feature versions: backfill from stored history")
    actions = p.add_subparsers(dest="features_command", required=True)
    b = actions.add_parser(
        "backfill",
        help="compute feature versions from stored history and save them as a checkpoint",
    )
    b.add_argument("--store", required=True, help="event store URL (as for serve)")
    b.add_argument(
        "--features", default="default", help="feature file (TOML) or 'default' (the shipped set)"
    )
    b.add_argument(
        "--version", action="append", required=True, dest="versions",
        help="version to backfill (repeat for several)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from streamscore.store.open import open_store

    try:
        if args.features == "default":
            definitions = feature_definitions.default()
        else:
            definitions = feature_definitions.load(args.features)
        for version in args.versions:
            definitions[version]
        store = open_store(args.store, 30.0)
    except (ValueError, KeyError) as exc:
        print(f"streamscore: {exc}", file=sys.stderr)
        return 2
    try:
        check_versions(definitions, store)
        started = time.perf_counter()
        versions = tuple(args.versions)
        group = Group(FeatureEngine(definitions, versions), 0, True, versions=versions)
        until = store.last_seq()
        events = replay(group.engine, store, 0, until)
        save_group(store, group, group.engine.checkpoint(), until)
    except ValueError as exc:
        print(f"streamscore: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(
        f"backfilled {', '.join(versions)}: {events} events, {group.engine.users} users, "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0
