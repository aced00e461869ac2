"""Response shapes, for the OpenAPI document at /docs.

Handlers build plain dicts and encode them with msgspec; these models only describe them (and
schemathesis checks every response against them, so they cannot drift unnoticed).
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel, Field


def body_schema(model: type) -> dict[str, Any]:
    """A request body's JSON schema (a msgspec Struct or a pydantic model) with its `$defs`
    inlined: an operation's `openapi_extra` cannot add to the document's components, and a
    `#/$defs/...` reference there resolves nowhere (fuzzers skip what they cannot resolve).

    >>> from streamscore.api.experiments import ExperimentBody
    >>> body_schema(ExperimentBody)["properties"]["outcome"]["properties"]
    {'event_type': {'type': 'string'}}
    """
    if isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema()
    else:
        schema = msgspec.json.schema(model)
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: inline(v) for k, v in node.items() if k != "$ref"}
                return {**inline(definitions[ref.removeprefix("#/$defs/")]), **rest}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


class EventError(BaseModel):
    index: int = Field(description="position of the event in the request (NDJSON: its line)")
    error: str


class IngestResponse(BaseModel):
    processed: int = Field(description="events scored and durably stored (late ones included)")
    rejected: int
    duplicates: int = Field(description="events whose event_id was already processed")
    late: int = Field(description="processed events older than the window on arrival")
    errors: list[EventError] = Field(description="the first 100 rejections")
    errors_truncated: bool


class ErrorResponse(BaseModel):
    error: str
    processed: int | None = Field(
        default=None, description="NDJSON only: events of this request already durable"
    )


class MedianResponse(BaseModel):
    user_id: str
    median: float | None
    count: int
    window_start: float | None
    window_end: float | None


class HistoryPoint(BaseModel):
    """An event's optional fields appear only when it has them."""

    timestamp: float
    score: float
    event_type: str | None = Field(default=None, description="as ingested")
    attributes: dict[str, float | str | bool] | None = Field(
        default=None, description="as ingested"
    )
    variant: str | None = Field(
        default=None, description="the experiment variant whose model scored the event"
    )


class HistoryResponse(BaseModel):
    user_id: str
    history: list[HistoryPoint]
    next_cursor: str | None


class StatsResponse(BaseModel):
    status: str
    event_count: int
    users_tracked: int
    median_of_medians: float | None
    ingest_requests: int
    median_requests: int
    history_requests: int
    avg_ingest_latency_seconds: float
    p50_ingest_latency_seconds: float
    p99_ingest_latency_seconds: float
    rejected_events: int
    late_events: int
    duplicate_events: int
    windowed_events: int
    window_bytes: int = Field(description="memory held by the per-user window arrays")
    stream_time: float | None
    window_seconds: float
    in_flight_events: int
    index_lag_events: int = Field(description="acknowledged events not yet in history")
    model_version: str
    uptime_seconds: float
    recovery_seconds: float = Field(description="time taken to rebuild the windows at start")


class DeadLetter(BaseModel):
    id: int
    received_at: float
    index: int = Field(description="the event's position in its request")
    error: str
    raw: str = Field(description="the event as received, cut at 4 KiB")


class DeadLettersResponse(BaseModel):
    dead_letters: list[DeadLetter]


class ReadyResponse(BaseModel):
    status: str
    problems: list[str]


class HealthResponse(BaseModel):
    status: str


class BatchingDecision(BaseModel):
    target_size: int = Field(description="dispatch once this many events are queued")
    max_wait_ms: float = Field(description="or once the oldest queued event waited this long")
    reason: str


class BatchingFit(BaseModel):
    ready: bool = Field(description="false during cold start (too few batches measured)")
    intercept_ms: float = Field(description="fitted fixed time of one forward call")
    per_event_us: float = Field(description="fitted time per event")
    degree: int = Field(description="1: a + b*n; 2: a quadratic term predicted better")
    prediction_error: float | None = Field(
        description="mean |predicted - actual| / actual over recent batches"
    )


class CostModelShape(BaseModel):
    per_batch: float
    per_event: float
    per_second: float


class BatchingResponse(BaseModel):
    mode: str = Field(description="adaptive or fixed")
    policy: BatchingDecision
    latency_budget_ms: float
    p99_latency_ms: float | None = Field(
        description="p99 of queueing wait + processing over the last second's batches"
    )
    arrival_rate_eps: float
    fit: BatchingFit
    cost_model: CostModelShape
    recent_cost_per_event: float | None = Field(description="over the last 10 s of batches")
    recent_mean_batch: float | None = Field(description="events per batch, last 10 s")
    batches: int
    events: int
    total_cost: float


class BatchRecordShape(BaseModel):
    id: int
    at: float = Field(description="when the batch finished, UNIX s")
    size: int
    target_size: int
    max_wait_ms: float
    wait_ms: float = Field(description="queueing wait of the oldest event in the batch")
    processing_ms: float
    predicted_ms: float | None = Field(description="the fit's prediction before it ran")
    cost: float
    cost_per_event: float
    high_priority: bool


class BatchesResponse(BaseModel):
    batches: list[BatchRecordShape] = Field(description="newest first")


class SimulatorDrift(BaseModel, extra="forbid"):
    features: list[int] = Field(description="indices of the inputs to move")
    after_s: float = Field(default=0.0, ge=0, description="seconds into the run")
    shift: float = Field(default=0.0, description="added to each chosen input")
    scale: float = Field(default=1.0, description="multiplies each chosen input first")


class SimulatorStart(BaseModel, extra="forbid"):
    rps: float = Field(gt=0, description="events per second (capped by --simulator-max-rps)")
    duration_s: float = Field(gt=0, description="seconds (capped by --simulator-max-duration)")
    users: int = Field(default=1000, ge=1, le=10_000_000)
    late_fraction: float = Field(default=0.0, ge=0, le=1, description="share of late events")
    drift: SimulatorDrift | None = Field(default=None, description="drift on purpose")


class SimulatorStatus(BaseModel):
    running: bool
    rps: float | None
    duration_s: float | None
    users: int | None
    late_fraction: float | None
    started_at: float | None
    elapsed_s: float
    sent_events: int
    processed_events: int
    rejected_events: int
    late_events: int
    refused_requests: int = Field(description="requests the service refused (503) and retried")
    achieved_rps: float
    stopped_by: str | None = Field(description="duration, request, or null while running")
    last_error: str | None
    max_rps: float
    max_duration_s: float


class MedianHistogram(BaseModel):
    edges: list[float]
    counts: list[float]


class DashboardSnapshot(BaseModel):
    samples: list[dict[str, float | None]] = Field(description="one per second, oldest first")
    medians: MedianHistogram
    simulator: SimulatorStatus
    models: dict[str, Any] = Field(description="active version, last swap, shadow, experiment")
    drift: dict[str, Any] = Field(description="monitored values by PSI, recent change points")


class DriftRange(BaseModel):
    events: int
    start: float | None
    end: float | None


class DriftValue(BaseModel):
    name: str = Field(description="features[i], a computed feature, or score@<model version>")
    psi: float | None
    ks: float | None
    ks_p_value: float | None
    wasserstein: float | None
    drifted: bool
    since: float | None = Field(description="event time the current state began")
    reference: DriftRange
    current: DriftRange


class DriftResponse(BaseModel):
    values: list[DriftValue]
    alerts: list[dict[str, Any]]
    change_points: list[dict[str, Any]]


class RepinResponse(BaseModel):
    reference_events: int
