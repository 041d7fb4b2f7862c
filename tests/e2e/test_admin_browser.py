"""The admin pages in a real browser, tried as a new user would, on the `make run` stack.

Sign in, submit an imagine from the page, watch the progress rise without a reload, click U2,
see the upscale, vary a region; filter the gallery by action and key; redeliver a webhook from a
task page; disable an account with a reason and enable it again; create a key. Beside the pages,
a partner's bot uses the API with its own key (a webhook to a local receiver, a job the upstream
refuses midway, an upscale), and long RELAX jobs fill an account while /metrics is scraped.
Screenshots land in a temporary folder, or in docs/screenshots/ with MJQ_UPDATE_SCREENSHOTS=1.
Chromium is Debian's (`make venv` installs it with CI=true); Playwright only drives it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.databases import IN_CI
from tests.fakes.webhooks import Receiver
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
#: The make-run stack seeds sim-1 and sim-2, 3 RELAX slots each; the metrics test fills sim-1's,
#: the accounts test disables and enables sim-2.
FILLED_ACCOUNT, RELAX_SLOTS, TOGGLED_ACCOUNT = "sim-1", 3, "sim-2"
#: A RELAX job that outlasts the scrape (it is cancelled right after).
LONG_JOB_SECONDS = 60


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
def receiver() -> Iterator[Receiver]:
    """The partner's webhook endpoint: a real HTTP server on loopback, answering 204."""
    with Receiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make run` with an API secret, 4-second simulated jobs and webhooks allowed to reach loopback: the base URL."""
    with make_run_stack("make-run-admin", tmp_path_factory.mktemp("admin-browser"), {
            "MJQ_API_SECRET": SECRET, "MJQ_SIM_JOB_SECONDS": str(JOB_SECONDS), "MJQ_WORKER_CONCURRENCY": "4",
            "MJQ_WEBHOOK_ALLOW_PRIVATE": "true"}) as (base, _proc):
        yield base


def api(stack: str, method: str, path: str, key: str = SECRET, **kwargs: Any) -> Any:
    """One call to the JSON API beside the pages, as `key`; the decoded answer."""
    answer = requests.request(method, f"{stack}{path}", headers={"mj-api-secret": key}, timeout=15, **kwargs)
    assert answer.status_code < 500, answer.text
    return answer.json()


def submit(stack: str, body: dict[str, Any], key: str = SECRET, prefix: str = "/mj") -> str:
    answer = api(stack, "POST", f"{prefix}/submit/imagine", key, json=body)
    assert answer["code"] in (1, 22) and answer["result"], answer
    return str(answer["result"])


def wait_until(what: str, check: Callable[[], Any], timeout: float = JOB_TIMEOUT_SECONDS) -> Any:
    """Poll `check` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


def finished(stack: str, task_id: str) -> dict[str, Any]:
    return wait_until(f"task {task_id} finishes", lambda: (lambda t: t if t["status"] in (
        "SUCCESS", "FAILURE", "CANCEL") else None)(api(stack, "GET", f"/mj/task/{task_id}/fetch")))


def deliveries(stack: str, task_id: str) -> list[dict[str, Any]]:
    return api(stack, "GET", f"/mj/task/{task_id}/deliveries")


@dataclass(frozen=True)
class Partner:
    """What the partner's bot did through the API: its key, and its tasks."""

    key_id: str
    hooked: str
    failed: str
    upscale: str


@pytest.fixture(scope="module")
def partner(stack: str, receiver: Receiver) -> Partner:
    """A partner's bot on the API beside the pages, with a user key the admin made through the admin API: an
    imagine with a notifyHook to a local receiver (by host name), one the upstream's moderation stops midway,
    and U1 of the first. Returns once the jobs ended and the final webhook was delivered."""
    created = api(stack, "POST", "/mj/admin/keys", json={"name": "partner bot", "role": "user"})["result"]
    key = created["key"]
    hooked = submit(stack, {"prompt": "a fox on a webhook", "notifyHook": receiver.url("/partner")}, key)
    failed = submit(stack, {"prompt": "a fox the output filter stops [sim:moderated]"}, key)
    grid = finished(stack, hooked)
    assert grid["status"] == "SUCCESS" and finished(stack, failed)["status"] == "FAILURE"
    u1 = next(b["customId"] for b in grid["buttons"] if b["label"] == "U1")
    upscale = api(stack, "POST", "/mj/submit/action", key, json={"taskId": hooked, "customId": u1})["result"]
    assert finished(stack, upscale)["status"] == "SUCCESS"
    wait_until("the partner's final webhook is delivered", lambda: any(
        d["taskStatus"] == "SUCCESS" and d["status"] == "delivered" for d in deliveries(stack, hooked)))
    return Partner(created["id"], hooked, failed, upscale)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert (SHOTS / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def signed_in(browser: Any, stack: str) -> Any:
    """A new page of an admin signed in with the secret, on the dashboard."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(f"{stack}/admin/login")
    page.fill("input[name=key]", SECRET)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack}/admin/")
    return page


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

    page.goto(f"{stack}/admin/keys")
    page.fill("input[name=name]", "a partner's bot")
    page.click("form.inline button[type=submit]")
    assert page.inner_text("#new-key").startswith("mjq_")
    shot(page, "keys")
    page.close()


def tiles(page: Any) -> set[str]:
    """Ids of the tasks the gallery shows."""
    return {href.rsplit("/", 1)[1] for href in page.locator(".gallery a.tile").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))")}


def test_the_gallery_filters_by_action_and_by_the_key_that_submitted(browser, stack, partner):
    page = signed_in(browser, stack)
    page.click("nav >> text=Tasks")
    assert {partner.hooked, partner.failed, partner.upscale} <= tiles(page)
    page.wait_for_function("() => [...document.querySelectorAll('.gallery img')].every(i => i.naturalWidth > 0)")
    shot(page, "gallery")

    page.fill("input[name=action]", "upscale")
    page.click("form.filters button[type=submit]")
    upscales = tiles(page)
    assert partner.upscale in upscales and not upscales & {partner.hooked, partner.failed}
    assert all(c.startswith("UPSCALE") for c in page.locator(".gallery .caption").all_inner_texts())

    page.fill("input[name=action]", "")
    page.select_option("select[name=owner]", label=f"partner bot ({partner.key_id})")
    page.click("form.filters button[type=submit]")
    assert tiles(page) == {partner.hooked, partner.failed, partner.upscale}
    assert f"owner={partner.key_id}" in page.url
    shot(page, "gallery-by-key")

    page.select_option("select[name=status]", "FAILURE")
    page.click("form.filters button[type=submit]")
    assert tiles(page) == {partner.failed}
    page.click(".gallery a.tile")
    assert page.inner_text("#status") == "FAILURE"
    assert "output filters" in page.inner_text("#fail")
    shot(page, "task-failed")
    page.close()


def test_an_admin_redelivers_a_webhook_from_the_task_page_and_its_attempts_rise(browser, stack, partner, receiver):
    final = next(d for d in deliveries(stack, partner.hooked) if d["taskStatus"] == "SUCCESS")
    assert (final["status"], final["attempts"]) == ("delivered", 1)
    copies = sum(r.headers.get("webhook-id") == final["webhookId"] for r in receiver.received)
    page = signed_in(browser, stack)
    page.goto(f"{stack}/admin/task/{partner.hooked}")
    row = page.locator(f"#delivery-{final['id']}")
    assert row.locator(".delivery-status").inner_text() == "delivered" and row.locator(".attempts").inner_text() == "1"
    assert page.locator("#deliveries tr[id^=delivery-]").count() >= 3  # SUBMITTED, started, ..., SUCCESS

    row.locator("button:text-is('Redeliver')").click()
    page.wait_for_url(f"**/admin/task/{partner.hooked}#deliveries")
    assert f"Delivery {final['id']} scheduled again." in page.inner_text("main")

    def attempted_again() -> bool:
        page.reload()
        row = page.locator(f"#delivery-{final['id']}")
        return row.locator(".attempts").inner_text() == "2" and row.locator(".delivery-status").inner_text() == (
            "delivered")

    wait_until("the redelivery is attempted", attempted_again)
    assert sum(r.headers.get("webhook-id") == final["webhookId"] for r in receiver.received) == copies + 1
    page.locator("#deliveries").scroll_into_view_if_needed()
    shot(page, "deliveries")
    page.close()


def test_an_admin_disables_an_account_with_a_reason_and_enables_it_again(browser, stack):
    page = signed_in(browser, stack)
    page.click("nav >> text=Accounts")
    row = page.locator(f"#account-{TOGGLED_ACCOUNT}")
    assert "enabled" in row.inner_text()
    row.locator("input[name=reason]").fill("card expired, renewing on Monday")
    row.locator("button:text-is('Disable')").click()
    page.wait_for_url(f"{stack}/admin/accounts")
    row = page.locator(f"#account-{TOGGLED_ACCOUNT}")
    assert "disabled" in row.inner_text()
    assert row.locator(".reason").inner_text() == "card expired, renewing on Monday"
    assert api(stack, "GET", f"/mj/account/{TOGGLED_ACCOUNT}/fetch")["result"]["disabledReason"] == (
        "card expired, renewing on Monday")
    shot(page, "accounts")
    row.locator("button:text-is('Enable')").click()
    page.wait_for_url(f"{stack}/admin/accounts")
    row = page.locator(f"#account-{TOGGLED_ACCOUNT}")
    assert "enabled" in row.inner_text() and "card expired" not in row.inner_text()
    assert row.locator("button:text-is('Disable')").count() == 1
    page.close()


def test_metrics_after_the_session_show_every_series_with_non_zero_values(browser, stack, partner):
    """The partner's traffic has ended (a webhook delivered, a job failed upstream); long RELAX jobs fill
    FILLED_ACCOUNT's slots and one more waits. Scraped now, every series the issue names is non-zero."""
    from prometheus_client.parser import text_string_to_metric_families

    long_jobs = [submit(stack, {"prompt": f"a slow fox {n} [sim:seconds={LONG_JOB_SECONDS}]",
                                "accountFilter": {"instanceId": FILLED_ACCOUNT}}, prefix="/mj-relax/mj")
                 for n in range(RELAX_SLOTS + 1)]

    def statuses() -> list[str]:
        return [t["status"] for t in api(stack, "POST", "/mj/task/list-by-condition", json={"ids": long_jobs})]

    try:
        wait_until(f"{RELAX_SLOTS} long jobs run and one waits", lambda: sorted(statuses()) == sorted(
            ["IN_PROGRESS"] * RELAX_SLOTS + ["NOT_START"]))
        page = signed_in(browser, stack)  # the dashboard while they run
        assert "mj.normal" in page.inner_text("main")
        shot(page, "dashboard")
        page.close()
        text = requests.get(f"{stack}/metrics", timeout=10).text
    finally:
        for task_id in long_jobs:
            api(stack, "POST", f"/mj/task/{task_id}/cancel")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    asserted: list[str] = []

    def value(family: str, sample: str, **labels: str) -> float:
        found = [s for s in families[family].samples if s.name == sample and s.labels == labels]
        assert len(found) == 1, (sample, labels, families[family].samples)
        shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
        asserted.append(f"{sample}{{{shown}}} {found[0].value}")
        return found[0].value

    fast, relax = {"action": "IMAGINE", "mode": "FAST"}, {"action": "IMAGINE", "mode": "RELAX"}
    assert value("mjq_jobs_submitted", "mjq_jobs_submitted_total", **fast) >= 2
    assert value("mjq_jobs_submitted", "mjq_jobs_submitted_total", **relax) >= RELAX_SLOTS + 1
    assert value("mjq_jobs_submitted", "mjq_jobs_submitted_total", action="UPSCALE", mode="FAST") >= 1
    assert value("mjq_jobs_finished", "mjq_jobs_finished_total", **fast, status="SUCCESS") >= 1
    assert value("mjq_jobs_finished", "mjq_jobs_finished_total", **fast, status="FAILURE") >= 1
    assert value("mjq_queue_depth", "mjq_queue_depth", pool="relax") == 1
    assert value("mjq_queue_oldest_age_seconds", "mjq_queue_oldest_age_seconds", pool="relax") > 0
    assert value("mjq_inflight", "mjq_inflight", account=FILLED_ACCOUNT, pool="relax") == RELAX_SLOTS
    assert value("mjq_job_duration_seconds", "mjq_job_duration_seconds_count", **fast) >= 2  # success and failure
    assert value("mjq_job_duration_seconds", "mjq_job_duration_seconds_sum", **fast) > 0
    assert value("mjq_webhook_deliveries", "mjq_webhook_deliveries_total", outcome="delivered") >= 1
    assert value("mjq_upstream_errors", "mjq_upstream_errors_total", kind="moderated") >= 1
    print("metrics asserted after the session:\n" + "\n".join(asserted))

    # The cancelled jobs count as cancelled in the statistics, on the API and on the dashboard.
    stats = api(stack, "GET", "/mj/admin/stats?days=1")["result"]
    assert sum(r["cancel"] for r in stats if (r["mode"], r["action"]) == ("RELAX", "IMAGINE")) == RELAX_SLOTS + 1
    page = signed_in(browser, stack)
    assert int(page.inner_text("#hour-cancel")) >= RELAX_SLOTS + 1
    page.close()
