"""History out: every stored event in a time range as Arrow record batches, then Parquet, CSV
or NDJSON, in bounded memory.

The store hands over chunks (`Store.export_rows`: one user's events, sorted by (timestamp,
seq), as the chunks' JSON records) one at a time; they are decoded, filtered to the range and
gathered into blocks of `BLOCK_ROWS` events, so memory holds one block whatever the store's
size. Rows are grouped by chunk, not sorted globally: sort by (timestamp, seq) to replay them
in the order the service saw them.

Columns (`SCHEMA`); Parquet keeps `features` as a list, CSV and NDJSON as JSON:

>>> [f.name for f in SCHEMA]
['user_id', 'timestamp', 'seq', 'event_id', 'event_type', 'attributes', 'features', 'score', 'model_version', 'variant']

>>> records = b'[[5.0,0.25,1,"e1",1,[1.0,2.0]],[9.0,0.5,2,null,1,[3.0,4.0],"click",{"n":1},"b"]]'
>>> block = to_batch(decode("u", records), {1: "m@1"})
>>> block.num_rows, block.column("features").to_pylist(), block.column("attributes").to_pylist()
(2, [[1.0, 2.0], [3.0, 4.0]], [None, '{"n":1}'])
>>> ndjson_lines(decode("u", records)[1:], {1: "m@1"})
b'{"user_id":"u","timestamp":9.0,"seq":2,"features":[3.0,4.0],"score":0.5,"model_version":"m@1","event_type":"click","attributes":{"n":1},"variant":"b"}\\n'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

NULL = msgspec.Raw(b"null")
Format = Literal["parquet", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "csv")
BLOCK_ROWS = 65_536  # events per Arrow batch, Parquet row group and NDJSON block

SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),  # UNIX seconds, as ingested
        pa.field("seq", pa.int64(), nullable=False),  # the store's order of arrival
        pa.field("event_id", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("attributes", pa.string()),  # a JSON object: values mix numbers and strings
        pa.field("features", pa.list_(pa.float64()), nullable=False),
        pa.field("score", pa.float64(), nullable=False),  # the stored float32, widened exactly
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("variant", pa.string()),  # the experiment arm, while one ran
    ]
)


class Source(Protocol):
    """What an export reads: a store (`streamscore.store.base.Store`)."""

    def export_rows(
        self, since: float, until: float, users: Sequence[str] | None = None
    ) -> Iterator[tuple[str, bytes]]: ...
    def model_versions(self) -> dict[int, str]: ...


class Record(msgspec.Struct, array_like=True):
    """One event of a chunk's records (`streamscore.history.chunks`)."""

    timestamp: float
    score: float
    seq: int
    event_id: str | None
    model_id: int
    features: list[float]
    event_type: str | None = None
    attributes: msgspec.Raw = NULL  # kept as JSON text: exported as stored
    variant: str | None = None


class Line(msgspec.Struct, omit_defaults=True):
    """One NDJSON line of `GET /export`: absent optional fields are left out."""

    user_id: str
    timestamp: float
    seq: int
    features: list[float]
    score: float
    model_version: str
    event_id: str | None = None
    event_type: str | None = None
    attributes: msgspec.Raw = NULL
    variant: str | None = None


_records = msgspec.json.Decoder(list[Record])
_encoder = msgspec.json.Encoder()


def decode(user_id: str, records: bytes) -> list[tuple[str, Record]]:
    """A chunk's records, each with its user."""
    return [(user_id, r) for r in _records.decode(records)]


def events(
    source: Source, since: float, until: float, users: Sequence[str] | None = None
) -> Iterator[list[tuple[str, Record]]]:
    """Blocks of about `BLOCK_ROWS` (user_id, record) in [since, until], chunk by chunk."""
    block: list[tuple[str, Record]] = []
    for user_id, records in source.export_rows(since, until, users):
        block += [
            (user_id, r) for _, r in decode(user_id, records) if since <= r.timestamp <= until
        ]
        if len(block) >= BLOCK_ROWS:
            yield block
            block = []
    if block:
        yield block


def to_batch(rows: Sequence[tuple[str, Record]], versions: dict[int, str]) -> pa.RecordBatch:
    """The rows as one record batch of `SCHEMA`."""
    recs = [r for _, r in rows]
    widths = np.fromiter((len(r.features) for r in recs), np.int32, len(recs))
    offsets = np.concatenate(([0], np.cumsum(widths, dtype=np.int32)))
    values = np.fromiter((x for r in recs for x in r.features), np.float64, int(offsets[-1]))
    columns = [
        pa.array([u for u, _ in rows], pa.string()),
        pa.array(np.fromiter((r.timestamp for r in recs), np.float64, len(recs))),
        pa.array(np.fromiter((r.seq for r in recs), np.int64, len(recs))),
        pa.array([r.event_id for r in recs], pa.string()),
        pa.array([r.event_type for r in recs], pa.string()),
        pa.array(
            [None if r.attributes == NULL else bytes(r.attributes).decode() for r in recs],
            pa.string(),
        ),
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
        pa.array(np.fromiter((r.score for r in recs), np.float64, len(recs))),
        pa.array([versions[r.model_id] for r in recs], pa.string()),
        pa.array([r.variant for r in recs], pa.string()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def ndjson_lines(rows: Sequence[tuple[str, Record]], versions: dict[int, str]) -> bytes:
    """The rows as NDJSON, one `Line` each."""
    return _encoder.encode_lines(
        [
            Line(
                user_id=u,
                timestamp=r.timestamp,
                seq=r.seq,
                features=r.features,
                score=r.score,
                model_version=versions[r.model_id],
                event_id=r.event_id,
                event_type=r.event_type,
                attributes=r.attributes,
                variant=r.variant,
            )
            for u, r in rows
        ]
    )


def ndjson(
    source: Source, since: float, until: float, users: Sequence[str] | None = None
) -> Iterator[bytes]:
    """The export as NDJSON blocks, for a streamed HTTP response."""
    versions = source.model_versions()
    for block in events(source, since, until, users):
        yield ndjson_lines(block, versions)


CSV_SCHEMA = SCHEMA.set(SCHEMA.get_field_index("features"), pa.field("features", pa.string()))


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV has no lists: features become JSON arrays, like attributes."""
    features = batch.column("features").to_pylist()
    index = SCHEMA.get_field_index("features")
    columns = list(batch.columns)
    columns[index] = pa.array([_encoder.encode(f).decode() for f in features], pa.string())
    return pa.RecordBatch.from_arrays(columns, schema=CSV_SCHEMA)


def write(
    source: Source,
    path: Path,
    fmt: Format,
    since: float,
    until: float,
    users: Sequence[str] | None = None,
    progress: Callable[[int], None] = lambda rows: None,
) -> int:
    """Write the export to `path` (replaced if it exists); returns the number of events.
    `progress` is called with the events of each block as it is written."""
    versions = source.model_versions()
    blocks: Iterable[list[tuple[str, Record]]] = events(source, since, until, users)
    written = 0
    if fmt == "parquet":
        with pq.ParquetWriter(path, SCHEMA, compression="zstd") as parquet:
            for block in blocks:
                parquet.write_batch(to_batch(block, versions))
                written += len(block)
                progress(len(block))
    elif fmt == "csv":
        with pa_csv.CSVWriter(path, CSV_SCHEMA) as csv:
            for block in blocks:
                csv.write_batch(_csv_batch(to_batch(block, versions)))
                written += len(block)
                progress(len(block))
    else:
        raise ValueError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    return written
