"""A user's features as the JSON answer of `GET /users/{id}/features`, built without a dict
per value: what the API serves and what a cluster owner writes to the online store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec

from streamscore.features.engine import Table


def encode_users(users: Sequence[str], version: str, table: Table) -> list[bytes]:
    """The answers without a dict per value: one bytes template per request, filled per user.

    A 1,000-user lookup of the default set is 1.5 MB of JSON; building it from dicts cost
    4x the features' computation."""
    encode = msgspec.json.encode
    stream_time = table.time if math.isfinite(table.time) else None
    fields = []
    tokens = []
    for name, column in table.columns.items():
        bound = table.bounds.get(name)
        window = (
            b""
            if bound is None
            else b',"window_start":%s,"window_end":%s' % (encode(bound[0]), encode(bound[1]))
        )
        fields.append(_literal(encode(name)) + b':{"value":%s' + _literal(window) + b"}")
        tokens.append(_tokens(column))
    template = (
        b'{"user_id":%s,"version":'
        + _literal(encode(version))
        + b',"stream_time":'
        + encode(stream_time)
        + b',"features":{'
        + b",".join(fields)
        + b"}}"
    )
    rows = zip(*tokens, strict=True) if tokens else [()] * len(users)
    return [template % (encode(user), *row) for user, row in zip(users, rows, strict=True)]


def _tokens(column: list[Any]) -> list[bytes]:
    """Each value's JSON text. Numbers, booleans and nulls encode as one list and split (they
    hold no commas); strings one by one, once per distinct value."""
    if any(isinstance(v, str) for v in column):
        cache: dict[Any, bytes] = {}
        return [
            cache[v] if v in cache else cache.setdefault(v, msgspec.json.encode(v)) for v in column
        ]
    return msgspec.json.encode(column)[1:-1].split(b",") if column else []


def _literal(text: bytes) -> bytes:
    """Text placed in a %-template as itself."""
    return text.replace(b"%", b"%%")
