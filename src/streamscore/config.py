"""Service settings: one frozen dataclass, filled from CLI flags or `STREAMSCORE_*` variables.

Every field is a CLI option of `streamscore serve` and an environment variable named
`STREAMSCORE_<FIELD>` (upper case); flags win over the environment, which wins over defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port to listen on"})
    store: str = field(
        default="sqlite:///events.db",
        metadata={
            "help": "event store URL: sqlite:///PATH (relative), sqlite:////ABS/PATH or "
            "postgresql://USER@HOST:PORT/DB"
        },
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "model file: a state_dict of the default MLP or a TorchScript file; "
            "unset = create and use the demo model (next to a SQLite store, else in "
            "~/.cache/streamscore)"
        },
    )
    models_dir: str | None = field(
        default=None,
        metadata={
            "help": "where uploaded model versions are kept (DIR/NAME/DIGEST.pt); unset = "
            "'models' next to a SQLite store, else ~/.cache/streamscore/models"
        },
    )
    window: float = field(
        default=300.0, metadata={"help": "rolling-median window W in seconds of event time"}
    )
    max_future_skew: float = field(
        default=30.0,
        metadata={
            "help": "reject events whose timestamp is this many seconds ahead of the clock; "
            "keep it at most --window / 10 (a warning at start otherwise), so that one bad "
            "clock moves stream time by a tenth of the window at most"
        },
    )
    dedupe_horizon: float = field(
        default=300.0,
        metadata={
            "help": "event_id duplicates are recognised for events acknowledged within this "
            "many seconds of stream time (the window or more)"
        },
    )
    max_batch: int = field(
        default=8192, metadata={"help": "most events scored in one forward call"}
    )
    batching: str = field(
        default="adaptive",
        metadata={
            "help": "adaptive: learn the batch size and wait from measured costs, within "
            "--latency-budget; fixed: batches of --batch-size, waiting up to --batch-max-wait"
        },
    )
    latency_budget: float = field(
        default=0.02,
        metadata={"help": "p99 seconds of queueing wait + processing in the scoring stage"},
    )
    batch_size: int = field(default=1024, metadata={"help": "batch size of --batching fixed"})
    batch_max_wait: float = field(
        default=0.02,
        metadata={"help": "seconds --batching fixed holds the oldest event to fill a batch"},
    )
    cost_per_batch: float = field(
        default=1e-7, metadata={"help": "cost model: fixed cost of one forward call"}
    )
    cost_per_event: float = field(
        default=1e-10, metadata={"help": "cost model: variable cost of one event"}
    )
    cost_per_second: float = field(
        default=1.4e-5, metadata={"help": "cost model: price of one compute-second"}
    )
    max_in_flight: int = field(
        default=262_144,
        metadata={"help": "most events accepted but not yet durable; more waits, then 503"},
    )
    max_wait: float = field(
        default=5.0,
        metadata={"help": "seconds a request waits for room in the pipeline before a 503"},
    )
    ack_timeout: float = field(
        default=30.0,
        metadata={
            "help": "seconds a request waits for its events to become durable before a 503 "
            "(a retry with the same event_ids is deduplicated)"
        },
    )
    index_wait: float = field(
        default=10.0,
        metadata={
            "help": "seconds commits wait for a lagging history index before refusing with 503"
        },
    )
    max_log_events: int = field(
        default=10_000_000,
        metadata={
            "help": "most events kept in the event log for recovery; beyond it the oldest "
            "indexed commits are dropped even inside the window/dedupe horizon (a restart then "
            "rebuilds windows and dedupe ids from the newest ones only)"
        },
    )
    max_dedupe_ids: int = field(
        default=10_000_000,
        metadata={
            "help": "most event_ids remembered for deduplication; beyond it the oldest are "
            "forgotten early (counted in streamscore_dedupe_evicted_early)"
        },
    )
    max_body_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "largest JSON body accepted (413 above)"}
    )
    max_events_per_request: int = field(
        default=100_000, metadata={"help": "most events in one JSON body (413 above)"}
    )
    max_line_bytes: int = field(
        default=65_536, metadata={"help": "longest NDJSON line; longer lines are rejected events"}
    )
    ndjson_chunk: int = field(
        default=4096, metadata={"help": "NDJSON lines decoded and submitted together"}
    )
    store_timeout: float = field(
        default=5.0,
        metadata={"help": "seconds a write waits for a locked database before a 503"},
    )
    # Pages read the acknowledged events not chunked yet, so this bounds only how many events
    # wait in the log: at 0.2 s a flush at 38k events/s over 10k users is ~1 event per chunk
    # (a row per event, then compaction rewrites them); 1 s cut the server's CPU by 17 %.
    index_interval: float = field(
        default=1.0,
        metadata={"help": "seconds between moves of acknowledged events into history chunks"},
    )
    max_index_lag: int = field(
        default=500_000,
        metadata={
            "help": "most acknowledged events not yet in the history index; ingest waits "
            "beyond it, so history stays fresh under sustained load"
        },
    )
    torch_threads: int = field(
        default=1, metadata={"help": "intra-op threads for inference (1 is best on 2 cores)"}
    )
    api_keys: str = field(
        default="",
        metadata={
            "help": "comma-separated API keys; when set, /ingest and admin endpoints "
            "need `Authorization: Bearer KEY`"
        },
    )
    api_key_file: str | None = field(
        default=None, metadata={"help": "file with one API key per line (adds to --api-keys)"}
    )
    auth_reads: bool = field(
        default=False, metadata={"help": "also require a key for read endpoints"}
    )
    rate_limit: float = field(
        default=0.0, metadata={"help": "events per second per API key; 0 = unlimited"}
    )
    rate_burst: float = field(
        default=0.0, metadata={"help": "token-bucket burst in events (default: one second)"}
    )
    dead_letter_limit: int = field(
        default=100_000, metadata={"help": "rejected events kept for GET /dead-letters"}
    )
    max_connections: int = field(
        default=1000, metadata={"help": "concurrent connections; more get 503 at once"}
    )
    header_timeout: float = field(
        default=10.0,
        metadata={"help": "seconds a request may take to send its headers (closed after)"},
    )
    body_timeout: float = field(
        default=30.0,
        metadata={"help": "seconds a request body may stall between chunks (408 after)"},
    )
    retention: float = field(
        default=0.0,
        metadata={
            "help": "days of history to keep (older rows are deleted in the background); "
            "0 = keep everything"
        },
    )
    simulator_max_rps: float = field(
        default=50_000.0, metadata={"help": "highest rate POST /simulator/start accepts"}
    )
    simulator_max_duration: float = field(
        default=3600.0, metadata={"help": "longest run POST /simulator/start accepts (seconds)"}
    )
    drift: bool = field(
        default=True, metadata={"help": "monitor inputs and scores for drift (GET /drift)"}
    )
    drift_reference_events: int = field(
        default=10_000,
        metadata={"help": "drift: events after start that form each value's reference"},
    )
    drift_window: int = field(
        default=10_000, metadata={"help": "drift: the current window, in most recent events"}
    )
    drift_psi: float = field(
        default=0.2, metadata={"help": "drift: a value drifts when its PSI exceeds this"}
    )
    drift_p: float = field(
        default=0.001,
        metadata={
            "help": "drift: ... or when its KS p-value is below this (divided by the number of "
            "values monitored)"
        },
    )
    drift_min_events: int = field(
        default=1000,
        metadata={"help": "drift: events a breach (or its end) must last to raise (or clear)"},
    )
    profile: str | None = field(
        default=None, metadata={"help": "write a pyinstrument HTML profile here on shutdown"}
    )
    features: str = field(
        default="default",
        metadata={
            "help": "feature file (TOML, see docs/features.md); 'default' = the set shipped "
            "with the package, 'off' = compute no features"
        },
    )
    features_default_version: str | None = field(
        default=None,
        metadata={"help": "feature version served without ?version= (default: the last declared)"},
    )
    features_checkpoint_every: float = field(
        default=30.0,
        metadata={"help": "seconds between feature-state checkpoints (a restart replays since)"},
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    insecure: bool = field(
        default=False,
        metadata={"help": "allow listening on a non-loopback address without API keys"},
    )
    max_in_flight_bytes: int = field(
        # Bodies are held until answered, with their decoded events: 64 MiB of small-event
        # JSON decodes to about 1.2M events waiting for room, a few hundred MB.
        default=64 * 1024 * 1024,
        metadata={
            "help": "most request-body bytes being read or decoded at once; more waits "
            "--max-wait, then 503"
        },
    )
    max_ndjson_bytes: int = field(
        default=1024**3, metadata={"help": "longest NDJSON body in bytes (413 after)"}
    )
    max_ndjson_seconds: float = field(
        default=600.0, metadata={"help": "longest NDJSON body in seconds (408 after)"}
    )
    shutdown_delay: float = field(
        default=0.0,
        metadata={
            "help": "seconds between SIGTERM and closing the listener, while /ready and "
            "new ingest answer 503 (lets a load balancer drain this instance)"
        },
    )
    # -- cluster mode (docs/cluster.md) --
    cluster: str | None = field(
        default=None,
        metadata={
            "help": "NATS URL (nats://HOST:4222) to run as a node of a cluster; needs a "
            "postgresql:// --store and --node-id; unset = a single node"
        },
    )
    node_id: str | None = field(
        default=None, metadata={"help": "this node's name in the cluster (letters, digits, -, _)"}
    )
    cluster_name: str = field(
        default="streamscore",
        metadata={
            "help": "names the JetStream stream, key-value bucket, PostgreSQL schema and "
            "Redis keys, so that clusters can share a bus and a database"
        },
    )
    partitions: int = field(
        default=64,
        metadata={"help": "partitions P of a new cluster (fixed at its creation)"},
    )
    cluster_replicas: int = field(
        default=1,
        metadata={"help": "JetStream replicas of a new cluster's stream (3 in production)"},
    )
    online_store: str | None = field(
        default=None,
        metadata={
            "help": "Redis URL (redis://HOST:6379/0) where owners keep each user's median and "
            "features, so that any node answers those reads itself; unset = forward them to "
            "the owner"
        },
    )
    online_refresh: float = field(
        default=1.0,
        metadata={
            "help": "seconds between rewrites of every owned user's features in the online "
            "store as stream time moves (users of a batch are written at once)"
        },
    )
    advertise_url: str | None = field(
        default=None,
        metadata={"help": "this node's base URL for the others (default http://HOST:PORT)"},
    )
    heartbeat_interval: float = field(
        default=2.0, metadata={"help": "seconds between a node's heartbeats and lease rounds"}
    )
    dead_after: float = field(
        default=6.0,
        metadata={
            "help": "seconds of silence after which a node is dead and its partitions are "
            "taken over (at least 3 heartbeat intervals)"
        },
    )
    cluster_ack_wait: float = field(
        default=10.0,
        metadata={"help": "seconds JetStream waits for an owner's ack before redelivering"},
    )


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def env_name(name: str) -> str:
    return f"STREAMSCORE_{name.upper()}"


def from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings given as `STREAMSCORE_*` variables, converted to each field's type."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = environ.get(env_name(f.name))
        if raw is None:
            continue
        kind = type(f.default) if f.default is not None else str
        try:
            values[f.name] = parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as exc:
            raise ValueError(f"{env_name(f.name)}={raw!r}: {exc}") from None
    return values
