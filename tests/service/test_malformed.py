"""Bad input gets a clear error naming the event; good events of the same request are kept."""

from __future__ import annotations

import time

import msgspec
import pytest

from ..conftest import Server, post_events

NOW = time.time()
GOOD = {"user_id": "good", "timestamp": NOW, "features": [0.1, 0.2, 0.3]}

# (event, expected fragment of the reason)
BAD_EVENTS = [
    ({"timestamp": NOW, "features": [1, 2, 3]}, "missing required field `user_id`"),
    ({"user_id": "", "timestamp": NOW, "features": [1, 2, 3]}, "length >= 1"),
    ({"user_id": "x" * 257, "timestamp": NOW, "features": [1, 2, 3]}, "length <= 256"),
    ({"user_id": 42, "timestamp": NOW, "features": [1, 2, 3]}, "Expected `str`, got `int`"),
    ({"user_id": "u", "features": [1, 2, 3]}, "missing required field `timestamp`"),
    (
        {"user_id": "u", "timestamp": "soon", "features": [1, 2, 3]},
        "Invalid RFC3339 encoded datetime",
    ),
    ({"user_id": "u", "timestamp": True, "features": [1, 2, 3]}, "got `bool`"),
    ({"user_id": "u", "timestamp": 1, "features": [1, 2, 3]}, "before 2000-01-01"),
    ({"user_id": "u", "timestamp": NOW + 3600, "features": [1, 2, 3]}, "ahead of the server clock"),
    ({"user_id": "u", "timestamp": NOW, "features": [1, 2]}, "array` of length 3"),
    ({"user_id": "u", "timestamp": NOW, "features": [1, 2, 3, 4]}, "array` of length 3"),
    ({"user_id": "u", "timestamp": NOW, "features": [1, "a", 3]}, "Expected `float`, got `str`"),
    ({"user_id": "u", "timestamp": NOW, "features": [1, 1e300, 3]}, "within float32 range"),
    ({"user_id": "u", "timestamp": NOW}, "missing required field `features`"),
    ({"user_id": "u", "timestamp": NOW, "features": None}, "Expected `array`, got `null`"),
    ("not an object", "Expected `object`, got `str`"),
    ({"user_id": "u", "timestamp": NOW, "features": [1, 2, 3], "event_id": 7}, "got `int`"),
    ({"user_id": "u", "timestamp": NOW, "features": [1, 2, 3], "event_id": ""}, "length >= 1"),
    ({"user_id": "nul\u0000", "timestamp": NOW, "features": [1, 2, 3]}, "must not contain NUL"),
    ({"user_id": "u", "timestamp": NOW, "features": [1, 2, 3], "event_id": "\u0000"}, "NUL"),
]


@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
def test_each_bad_event_is_rejected_with_its_index_and_reason(
    server_factory, store_kind: str, ndjson: bool
) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind=store_kind)
    events: list[object] = []
    expected: dict[int, str] = {}
    for bad, reason in BAD_EVENTS:
        events.append(GOOD)
        expected[len(events)] = reason
        events.append(bad)
    events.append(GOOD)
    with server.client() as client:
        body = post_events(client, events, ndjson)
        assert body["processed"] == len(BAD_EVENTS) + 1
        assert body["rejected"] == len(BAD_EVENTS)
        got = {e["index"]: e["error"] for e in body["errors"]}
        assert set(got) == set(expected)
        for index, reason in expected.items():
            assert reason in got[index], (index, got[index])
        median = client.get("/users/good/median").json()
        assert median["count"] == len(BAD_EVENTS) + 1
        assert client.get("/stats").json()["rejected_events"] == len(BAD_EVENTS)


BAD_BODIES = [
    (b"", "application/json", 400, "empty body"),
    (b"{", "application/json", 400, "not valid JSON"),
    (b'{"events": [', "application/json", 400, "not valid JSON"),
    (b"[]", "application/json", 400, '"events" list'),
    (b'{"events": {}}', "application/json", 400, '"events" list'),
    (b'{"evnts": []}', "application/json", 400, '"events" list'),
    (b'{"events": [NaN]}', "application/json", 400, "not valid JSON"),
    (b"\xff\xfe{}", "application/json", 400, "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400, ""),
    (b"user_id=u", "application/x-www-form-urlencoded", 415, "unsupported content type"),
    (b"{}", "text/plain", 415, "unsupported content type"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "message"), BAD_BODIES)
def test_unreadable_bodies_store_nothing(
    module_server: Server, body: bytes, content_type: str, status: int, message: str
) -> None:
    with module_server.client() as client:
        before = client.get("/stats").json()["event_count"]
        r = client.post("/ingest", content=body, headers={"content-type": content_type})
        assert r.status_code == status, r.text
        assert message in r.json()["error"]
        assert client.get("/stats").json()["event_count"] == before


def test_size_limits(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(max_body_bytes=10_000, max_events_per_request=20, max_line_bytes=200)
    with server.client() as client:
        big = {"events": [GOOD] * 200}
        r = client.post("/ingest", json=big)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        r = client.post("/ingest", json={"events": [GOOD] * 21})
        assert r.status_code == 413 and "per JSON request" in r.json()["error"]
        long_line = msgspec.json.encode({**GOOD, "padding": "x" * 500})
        lines = [msgspec.json.encode(GOOD), long_line, msgspec.json.encode(GOOD)]
        r = client.post(
            "/ingest", content=b"\n".join(lines), headers={"content-type": "application/x-ndjson"}
        )
        assert r.status_code == 200
        body = r.json()
        assert body["processed"] == 2
        assert body["errors"] == [{"index": 1, "error": "line longer than 200 bytes"}]


def test_error_list_is_capped(module_server: Server) -> None:
    bad = {"user_id": "", "timestamp": NOW, "features": [1, 2, 3]}
    with module_server.client() as client:
        body = client.post("/ingest", json={"events": [bad] * 150 + [GOOD]}).json()
    assert body["rejected"] == 150 and body["processed"] == 1
    assert len(body["errors"]) == 100 and body["errors_truncated"] is True
    assert [e["index"] for e in body["errors"]] == list(range(100))
