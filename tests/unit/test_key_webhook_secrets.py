"""Per-API-key webhook secrets: made with the key, read and rotated by it, signing its tasks' deliveries."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import WebhookVerificationError

from app.crypto import SecretBox, generate_key
from app.models import now_ms
from app.services.keys import create_key
from app.services.plans import DEFAULT_PLANS
from tests.fakes.webhooks import SECRET, Receiver, Reply, deliveries, make_deliverer, verify
from tests.unit.test_executor import FakeClock
from tests.unit.test_tenancy import ADMIN, auth, new_key
from tests.unit.test_webhook_api import deliver_due, run_job
from workers.webhook_signing import SecretSource


@pytest.fixture
def settings(settings):
    """Tenancy on (the bootstrap secret is S), the global webhook secret configured as deliveries sign it."""
    return replace(settings, api_secret="S", webhook_secret=SECRET)


def own_secret(client, headers) -> str:
    answer = client.get("/mj/webhook-secret", headers=headers).get_json()
    assert answer["code"] == 1, answer
    return answer["result"]["webhookSecret"]


def deliverer(session_factory, clock, box: SecretBox | None = None):
    """A webhook worker's Deliverer with the SecretBox it was given (none: no MJQ_SECRET_KEY), not the test
    process's environment."""
    made = make_deliverer(session_factory, clock)
    made.secrets = SecretSource(session_factory, SECRET, box or SecretBox(None))
    return made


def keyed_delivery(client, session_factory, redis, images, key, rx, clock) -> list:
    """Run one hooked job as `key` and deliver its events to `rx`; returns what `rx` received for it."""
    run_job(client, session_factory, redis, images, rx.url(f"/{key['id']}"), clock, auth(key))
    deliver_due(deliverer(session_factory, clock))
    return [r for r in rx.received if r.path == f"/{key['id']}"]


def status_of(request) -> str:
    return json.loads(request.body)["status"]


def test_a_new_key_is_answered_with_its_own_webhook_secret_which_no_list_shows(client, session_factory):
    key = new_key(client)
    assert key["webhookSecret"].startswith("whsec_") and key["webhookSecret"] != SECRET
    assert set(key) >= {"id", "key", "name", "plan", "role", "webhookSecret"}
    assert own_secret(client, auth(key)) == key["webhookSecret"]
    listed = client.get("/mj/admin/keys", headers=ADMIN).get_data(as_text=True)
    assert key["webhookSecret"] not in listed and key["webhookSecret"][6:] not in listed


def test_two_keys_deliveries_verify_each_with_its_own_secret_and_never_with_the_global_one(
        client, session_factory, redis, images):
    clock = FakeClock(now_ms())  # near real time: the library refuses timestamps 5 min off
    a, b = new_key(client, "premium"), new_key(client, "premium")
    with Receiver() as rx:
        got_a = keyed_delivery(client, session_factory, redis, images, a, rx, clock)
        got_b = keyed_delivery(client, session_factory, redis, images, b, rx, clock)
    assert [verify(a["webhookSecret"], r)["status"] for r in got_a][-1] == "SUCCESS"
    assert [verify(b["webhookSecret"], r)["status"] for r in got_b][-1] == "SUCCESS"
    for secret, request in ((SECRET, got_a[0]), (SECRET, got_b[0]), (b["webhookSecret"], got_a[0]),
                            (a["webhookSecret"], got_b[0])):
        with pytest.raises(WebhookVerificationError):
            verify(secret, request)


def test_tasks_of_the_bootstrap_secret_are_signed_with_the_global_secret_which_it_reads(
        client, session_factory, redis, images):
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        run_job(client, session_factory, redis, images, rx.url(), clock, ADMIN)
        deliver_due(make_deliverer(session_factory, clock))
    assert verify(SECRET, rx.received[-1])["status"] == "SUCCESS"
    answer = client.get("/mj/webhook-secret", headers=ADMIN).get_json()["result"]
    assert answer == {"keyId": None, "scope": "global", "webhookSecret": SECRET}
    refused = client.post("/mj/webhook-secret", headers=ADMIN).get_json()
    assert refused["code"] == 4 and "MJQ_WEBHOOK_SECRET" in refused["description"]


def test_a_generated_global_secret_is_rotated_by_the_bootstrap_caller(settings, celery, redis, accounts,
                                                                      session_factory):
    from app import create_app

    client = create_app(replace(settings, webhook_secret=""), celery=celery, redis=redis).test_client()
    before = own_secret(client, ADMIN)
    source = SecretSource(session_factory)
    assert source.key_for(None) == SecretSource(session_factory, before).key_for(None)
    rotated = client.post("/mj/webhook-secret", headers=ADMIN).get_json()["result"]["webhookSecret"]
    assert rotated != before and own_secret(client, ADMIN) == rotated
    assert source.key_for(None) == SecretSource(session_factory, rotated).key_for(None)


def test_after_a_rotation_the_retry_of_an_event_is_signed_with_the_new_secret_and_keeps_its_id(
        client, session_factory, redis, images):
    clock = FakeClock(now_ms())
    key = new_key(client)
    successes = []

    def first_success_fails(i, request) -> Reply:
        successes.extend([request] if status_of(request) == "SUCCESS" else [])
        return Reply(500) if len(successes) == 1 and successes[0] is request else Reply(204)

    with Receiver(first_success_fails) as rx:
        run_job(client, session_factory, redis, images, rx.url(), clock, auth(key))
        worker = deliverer(session_factory, clock)
        deliver_due(worker)  # SUCCESS answers 500: a retry in about 5 s
        rotated = client.post("/mj/webhook-secret", headers=auth(key)).get_json()
        assert rotated["code"] == 1 and rotated["result"]["scope"] == "key"
        new = rotated["result"]["webhookSecret"]
        clock.now += 10_000
        deliver_due(worker)
    failed, retry = successes
    assert own_secret(client, auth(key)) == new != key["webhookSecret"]
    assert retry.headers["webhook-id"] == failed.headers["webhook-id"]
    assert verify(key["webhookSecret"], failed) and verify(new, retry)
    with pytest.raises(WebhookVerificationError):
        verify(key["webhookSecret"], retry)


def test_with_mjq_secret_key_a_keys_secret_is_stored_encrypted_and_signs_only_where_that_key_is(
        settings, celery, redis, accounts, session_factory, images):
    from app import create_app

    fernet_key = generate_key()
    client = create_app(replace(settings, secret_key=fernet_key), celery=celery, redis=redis).test_client()
    key = new_key(client)
    with session_factory() as session:
        dump = " ".join(str(v) for row in session.execute(text("SELECT * FROM webhook_secrets")) for v in row)
    assert key["webhookSecret"][6:] not in dump and key["id"] in dump
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        run_job(client, session_factory, redis, images, rx.url(), clock, auth(key))
        [first, *_] = deliveries(session_factory)
        assert deliverer(session_factory, clock).attempt(first.id) == "pending"  # a worker without the key
        assert rx.received == []
        assert deliveries(session_factory)[0].last_error.startswith("cannot sign: MJQ_SECRET_KEY is not set")
        clock.now += 10_000
        deliver_due(deliverer(session_factory, clock, SecretBox.from_key(fernet_key)))
    assert verify(key["webhookSecret"], rx.received[-1])["status"] == "SUCCESS"


def test_a_key_made_without_a_secret_gets_one_on_first_use_that_deliveries_and_the_key_agree_on(
        client, session_factory, redis, images):
    with session_factory() as session:
        _row, api_key = create_key(session, "older", "basic", "user", DEFAULT_PLANS)  # no box: no secret yet
    key = {"key": api_key}
    clock = FakeClock(now_ms())
    with Receiver() as rx:
        run_job(client, session_factory, redis, images, rx.url(), clock, auth(key))
        deliver_due(deliverer(session_factory, clock))  # the first delivery makes the secret
    secret = own_secret(client, auth(key))
    assert verify(secret, rx.received[-1])["status"] == "SUCCESS"


def test_mjq_keys_create_prints_the_webhook_secret_the_key_reads(client, monkeypatch, capsys, settings):
    from app.cli import main

    monkeypatch.setenv("DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("MJQ_DATA_DIR", settings.data_dir)
    assert main(["keys", "create", "--name", "cli"]) == 0
    lines = capsys.readouterr().out.splitlines()
    [api_key] = [line.removeprefix("key ") for line in lines if line.startswith("key ")]
    [secret] = [line.removeprefix("webhook secret ") for line in lines if line.startswith("webhook secret ")]
    assert secret.startswith("whsec_") and own_secret(client, {"mj-api-secret": api_key}) == secret
