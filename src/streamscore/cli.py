"""`streamscore serve | create-model | generate`: every serve option is also `STREAMSCORE_*`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

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


def _settings(args: argparse.Namespace) -> Settings:
    values = from_env()
    for f in dataclasses.fields(Settings):
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = given
    return Settings(**values)


def serve(settings: Settings) -> None:
    import uvicorn

    from streamscore import logs
    from streamscore.api.app import create_app
    from streamscore.api.protocol import with_header_timeout

    # Threads hand the GIL over every 1 ms instead of 5: a median query waiting behind the
    # writer costs at most that long.
    sys.setswitchinterval(0.001)
    logs.configure(settings.log_level)
    shown = dataclasses.asdict(settings)
    shown["store"] = redact(settings.store)
    shown["api_keys"] = f"<{len(settings.api_keys.split(','))} keys>" if settings.api_keys else ""
    log.info("starting", extra={"settings": shown})  # never the keys themselves
    app = create_app(settings)
    service = app.state.service
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
    closing = app.state.dashboard_closing
    stop = server.handle_exit

    def handle_exit(sig: int, frame: object) -> None:
        closing.set()  # end dashboard streams, so that open pages do not delay the shutdown
        stop(sig, frame)  # type: ignore[arg-type]

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    server.run()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamscore", description="Real-time ML scoring of event streams."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    create = sub.add_parser(
        "create-model", help="write the demo model's state_dict (deterministic weights)"
    )
    create.add_argument("path", type=Path)
    create.add_argument("--features", type=int, default=3, help="input features (default 3)")
    from streamscore.generate.cli import add_parser as add_generate

    add_generate(sub)
    args = parser.parse_args(argv)

    if args.command == "serve":
        try:
            serve(_settings(args))
        except (SchemaTooNew, StoreUnavailable) as exc:
            print(f"streamscore: {exc}", file=sys.stderr)
            return 2
    elif args.command == "create-model":
        from streamscore.score.model import create_model

        print(create_model(args.path, args.features))
    elif args.command == "generate":
        from streamscore.generate.cli import run

        return run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
