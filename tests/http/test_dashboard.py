"""The dashboard end to end, in a real headless Chromium (Debian's `chromium`,
driven by Playwright): jobs submitted by a real client appear on the page,
progress, complete, can be looked up and cancelled; the throughput chart
draws. Screenshots of the run go to docs/images/ when GEARTRAIN_SCREENSHOTS
is set (that is how the docs' pictures are made)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.http.util import Served, request
from tests.support.wire import Wire, grab

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"



@pytest.fixture
def page() -> Iterator[Page]:
    if not os.path.exists(CHROMIUM):
        message = "Debian's chromium is not installed (`make test` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_page(viewport={"width": 1200, "height": 1100})
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    if os.environ.get("GEARTRAIN_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / name), full_page=True)


def cell(page: Page, function: str, column: int) -> str:
    locator = page.locator(f'#functions tr[data-function="{function}"] td')
    return str(locator.nth(column).inner_text())


def test_jobs_appear_progress_complete_and_can_be_cancelled(served: Served, page: Page) -> None:
    srv, port = served
    p = page
    p.goto(f"http://127.0.0.1:{port}/")
    p.wait_for_selector("#live.on", timeout=10_000)
    handles = [request(port, "POST", "/api/jobs", {"function": "resize", "payload": f"img{i}"})
               .json()["handle"] for i in range(3)]
    request(port, "POST", "/api/jobs", {"function": "email", "priority": "high"})
    # the live table shows them without a reload
    p.wait_for_function(
        "() => document.querySelector('#functions tr[data-function=\"resize\"] td:nth-child(2)')"
        "?.textContent === '3'", timeout=10_000)
    assert cell(p, "email", 2) == "1"  # the high column
    with Wire(srv.address) as w:
        w.send("SET_CLIENT_ID", "thumbnailer")
        w.send("CAN_DO", "resize")
        _, job = grab(w)
        assert job[0].decode() == handles[0]
        w.send("WORK_STATUS", job[0], b"3", b"10")
        w.send("WORK_DATA", job[0], b"resized 30%")
        w.send("ECHO_REQ", b"sync")
        w.expect("ECHO_RES")
        # the worker and what it runs
        p.wait_for_function(
            "() => document.querySelector('#workers tbody')?.textContent.includes('thumbnailer')",
            timeout=10_000)
        assert handles[0] in p.inner_text("#workers")
        assert cell(p, "resize", 6) == "1"  # running
        # look the running job up: its progress and data
        p.fill("#handle", handles[0])
        p.click("#lookup button[type=submit]")
        p.wait_for_function(
            "() => document.querySelector('#job-state').textContent === 'running'", timeout=10_000)
        assert p.inner_text("#job-status") == "3/10"
        assert p.inner_text("#job-data") == "resized 30%"
        shot(p, "dashboard-running.png")
        # it completes: the page follows by itself
        w.send("WORK_COMPLETE", job[0], b"thumb.jpg")
        w.send("ECHO_REQ", b"sync")
        w.expect("ECHO_RES")
        p.wait_for_function(
            "() => document.querySelector('#job-state').textContent === 'completed'", timeout=10_000)
        assert p.inner_text("#job-result") == "thumb.jpg"
        p.wait_for_function(
            "() => document.querySelector('#functions tr[data-function=\"resize\"] td:nth-child(9)')"
            "?.textContent === '1'", timeout=10_000)  # completed column
    # cancel a queued job from the page
    p.fill("#handle", handles[2])
    p.click("#lookup button[type=submit]")
    p.wait_for_function(
        "() => document.querySelector('#job-state').textContent === 'queued'", timeout=10_000)
    p.click("#cancel")
    p.wait_for_function(
        "() => document.querySelector('#job-state').textContent === 'cancelled'", timeout=10_000)
    assert request(port, "GET", f"/api/jobs/{handles[2]}").json()["state"] == "cancelled"
    # what the browser fetched by itself (favicon) submitted no job
    assert sorted(f["name"] for f in request(port, "GET", "/api/functions").json()) == ["email", "resize"]
    # an unknown handle says so
    p.fill("#handle", "H:nowhere:1")
    p.click("#lookup button[type=submit]")
    p.wait_for_selector("#job-error:not([hidden])", timeout=10_000)
    assert "no such job" in p.inner_text("#job-error")
    # the chart has a line and a legend entry per function
    p.wait_for_function(
        "() => document.querySelectorAll('#legend span').length >= 2", timeout=10_000)
    drawn = p.evaluate(
        "() => { const c = document.getElementById('chart'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }")
    assert drawn > 500, "nothing drawn on the chart"


def test_assets_ship_in_the_package_and_need_no_network(served: Served) -> None:
    _, port = served
    page = request(port, "GET", "/").body.decode()
    assert "http://" not in page and "https://" not in page  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        got = request(port, "GET", asset)
        assert got.status == 200 and b"https://" not in got.body
