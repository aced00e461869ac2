"""Subcommands of `streamscore` beyond `serve`: each module has `add_parser(sub)` and
`run(args) -> int`, and raises `Failed` for a problem it explains in one line (exit 2)."""


class Failed(Exception):
    """Printed as one line on stderr; the command exits 2."""
