"""The dashboard in a real browser (Debian's Chromium, driven by Playwright), and the simulator
behind it, against a real server.

The screenshot is kept as a test artifact: `artifacts/dashboard.png`.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from playwright import sync_api

from ..conftest import Server, wait_until

# Run alone (scripts/test): a browser's live page, with time bounds.
pytestmark = pytest.mark.serial

# scripts/test installs Debian's chromium; without it this test fails rather than skips.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def number(text: str) -> float:
    """The first number in a card's text ("12,345" -> 12345.0)."""
    match = re.search(r"-?[\d,]+(\.\d+)?", text)
    assert match, text
    return float(match.group(0).replace(",", ""))


def test_dashboard_shows_the_simulator_live_and_looks_up_a_user(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(simulator_max_rps=20_000)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/dashboard")

        # Before any event: an empty state, not zeros pretending to be data.
        page.wait_for_selector("#empty:not([hidden])", timeout=10_000)
        assert page.inner_text('[data-stat="events"]') == "0"
        assert page.is_visible("#chart-throughput .no-data")
        page.wait_for_function("document.querySelector('#connection').textContent.includes('live')")

        # Keyboard only: tab to the simulator's rate field, type a rate, tab on and start.
        page.focus("#user-id")
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.name") == "rps":
                break
        assert page.evaluate("document.activeElement.name") == "rps", "reachable by keyboard"
        page.keyboard.press("Control+A")
        page.keyboard.type("4000")
        page.fill('input[name="users"]', "200")
        page.fill('input[name="duration_s"]', "60")
        page.focus("#sim-start")
        page.keyboard.press("Enter")

        # Live values within a few seconds: cards and charts.
        page.wait_for_function(
            "Number(document.querySelector('[data-stat=\"events_per_second\"]')"
            ".textContent.replace(/,/g, '')) > 0",
            timeout=15_000,
        )
        assert number(page.inner_text('[data-stat="events"]')) > 0
        assert number(page.inner_text('[data-stat="users"]')) > 0
        # All-user aggregates are computed once per interval: the median may trail the counts.
        page.wait_for_function(
            "/\\d/.test(document.querySelector('[data-stat=\"median_of_medians\"]').textContent)",
            timeout=10_000,
        )
        assert number(page.inner_text('[data-stat="median_of_medians"]')) != 0
        assert page.inner_text('[data-stat="ingest_latency"]').endswith("ms")
        assert number(page.inner_text('[data-stat="batch"]')) > 0
        assert "$" in page.inner_text('[data-stat="cost"]')
        for chart in ("throughput", "latency", "batch", "medians"):
            page.wait_for_selector(f"#chart-{chart} .no-data[hidden]", state="attached")
        assert page.is_hidden("#empty")
        assert "Running at 4,000 events/s" in page.inner_text("#sim-status")
        page.wait_for_timeout(3000)  # a few seconds of charts for the screenshot
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # Stop, then a user lookup renders exactly the median the API reports.
        page.click("#sim-stop")
        page.wait_for_function(
            "document.querySelector('#sim-status').textContent.startsWith('Stopped')"
        )
        with server.client() as client:
            assert client.get("/simulator/status").json()["running"] is False
            wait_until(lambda: client.get("/stats").json()["in_flight_events"] == 0)
            expected = client.get("/users/sim:user-7/median").json()
        page.fill("#user-id", "sim:user-7")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "document.querySelector('#user-result').dataset.median !== undefined"
        )
        assert float(page.get_attribute("#user-result", "data-median")) == expected["median"]
        assert f"over {expected['count']:,} events" in page.inner_text("#user-result")
        page.wait_for_selector("#chart-user .no-data[hidden]", state="attached")

        # A phone: one column, nothing wider than the screen.
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        browser.close()
    assert errors == []


def test_simulator_api_is_bounded_and_single(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(
        simulator_max_rps=1000, simulator_max_duration=30, api_keys="adm"
    )
    run = {"rps": 500, "duration_s": 2, "users": 10, "late_fraction": 0.5}
    auth = {"authorization": "Bearer adm"}
    with server.client() as client:
        assert client.post("/simulator/start", json=run).status_code == 401
        too_fast = client.post("/simulator/start", json={**run, "rps": 5000}, headers=auth)
        assert too_fast.status_code == 400 and "cap" in too_fast.json()["error"]
        assert (
            client.post(
                "/simulator/start", json={**run, "duration_s": 60}, headers=auth
            ).status_code
            == 400
        )
        invalid = client.post("/simulator/start", json={**run, "late_fraction": 2}, headers=auth)
        assert invalid.status_code == 400 and "late_fraction" in invalid.json()["error"]
        assert client.post("/simulator/start", json=run, headers=auth).status_code == 200
        busy = client.post("/simulator/start", json=run, headers=auth)
        assert busy.status_code == 409
        status = wait_until(
            lambda: (s := client.get("/simulator/status").json())["stopped_by"] and s
        )
        assert status["running"] is False and status["stopped_by"] == "duration"
        assert status["sent_events"] == status["processed_events"] == 1000
        assert 300 < status["late_events"] < 700  # half of them behind the window
        stats = client.get("/stats").json()
        assert stats["event_count"] == 1000 and stats["late_events"] == status["late_events"]
        assert stats["ingest_requests"] == 40  # through the ingest path, 25 events a request
        started = time.monotonic()
        assert (
            client.post(
                "/simulator/start", json={**run, "duration_s": 30}, headers=auth
            ).status_code
            == 200
        )
        stopped = client.post("/simulator/stop", headers=auth).json()
        assert stopped["stopped_by"] == "request" and time.monotonic() - started < 5


def test_the_drift_panel_shows_a_drifted_input(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(drift_reference_events=2000, drift_window=2000)
    run = {
        "rps": 4000,
        "duration_s": 4,
        "users": 50,
        "drift": {"features": [0], "after_s": 1.5, "shift": 0.5},
    }
    with server.client() as client:
        assert client.post("/simulator/start", json=run).status_code == 200
        assert wait_until(lambda: not client.get("/simulator/status").json()["running"], 30)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/dashboard")
        page.wait_for_selector('#drift tr[data-drifted="true"]', timeout=15_000)
        drifted = page.eval_on_selector_all(
            '#drift tr[data-drifted="true"] td:first-child',
            "cells => cells.map(c => c.textContent)",
        )
        inputs = [name for name in drifted if name.startswith("features[")]
        assert inputs == ["features[0]"]  # the score, which reads it, may drift too
        assert page.is_hidden("#drift-empty")
        browser.close()
        assert not errors, errors
