"""The admin pages in a real browser, tried as a new user would, on the `make run` stack.

Sign in, submit an imagine from the page, watch the progress rise without a reload, click U2,
see the upscale; then the gallery, accounts and keys. Screenshots land in a temporary folder, or in
docs/screenshots/ with MJQ_UPDATE_SCREENSHOTS=1.
Chromium is Debian's (`make venv` installs it with CI=true); Playwright only drives it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import IN_CI
from tests.processes import ROOT, make_run_stack

pytestmark = pytest.mark.e2e

SECRET = "browser-secret"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Where screenshots go: a temporary folder, or docs/screenshots when MJQ_UPDATE_SCREENSHOTS=1 (the committed
#: ones are refreshed on purpose, not by every test run).
SHOTS = (ROOT / "docs" / "screenshots" if os.environ.get("MJQ_UPDATE_SCREENSHOTS") == "1"
         else Path(tempfile.gettempdir()) / "mjq-screenshots")
#: Seconds a simulated job takes: long enough for the page to show several progress steps.
JOB_SECONDS = 4
#: Longest wait for one job to finish in the browser (the machine is shared and slow).
JOB_TIMEOUT_SECONDS = 60


def missing(message: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if executable is None:
        missing("chromium is not installed (apt-get install chromium; `make venv` does it with CI=true)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make run` with an API secret and 4-second simulated jobs: the base URL."""
    with make_run_stack("make-run-admin", tmp_path_factory.mktemp("admin-browser"), {
            "MJQ_API_SECRET": SECRET, "MJQ_SIM_JOB_SECONDS": str(JOB_SECONDS), "MJQ_WORKER_CONCURRENCY": "4"}) as (
            base, _proc):
        yield base


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def follow(page: Any, screenshot_at_percent: str | None = None) -> list[tuple[str, str]]:
    """Read status and progress from the DOM until the task ends: the distinct (status, progress) seen."""
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        now = (page.inner_text("#status"), page.inner_text("#progress"))
        if not seen or seen[-1] != now:
            seen.append(now)
            if screenshot_at_percent and now[0] == "IN_PROGRESS" and now[1] not in ("0%", ""):
                shot(page, screenshot_at_percent)
                screenshot_at_percent = None
        if now[0] in ("SUCCESS", "FAILURE", "CANCEL"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"the task did not finish in {JOB_TIMEOUT_SECONDS}s: {seen}")


def image_loaded(page: Any) -> int:
    page.wait_for_function("() => { const i = document.getElementById('task-image');"
                           " return i && !i.hidden && i.complete && i.naturalWidth > 0; }", timeout=15_000)
    return int(page.evaluate("document.getElementById('task-image').naturalWidth"))


def test_a_new_admin_signs_in_imagines_watches_progress_upscales_u2_and_varies_a_region(browser, stack):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if request.url.endswith("/stream") else None)
    page.goto(f"{stack}/admin/")
    assert "/admin/login" in page.url
    shot(page, "login")
    page.fill("input[name=key]", "not the secret")
    page.click("button[type=submit]")
    assert "not an admin key" in page.inner_text("main")
    page.fill("input[name=key]", SECRET)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack}/admin/")
    assert page.inner_text("h1") == "Dashboard"

    page.click("text=Imagine")
    page.fill("textarea[name=prompt]", "a red fox in fresh snow, golden hour --ar 16:9")
    page.select_option("select[name=mode]", "FAST")
    page.click("#imagine-form button[type=submit]")
    page.wait_for_url("**/admin/task/*")
    grid_url = page.url
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    seen = follow(page, screenshot_at_percent="task-in-progress")
    percents = {int(p.rstrip("%")) for s, p in seen if s == "IN_PROGRESS" and p.rstrip("%").isdigit()}
    assert len(percents - {0, 100}) >= 2, seen
    print(f"progress seen in the page without a reload: {seen}")
    assert seen[-1] == ("SUCCESS", "100%"), seen
    assert page.evaluate("window.__sameDocument === true") and page.url == grid_url
    assert streams and streams[0].endswith(grid_url.rsplit("/", 1)[1] + "/stream")  # pushed, not polled
    assert image_loaded(page) > 0
    labels = page.locator("#buttons button").all_inner_texts()
    assert labels[:4] == ["U1", "U2", "U3", "U4"] and "V2" in labels
    shot(page, "task-done")

    page.click("#buttons button:text-is('U2')")
    page.wait_for_url(lambda url: url != grid_url and "/admin/task/" in url)
    assert "UPSCALE" in page.inner_text("h1")
    assert follow(page)[-1] == ("SUCCESS", "100%")
    assert image_loaded(page) > 0
    assert "Vary (Region)" in page.inner_text("#buttons")
    shot(page, "upscale")
    upscale_url = page.url

    page.click("#buttons button:has-text('Vary (Region)')")
    page.wait_for_selector("#modal[open] #region-canvas")
    box = page.locator("#region-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7, steps=5)
    page.mouse.up()
    page.fill("#modal-prompt", "a red fox wearing a knitted hat")
    shot(page, "vary-region")
    page.click("#modal-submit")
    page.wait_for_url(lambda url: url != upscale_url and "/admin/task/" in url)
    assert "INPAINT" in page.inner_text("h1") and follow(page)[-1] == ("SUCCESS", "100%")
    assert image_loaded(page) > 0

    page.goto(f"{stack}/admin/tasks")
    thumbs = page.locator(".gallery img")
    assert thumbs.count() == 3
    page.wait_for_function("() => [...document.querySelectorAll('.gallery img')].every(i => i.naturalWidth > 0)")
    shot(page, "gallery")

    page.goto(f"{stack}/admin/accounts")
    assert page.locator("text=enabled").count() >= 1 and "Disable" in page.inner_text("main")
    shot(page, "accounts")

    page.goto(f"{stack}/admin/keys")
    page.fill("input[name=name]", "a partner's bot")
    page.click("form.inline button[type=submit]")
    assert page.inner_text("#new-key").startswith("mjq_")
    shot(page, "keys")

    page.goto(f"{stack}/admin/")
    assert "IMAGINE" in page.inner_text("main") and "UPSCALE" in page.inner_text("main")
    shot(page, "dashboard")
    page.close()
    for name in ("login", "dashboard", "task-in-progress", "task-done", "upscale", "vary-region", "gallery",
                 "accounts", "keys"):
        assert (SHOTS / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name



def test_metrics_after_the_browser_session_show_every_series_with_its_traffic(browser, stack):
    """Runs after the browser test on the same stack: what the admin did shows in /metrics."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{stack}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {"mjq_jobs_submitted", "mjq_jobs_finished", "mjq_jobs_open", "mjq_job_duration_seconds",
                "mjq_queue_depth", "mjq_queue_oldest_age_seconds", "mjq_inflight", "mjq_webhook_deliveries",
                "mjq_upstream_errors"}
    assert expected <= set(families), sorted(families)

    def total(name: str, sample: str, **labels: str) -> float:
        return sum(s.value for s in families[name].samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    assert total("mjq_jobs_submitted", "mjq_jobs_submitted_total", action="IMAGINE") >= 1
    assert total("mjq_jobs_submitted", "mjq_jobs_submitted_total", action="UPSCALE") >= 1
    assert total("mjq_jobs_finished", "mjq_jobs_finished_total", status="SUCCESS") >= 3
    assert total("mjq_job_duration_seconds", "mjq_job_duration_seconds_count") >= 3
    print("metrics after the browser session:", {
        "submitted": total("mjq_jobs_submitted", "mjq_jobs_submitted_total"),
        "finished SUCCESS": total("mjq_jobs_finished", "mjq_jobs_finished_total", status="SUCCESS"),
        "durations": total("mjq_job_duration_seconds", "mjq_job_duration_seconds_count")})
