"""The /admin pages: sign-in with the secret or an admin key, CSRF on every POST, each page with data."""
from __future__ import annotations

import base64
import dataclasses
import io
import re

import pytest
from PIL import Image

from app import create_app
from app.buttons import grid_buttons, upscale_buttons
from app.db import db
from app.models import Task, now_ms
from app.services.keys import create_key
from app.services.plans import DEFAULT_PLANS
from tests.fakes.webhooks import Receiver, deliveries, make_deliverer
from tests.unit.conftest import drain
from tests.unit.test_executor import FakeClock, make_executor
from workers import queues
from workers.webhook_outbox import WebhookOutbox
from workers.webhooks import DELIVER

SECRET = "page-secret"


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, api_secret=SECRET)


def token(client, path: str = "/admin/login") -> str:
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]


def sign_in(client, key: str = SECRET):
    return client.post("/admin/login", data={"key": key, "csrf_token": token(client)})


@pytest.fixture
def admin(client):
    assert sign_in(client).status_code == 302
    return client


def make_key(app, role: str) -> tuple[str, str]:
    with app.app_context():
        row, key = create_key(db.session(), f"{role} key", "basic", role, DEFAULT_PLANS)
        return row.id, key


def imagine(client, prompt: str = "a red fox") -> str:
    answer = client.post("/admin/imagine", data={"prompt": prompt, "mode": "RELAX",
                                                 "csrf_token": token(client, "/admin/imagine")})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return answer.headers["Location"].rsplit("/", 1)[1]


def finish(app, task_id: str, buttons: list, action: str | None = None) -> None:
    """Mark a task done as the executor would (the unit app has no worker)."""
    with app.app_context():
        task = db.session.get(Task, int(task_id))
        task.status, task.progress, task.buttons = "SUCCESS", "100%", buttons
        task.image_url = f"http://mjq.test/mj/image/{task_id}.png"
        task.action = action or task.action
        db.session.commit()


def test_every_page_sends_a_stranger_to_the_login_form(client):
    for path in ("/admin/", "/admin/tasks", "/admin/accounts", "/admin/keys", "/admin/imagine", "/admin/task/1"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/admin/login?next=/admin/")
    assert client.get("/admin/login").status_code == 200


def test_the_secret_signs_in_with_an_httponly_samesite_cookie_and_sign_out_ends_it(client):
    answer = sign_in(client)
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and SECRET not in cookie
    assert client.get("/admin/").status_code == 200
    client.post("/admin/logout", data={"csrf_token": token(client, "/admin/")})
    assert client.get("/admin/").status_code == 302


def test_a_wrong_key_or_a_user_key_cannot_sign_in_but_an_admin_key_can_until_revoked(app, client):
    assert sign_in(client, "nope").status_code == 401
    _, user_key = make_key(app, "user")
    assert sign_in(client, user_key).status_code == 401
    admin_id, admin_key = make_key(app, "admin")
    assert sign_in(client, admin_key).status_code == 302
    assert client.get("/admin/keys").status_code == 200
    client.post(f"/admin/keys/{admin_id}/revoke", data={"csrf_token": token(client, "/admin/keys")})
    assert client.get("/admin/keys").status_code == 302


def test_a_post_without_the_sessions_csrf_token_is_refused(admin):
    assert admin.post("/admin/imagine", data={"prompt": "a fox"}).status_code == 400
    assert admin.post("/admin/imagine", data={"prompt": "a fox", "csrf_token": "forged"}).status_code == 400
    assert admin.post("/admin/login", data={"key": SECRET}).status_code == 400
    assert admin.post("/admin/task/1/action", json={"customId": "x"}).status_code == 400


def test_an_imagine_from_the_form_opens_its_task_page_and_shows_on_dashboard_and_gallery(app, admin):
    task_id = imagine(admin, "a lighthouse at dusk")
    page = admin.get(f"/admin/task/{task_id}").get_data(as_text=True)
    assert "a lighthouse at dusk" in page and "RELAX" in page and "task.js" in page
    data = admin.get(f"/admin/task/{task_id}.json").get_json()
    assert data["id"] == task_id and data["status"] == "NOT_START"
    dashboard = admin.get("/admin/").get_data(as_text=True)
    assert re.search(r"<td>mj\.normal</td><td>1</td>", dashboard), dashboard
    assert re.search(r"<td>\d{4}-\d\d-\d\d</td><td>RELAX</td><td>IMAGINE</td>", dashboard)
    gallery = admin.get("/admin/tasks?status=not_start&mode=RELAX").get_data(as_text=True)
    assert f"/admin/task/{task_id}" in gallery
    assert f"/admin/task/{task_id}" not in admin.get("/admin/tasks?status=SUCCESS").get_data(as_text=True)


def test_the_gallery_pages_newest_first_with_thumbnails(app, admin, monkeypatch):
    monkeypatch.setattr("app.pages.views.GALLERY_PAGE_SIZE", 2)
    ids = [imagine(admin, f"tile {n}") for n in range(3)]
    finish(app, ids[2], grid_buttons("h2"))
    first = admin.get("/admin/tasks").get_data(as_text=True)
    assert first.index(ids[2]) < first.index(ids[1]) and f"/admin/task/{ids[0]}" not in first
    assert f'src="http://mjq.test/mj/image/{ids[2]}.png"' in first
    older = re.search(r'href="(/admin/tasks\?before=\d+)"', first)[1]
    assert f"/admin/task/{ids[0]}" in admin.get(older).get_data(as_text=True)


def test_the_gallery_filters_by_action_and_by_the_key_that_submitted(app, admin):
    key_id, key = make_key(app, "user")
    parent = imagine(admin, "the admin's fox")
    finish(app, parent, grid_buttons("g1"))
    upscale = admin.post(f"/admin/task/{parent}/action", json={"customId": "MJ::JOB::upsample::1::g1"},
                         headers={"X-CSRF-Token": token(admin, f"/admin/task/{parent}")}).get_json()["result"]
    partners = admin.post("/mj/submit/imagine", json={"prompt": "the partner's fox"},
                          headers={"mj-api-secret": key}).get_json()["result"]

    def shown(query: str) -> set[str]:
        html = admin.get(f"/admin/tasks?{query}").get_data(as_text=True)
        return set(re.findall(r'href="/admin/task/(\d+)"', html))

    assert shown("") == {parent, upscale, partners}
    assert shown("action=upscale") == {upscale}
    assert shown("action=IMAGINE") == {parent, partners}
    assert shown(f"owner={key_id}") == {partners}
    assert shown(f"owner={key_id}&action=UPSCALE") == set()
    form = admin.get(f"/admin/tasks?owner={key_id}").get_data(as_text=True)
    assert f'<option value="{key_id}" selected>user key ({key_id})</option>' in form
    assert f"key {key_id}" in form


def delivery_row(client, task_id: str, delivery_id: int) -> str:
    """The HTML of one delivery's row in the task page's webhook table."""
    page = client.get(f"/admin/task/{task_id}").get_data(as_text=True)
    return re.search(rf'<tr id="delivery-{delivery_id}".*?</tr>', page, re.S)[0]


def test_redeliver_on_the_task_page_sends_a_delivered_webhook_again_with_the_same_id(
        app, admin, celery, session_factory, redis, images):
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        task_id = admin.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": rx.url()},
                             headers={"mj-api-secret": SECRET}).get_json()["result"]
        executor = make_executor(session_factory, redis, images, clock=clock)
        executor.listeners = [WebhookOutbox(0.0, 0.0, None, clock)]
        executor.execute(int(task_id))
        deliverer = make_deliverer(session_factory, clock)
        for delivery_id in deliverer.sweep():
            deliverer.attempt(delivery_id)
        first, *_, last = deliveries(session_factory, int(task_id))
        assert last.task_status == "SUCCESS" and (last.status, last.attempts) == ("delivered", 1)
        row = delivery_row(admin, task_id, last.id)
        assert '<td class="attempts">1</td>' in row and "Redeliver" in row and rx.url() in row
        drain(celery, queues.WEBHOOKS)

        csrf = token(admin, f"/admin/task/{task_id}")
        answer = admin.post(f"/admin/task/{task_id}/deliveries/{last.id}/redeliver", data={"csrf_token": csrf})
        assert answer.status_code == 302 and answer.headers["Location"] == f"/admin/task/{task_id}#deliveries"
        assert f"Delivery {last.id} scheduled again." in admin.get(f"/admin/task/{task_id}").get_data(as_text=True)
        assert '<td class="delivery-status">pending</td>' in delivery_row(admin, task_id, last.id)
        assert [m["args"] for m in drain(celery, queues.WEBHOOKS) if m["task"] == DELIVER] == [[str(last.id)]]
        clock.now = now_ms()  # the page re-armed it on the real clock
        assert deliverer.attempt(last.id) == "delivered"
        assert [r.headers["webhook-id"] for r in rx.received].count(last.event_id) == 2
    row = delivery_row(admin, task_id, last.id)
    assert '<td class="attempts">2</td>' in row and '<td class="delivery-status">delivered</td>' in row

    older = admin.post(f"/admin/task/{task_id}/deliveries/{first.id}/redeliver", data={"csrf_token": csrf})
    assert older.status_code == 302
    assert "already reached" in admin.get(f"/admin/task/{task_id}").get_data(as_text=True)
    unknown = admin.post(f"/admin/task/{task_id}/deliveries/999999/redeliver", data={"csrf_token": csrf})
    assert unknown.status_code == 302
    assert "delivery 999999 of task" in admin.get(f"/admin/task/{task_id}").get_data(as_text=True)
    assert admin.post(f"/admin/task/{task_id}/deliveries/nope/redeliver", data={"csrf_token": csrf}
                      ).status_code == 404


def test_statistics_count_success_failure_and_cancel_per_day_on_the_api_and_the_dashboard(app, admin):
    done, failed, cancelled = (imagine(admin, p) for p in ("a fox", "a bad fox", "a fox nobody waits for"))
    finish(app, done, grid_buttons("st"))
    with app.app_context():
        db.session.get(Task, int(failed)).status = "FAILURE"
        db.session.commit()
    assert admin.post(f"/mj/task/{cancelled}/cancel", headers={"mj-api-secret": SECRET}).get_json()["code"] == 1
    stats = admin.get("/mj/admin/stats?days=1", headers={"mj-api-secret": SECRET}).get_json()["result"]
    assert [(r["mode"], r["action"], r["success"], r["failure"], r["cancel"]) for r in stats] == [
        ("RELAX", "IMAGINE", 1, 1, 1)]
    dashboard = admin.get("/admin/").get_data(as_text=True)
    day = stats[0]["day"]
    assert f"<td>{day}</td><td>RELAX</td><td>IMAGINE</td><td>1</td><td>1</td><td>1</td>" in dashboard
    assert '<span id="hour-cancel">1</span> cancelled' in dashboard


def test_a_button_clicked_on_the_page_submits_the_action_and_a_region_vary_completes_its_modal(app, admin):
    parent = imagine(admin)
    finish(app, parent, grid_buttons("abc"))
    csrf = token(admin, f"/admin/task/{parent}")
    headers = {"X-CSRF-Token": csrf}
    upscale = admin.post(f"/admin/task/{parent}/action", json={"customId": "MJ::JOB::upsample::2::abc"},
                         headers=headers).get_json()
    assert upscale["code"] == 1
    assert admin.get(f"/admin/task/{upscale['result']}.json").get_json()["action"] == "UPSCALE"
    finish(app, upscale["result"], upscale_buttons("def"))
    region = admin.post(f"/admin/task/{upscale['result']}/action", json={"customId": "MJ::Inpaint::1::def::SOLO"},
                        headers=headers).get_json()
    assert region["code"] == 21
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (10, 10, 30, 30))
    png = io.BytesIO()
    mask.save(png, "PNG")

    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    done = admin.post(f"/admin/task/{region['result']}/modal", json={"prompt": "a fox, red hat",
                                                                      "maskBase64": data_url}, headers=headers)
    assert done.get_json()["code"] == 1, done.get_data(as_text=True)
    assert admin.get(f"/admin/task/{region['result']}.json").get_json()["status"] == "NOT_START"


def test_accounts_can_be_disabled_with_a_reason_and_enabled_again(admin):
    page = admin.get("/admin/accounts").get_data(as_text=True)
    account = re.search(r'action="/admin/accounts/([^/"]+)/disable"', page)[1]
    assert "fast 0 running, 0 waiting" in page
    csrf = token(admin, "/admin/accounts")
    admin.post(f"/admin/accounts/{account}/disable", data={"reason": "card expired", "csrf_token": csrf})
    page = admin.get("/admin/accounts").get_data(as_text=True)
    assert '<span class="reason">card expired</span>' in page and f"/admin/accounts/{account}/enable" in page
    admin.post(f"/admin/accounts/{account}/enable", data={"csrf_token": csrf})
    page = admin.get("/admin/accounts").get_data(as_text=True)
    assert f"/admin/accounts/{account}/disable" in page and "card expired" not in page


def test_a_new_key_is_shown_once_and_works_on_the_api(admin):
    created = admin.post("/admin/keys", data={"name": "bot", "role": "user", "plan": "basic", "balance": "",
                                              "csrf_token": token(admin, "/admin/keys")})
    key = re.search(r'<code id="new-key">(mjq_[^<]+)</code>', created.get_data(as_text=True))[1]
    assert admin.get("/mj/usage", headers={"mj-api-secret": key}).get_json()["code"] == 1
    listed = admin.get("/admin/keys").get_data(as_text=True)
    assert "bot" in listed and key not in listed
    refused = admin.post("/admin/keys", data={"name": "", "role": "user", "csrf_token": token(admin, "/admin/keys")})
    assert refused.status_code == 400 and "name is required" in refused.get_data(as_text=True)
    for balance in ("²", "9" * 20):  # a Unicode digit, and more than the balance column holds
        refused = admin.post("/admin/keys", data={"name": "rich", "role": "user", "plan": "basic", "balance": balance,
                                                  "csrf_token": token(admin, "/admin/keys")})
        assert refused.status_code == 400 and "balance must be a whole number" in refused.get_data(as_text=True)
    assert "rich" not in admin.get("/admin/keys").get_data(as_text=True)


def test_open_mode_needs_no_sign_in(settings, celery, redis, accounts):
    app = create_app(dataclasses.replace(settings, api_secret=""), celery=celery, redis=redis)
    client = app.test_client()
    assert client.get("/admin/").status_code == 200
    assert "open mode" in client.get("/admin/accounts").get_data(as_text=True)


def test_the_task_page_streams_progress_under_the_session_and_only_to_signed_in_admins(app, client):
    sign_in(client)
    task_id = imagine(client)
    finish(app, task_id, grid_buttons("s1"))
    page = client.get(f"/admin/task/{task_id}").get_data(as_text=True)
    assert f'data-stream-url="/admin/task/{task_id}/stream"' in page
    answer = client.get(f"/admin/task/{task_id}/stream")
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
    body = answer.get_data(as_text=True)
    assert "event: task" in body and '"status":"SUCCESS"' in body
    client.post("/admin/logout", data={"csrf_token": token(client, "/admin/")})
    assert client.get(f"/admin/task/{task_id}/stream").status_code == 302
