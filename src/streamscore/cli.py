"""`streamscore serve | create-model | generate | export | check`: every serve option is also
`STREAMSCORE_*`. A bad option or an unreachable store is one line on stderr and status 2."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from streamscore.config import Settings, env_name, from_env, parse_bool
from streamscore.store.base import SchemaTooNew, StoreUnavailable
from streamscore.store.postgres import redact

log = logging.getLogger("streamscore")


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Every option can also be set as the environment "
        "variable shown in brackets; flags win.",
    )
    for f in dataclasses.fields(Settings):
        kind = type(f.default) if f.default is not None else str
        if kind is bool:
            kind = parse_bool
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=kind,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata['help']} [{env_name(f.name)}; default: {f.default}]",
        )


def _one_line(exc: BaseException) -> str:
    """The message of `exc` on one line, for the one line `serve` prints before exiting 2.

    >>> _one_line(ValueError("cannot connect:\\n  detail"))
    'cannot connect: detail'
    """
    return " ".join(str(exc).split())


def _settings(args: argparse.Namespace) -> Settings:
    try:
        values = from_env()
    except ValueError as exc:
        raise BadOption(str(exc)) from None
    for f in dataclasses.fields(Settings):
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = given
    return Settings(**values)


class BadOption(ValueError):
    """A setting that cannot work: `streamscore serve` exits 2 with this one line."""


POSITIVE = (
    "window", "max_batch", "latency_budget", "batch_size", "max_in_flight", "max_wait",
    "ack_timeout", "index_wait", "max_dedupe_ids", "max_body_bytes", "max_events_per_request",
    "max_line_bytes", "ndjson_chunk", "store_timeout", "index_interval", "max_index_lag",
    "torch_threads", "max_connections", "header_timeout", "body_timeout", "simulator_max_rps",
    "simulator_max_duration", "max_in_flight_bytes", "max_ndjson_bytes", "max_ndjson_seconds",
)  # fmt: skip
NOT_NEGATIVE = (
    "max_future_skew", "dedupe_horizon", "batch_max_wait", "cost_per_batch", "cost_per_event",
    "cost_per_second", "rate_limit", "rate_burst", "dead_letter_limit", "retention",
    "shutdown_delay",
)  # fmt: skip


def is_loopback(host: str) -> bool:
    """Only loopback addresses are safe to serve without keys.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("10.1.2.3"), is_loopback("example.org")
    (False, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(settings: Settings, keys_configured: bool) -> list[str]:
    """Raise `BadOption` for a setting that cannot work; warnings for ones that weaken a
    guarantee. Runs before anything is opened, so a bad option costs no start-up."""
    for name in POSITIVE:
        if not getattr(settings, name) > 0:
            raise BadOption(f"--{name.replace('_', '-')} must be positive")
    for name in NOT_NEGATIVE:
        if not getattr(settings, name) >= 0:
            raise BadOption(f"--{name.replace('_', '-')} must not be negative")
    if settings.batching not in ("adaptive", "fixed"):
        raise BadOption(f"--batching must be adaptive or fixed, not {settings.batching!r}")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise BadOption("--log-level must be debug, info, warning or error")
    if not keys_configured and not is_loopback(settings.host) and not settings.insecure:
        raise BadOption(
            f"refusing to listen on {settings.host} without API keys: set --api-keys or "
            "--api-key-file, or pass --insecure true"
        )
    warnings = []
    if settings.max_future_skew > settings.window / 10:
        warnings.append(
            f"--max-future-skew {settings.max_future_skew:g} exceeds --window / 10: one event "
            "from a clock that far ahead makes ordinary events late for that long"
        )
    return warnings


def serve(settings: Settings) -> None:
    import uvicorn

    from streamscore import logs
    from streamscore.api.app import create_app
    from streamscore.api.auth import ApiKeys
    from streamscore.api.protocol import with_header_timeout

    try:
        keys = ApiKeys.parse(settings.api_keys, settings.api_key_file)
    except OSError as exc:
        raise BadOption(f"--api-key-file: {exc.strerror or exc}: {settings.api_key_file}") from None
    except ValueError as exc:
        raise BadOption(str(exc)) from None
    warnings = check(settings, keys.enabled)

    # Threads hand the GIL over every 1 ms instead of 5: a median query waiting behind the
    # writer costs at most that long.
    sys.setswitchinterval(0.001)
    logs.configure(settings.log_level)
    shown = dataclasses.asdict(settings)
    shown["store"] = redact(settings.store)
    shown["api_keys"] = f"<{len(settings.api_keys.split(','))} keys>" if settings.api_keys else ""
    log.info("starting", extra={"settings": shown})  # never the keys themselves
    for warning in warnings:
        log.warning(warning)
    if settings.cluster:
        app = _cluster_app(settings)
        admission = app.state.node.admission
    else:
        try:
            app = create_app(settings)
        except ValueError as exc:  # an unsupported store URL
            raise BadOption(str(exc)) from None
        service = app.state.service
        admission = service.admission
        log.info(
            "recovered",
            extra={
                "events": service.counters.events,
                "windowed_events": service.windows.events,
                "users": service.windows.users,
                "seconds": round(service.recovery_seconds, 3),
                "model_version": service.scorer.version,
            },
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=with_header_timeout(settings.header_timeout),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        limit_concurrency=settings.max_connections,
    )
    server = uvicorn.Server(config)
    closing = getattr(app.state, "dashboard_closing", None)

    def stop() -> None:
        server.should_exit = True  # uvicorn finishes in-flight requests, then returns

    def handle_exit(sig: int, frame: object) -> None:
        """SIGTERM/SIGINT: refuse new ingest (503) at once, keep listening `shutdown_delay`
        seconds so a load balancer sees /ready fail, then finish in-flight requests and exit 0.
        A second signal stops at once."""
        if admission.closing:
            stop()
            return
        log.info("shutting down", extra={"signal": signal.Signals(sig).name})
        admission.close("shutting down")
        if closing is not None:
            closing.set()  # end dashboard streams, so that open pages do not delay the shutdown
        timer = threading.Timer(settings.shutdown_delay, stop)
        timer.daemon = True
        timer.start()

    # Replaces uvicorn's handler, which re-raises the signal after a graceful shutdown (so the
    # process would end with the signal's status instead of 0).
    server.handle_exit = handle_exit  # type: ignore[method-assign]
    # Start-up objects (torch, numba, the recovered state) never die: moved out of the
    # collector's view, a full collection no longer walks them while requests wait.
    gc.collect()
    gc.freeze()
    # Full collections 100x rarer than Python's default (every 1,000 middle ones, not 10): under
    # ingest they ran about once a second, paused every thread up to ~40 ms, and made most of
    # the read p99 (features of one user while ingesting 55k events/s: 32 ms, 10.5 ms with this).
    # Nearly all garbage here is acyclic and freed at once by reference counting.
    gc.set_threshold(700, 10, 1000)
    server.run()
    log.info("stopped")


def _cluster_app(settings: Settings) -> Any:
    """The app of a cluster node; a bad cluster option is a `BadOption`."""
    from streamscore.api.cluster_app import create_cluster_app
    from streamscore.scoring.model import create_model, load_model
    from streamscore.service import demo_model_path
    from streamscore.store.open import POSTGRES_PREFIXES

    if not settings.node_id:
        raise BadOption("--cluster needs --node-id")
    if not settings.store.startswith(POSTGRES_PREFIXES):
        raise BadOption("--cluster needs a postgresql:// --store (the cluster's shared history)")
    if settings.dead_after < 3 * settings.heartbeat_interval:
        raise BadOption("--dead-after must be at least 3 heartbeat intervals")
    path = Path(settings.model) if settings.model else demo_model_path(settings.store)
    if not settings.model and not path.exists():
        create_model(path)
    try:
        return create_cluster_app(settings, load_model(path))
    except ValueError as exc:  # a bad cluster name or node id
        raise BadOption(str(exc)) from None


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (and status 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _create_model_parser(sub: argparse._SubParsersAction) -> None:
    create = sub.add_parser(
        "create-model", help="write the demo model's state_dict (deterministic weights)"
    )
    create.add_argument("path", type=Path)
    create.add_argument("--features", type=int, default=3, help="input features (default 3)")


def _create_model(args: argparse.Namespace) -> int:
    from streamscore.scoring.model import create_model

    if args.features < 1:
        raise BadOption("--features must be positive")
    try:
        print(create_model(args.path, args.features))
    except RuntimeError as exc:  # torch's "open file failed"
        raise BadOption(f"cannot write {args.path}: {_one_line(exc)}") from None
    return 0


def _generate(args: argparse.Namespace) -> int:
    """Options checked, and the service reached once, before any process starts."""
    import httpx

    from streamscore.generate.cli import run

    for name in ("duration", "users", "batch_size", "concurrency", "procs"):
        if not getattr(args, name) > 0:
            raise BadOption(f"--{name.replace('_', '-')} must be positive")
    if not args.rps >= 0:
        raise BadOption("--rps must not be negative (0 = flat out)")
    if not 0 <= args.late_fraction <= 1:
        raise BadOption("--late-fraction must be between 0 and 1")
    try:
        httpx.get(args.url.rstrip("/") + "/health", timeout=5.0)
    except httpx.InvalidURL as exc:
        raise BadOption(f"--url {args.url!r}: {exc}") from None
    except (httpx.TransportError, httpx.UnsupportedProtocol) as exc:
        raise BadOption(
            f"cannot reach {args.url}: {_one_line(exc) or type(exc).__name__}"
        ) from None
    return run(args)


def _serve(args: argparse.Namespace) -> int:
    serve(_settings(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    from streamscore import __version__
    from streamscore.commands import Failed
    from streamscore.commands import check as check_command
    from streamscore.commands import export as export_command
    from streamscore.features.cli import add_parser as add_features
    from streamscore.features.cli import run as run_features
    from streamscore.generate.cli import add_parser as add_generate

    parser = Parser(prog="streamscore", description="Real-time ML scoring of event streams.")
    parser.add_argument("--version", action="version", version=f"streamscore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}
    _serve_parser(sub)
    commands["serve"] = _serve
    _create_model_parser(sub)
    commands["create-model"] = _create_model
    add_generate(sub)
    commands["generate"] = _generate
    export_command.add_parser(sub)
    commands["export"] = export_command.run
    check_command.add_parser(sub)
    commands["check"] = check_command.run
    add_features(sub)
    commands["features"] = run_features
    args = parser.parse_args(argv)
    try:
        return commands[args.command](args)
    except (BadOption, Failed, SchemaTooNew, StoreUnavailable, OSError) as exc:
        # OSError: a file that cannot be read or written (a port in use is uvicorn's to report)
        print(f"streamscore {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
