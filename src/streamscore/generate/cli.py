"""`streamscore generate`: the load generator's command line."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("generate", help="post synthetic events to a running service")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("generate: not built yet")
