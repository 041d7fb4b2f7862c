"""The accounts admin API (`/mj/account/*`) and `mjq accounts`: validation, secrets that go in and never out."""
from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import select

from app import create_app
from app.cli import main
from app.crypto import SecretBox, generate_key
from app.models import Account, Task, now_ms
from app.services.account_admin import account_secrets
from app.services.keys import create_key
from app.services.plans import DEFAULT_PLANS

UPSTREAM_SECRET = "upstream-key-7f3a9c"
DISCORD_TOKEN = "MTA5.discord-user-token.XYZ"
MJPROXY = {"name": "Upstream A", "driver": "mjproxy", "settings": {"baseUrl": "https://mj.example.com/",
                                                                     "secret": UPSTREAM_SECRET}}
DISCORD = {"id": "disc-1", "name": "Discord 1", "driver": "discord",
           "settings": {"guildId": "1123456789012345678", "channelId": "1123456789012345679",
                        "userToken": DISCORD_TOKEN, "userAgent": "Mozilla/5.0"}}


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, secret_key=generate_key())


def box_of(settings) -> SecretBox:
    return SecretBox.from_settings(settings)


def create(client, body: dict) -> dict:
    answer = client.post("/mj/account/create", json=body)
    assert answer.status_code == 200 and answer.get_json()["code"] == 1, answer.get_data(as_text=True)
    return answer.get_json()


def assert_no_secret(text: str) -> None:
    assert UPSTREAM_SECRET not in text and DISCORD_TOKEN not in text


def test_create_answers_the_account_json_without_its_secret(client):
    answer = create(client, MJPROXY)
    account = answer["result"]
    assert (answer["code"], answer["description"]) == (1, "Account created")
    assert account["id"].startswith("mjproxy-") and account["name"] == "Upstream A"
    assert account["settings"] == {"baseUrl": "https://mj.example.com"} and account["secretsSet"] == ["secret"]
    assert {k: account[k] for k in ("modes", "fastConcurrency", "relaxConcurrency", "queueSize", "weight", "remix",
                                    "botTypes", "timeoutMinutes", "enable", "disabledReason")} == {
        "modes": ["FAST", "TURBO", "RELAX"], "fastConcurrency": 3, "relaxConcurrency": 3, "queueSize": 10,
        "weight": 1, "remix": False, "botTypes": ["MID_JOURNEY", "NIJI_JOURNEY"], "timeoutMinutes": 5,
        "enable": True, "disabledReason": None}
    assert account["health"] == {"fast": {"inFlight": 0, "waiting": 0}, "relax": {"inFlight": 0, "waiting": 0}}


def test_a_client_given_id_and_every_field_are_kept(client):
    body = {**DISCORD, "modes": ["relax", "FAST"], "fastConcurrency": 12, "relaxConcurrency": 3, "queueSize": 50,
            "weight": 7, "remix": True, "botTypes": ["NIJI"], "timeoutMinutes": 10, "enable": False,
            "disabledReason": "warming up"}
    account = create(client, body)["result"]
    assert account["id"] == "disc-1" and account["secretsSet"] == ["userToken"]
    assert account["settings"] == {"guildId": "1123456789012345678", "channelId": "1123456789012345679",
                                   "userAgent": "Mozilla/5.0"}
    assert (account["modes"], account["botTypes"], account["fastConcurrency"], account["queueSize"]) == (
        ["FAST", "RELAX"], ["NIJI_JOURNEY"], 12, 50)
    assert (account["weight"], account["remix"], account["timeoutMinutes"]) == (7, True, 10)
    assert (account["enable"], account["disabledReason"]) == (False, "warming up")


def test_secrets_are_encrypted_in_the_database_and_decrypt_for_workers(client, session_factory, settings):
    create(client, MJPROXY)
    token_named_token = {k: v for k, v in DISCORD["settings"].items() if k != "userToken"} | {"token": DISCORD_TOKEN}
    create(client, {**DISCORD, "settings": token_named_token})
    with session_factory() as session:
        rows = {a.driver: a for a in session.scalars(select(Account).where(Account.driver != "simulator"))}
        for row in rows.values():
            assert_no_secret(json.dumps(row.settings) + (row.secrets or ""))
        assert account_secrets(rows["mjproxy"], box_of(settings)) == {"secret": UPSTREAM_SECRET}
        assert account_secrets(rows["discord"], box_of(settings)) == {"userToken": DISCORD_TOKEN}


def test_no_answer_ever_holds_a_secret(client):
    made = [create(client, MJPROXY)["result"]["id"], create(client, DISCORD)["result"]["id"]]
    answers = [client.get("/mj/account/list"), client.post("/mj/account/query", json={"pageNumber": 0}),
               client.put(f"/mj/account/{made[0]}/update", json={"settings": {"secret": "rotated-" + UPSTREAM_SECRET}}),
               client.put(f"/mj/account/{made[1]}/update", json={"weight": 2}),
               client.post(f"/mj/account/{made[1]}/disable", json={"reason": "banned"}),
               client.post(f"/mj/account/{made[1]}/enable")]
    answers += [client.get(f"/mj/account/{i}/fetch") for i in made]
    answers += [client.delete(f"/mj/account/{i}/delete") for i in made]
    for answer in answers:
        assert answer.status_code == 200
        assert_no_secret(answer.get_data(as_text=True))


def test_list_answers_every_account_ordered_by_id(client):
    create(client, DISCORD)
    answer = client.get("/mj/account/list").get_json()
    assert answer["code"] == 1 and [a["id"] for a in answer["result"]] == ["disc-1", "sim-1", "sim-2"]


def test_query_pages_the_accounts_as_the_plus_admin_ui_reads_them(client):
    create(client, DISCORD)
    first = client.post("/mj/account/query", json={"pageNumber": 0, "pageSize": 2}).get_json()
    last = client.post("/mj/account/query", json={"pageNumber": 1, "pageSize": 2}).get_json()
    assert [a["id"] for a in first["content"]] == ["disc-1", "sim-1"] and first["last"] is False
    assert [a["id"] for a in last["content"]] == ["sim-2"] and last["last"] is True
    assert (first["totalElements"], first["totalPages"]) == (3, 2)
    bad = client.post("/mj/account/query", json={"pageSize": 0}).get_json()
    assert bad["code"] == 4 and "pageSize" in bad["description"]


def test_fetch_answers_the_account(client):
    answer = client.get("/mj/account/sim-1/fetch").get_json()
    assert answer["code"] == 1 and answer["result"]["driver"] == "simulator"


@pytest.mark.parametrize("method, path", [
    ("GET", "/mj/account/nope/fetch"), ("PUT", "/mj/account/nope/update"), ("DELETE", "/mj/account/nope/delete"),
    ("POST", "/mj/account/nope/enable"), ("POST", "/mj/account/nope/disable"),
])
def test_an_unknown_account_answers_404_code_3(client, method, path):
    answer = client.open(path, method=method, json={"weight": 2} if method == "PUT" else None)
    assert answer.status_code == 404 and answer.get_json()["code"] == 3
    assert "account nope not found" in answer.get_json()["description"]


def test_update_changes_only_the_fields_given_and_keeps_secrets_it_was_not_sent(client, session_factory, settings):
    create(client, DISCORD)
    fetched = client.get("/mj/account/disc-1/fetch").get_json()["result"]
    answer = client.put("/mj/account/disc-1/update", json={**fetched, "name": "Renamed", "fastConcurrency": 12,
                                                            "settings": {"userAgent": None}}).get_json()
    account = answer["result"]
    assert (answer["code"], account["name"], account["fastConcurrency"], account["weight"]) == (1, "Renamed", 12, 1)
    assert "userAgent" not in account["settings"] and account["secretsSet"] == ["userToken"]
    with session_factory() as session:
        assert account_secrets(session.get(Account, "disc-1"), box_of(settings)) == {"userToken": DISCORD_TOKEN}


def test_update_replaces_a_secret_when_it_is_sent(client, session_factory, settings):
    account_id = create(client, MJPROXY)["result"]["id"]
    client.put(f"/mj/account/{account_id}/update", json={"settings": {"secret": "new-key"}})
    with session_factory() as session:
        assert account_secrets(session.get(Account, account_id), box_of(settings)) == {"secret": "new-key"}


def test_changing_the_driver_starts_its_settings_afresh(client):
    answer = client.put("/mj/account/sim-1/update", json={"driver": "mjproxy"}).get_json()
    assert answer["code"] == 4 and "settings.baseUrl is required for driver mjproxy" in answer["description"]
    moved = client.put("/mj/account/sim-1/update", json={"driver": "mjproxy", "settings": MJPROXY["settings"]})
    assert moved.get_json()["result"]["settings"] == {"baseUrl": "https://mj.example.com"}


def test_disable_records_the_reason_and_enable_clears_it(client):
    answer = client.post("/mj/account/sim-1/disable", json={"reason": "captcha"}).get_json()
    assert (answer["code"], answer["result"]["enable"], answer["result"]["disabledReason"]) == (1, False, "captcha")
    bare = client.post("/mj/account/sim-2/disable").get_json()["result"]
    assert (bare["enable"], bare["disabledReason"]) == (False, None)
    again = client.post("/mj/account/sim-1/enable").get_json()["result"]
    assert (again["enable"], again["disabledReason"]) == (True, None)


def test_a_disabled_account_takes_no_new_job(client):
    for account_id in ("sim-1", "sim-2"):
        client.post(f"/mj/account/{account_id}/disable", json={"reason": "maintenance"})
    answer = client.post("/mj/submit/imagine", json={"prompt": "a fox"}).get_json()
    assert answer["code"] == 3


def test_a_waiting_job_of_an_account_disabled_meanwhile_fails_saying_so(client, session_factory, redis, images):
    from tests.unit.test_executor import make_executor

    answer = client.post("/mj/submit/imagine", json={"prompt": "a fox"}).get_json()
    account_id = answer["properties"]["discordInstanceId"]
    client.post(f"/mj/account/{account_id}/disable", json={"reason": "banned"})
    make_executor(session_factory, redis, images).execute(int(answer["result"]))
    task = client.get(f"/mj/task/{answer['result']}/fetch").get_json()
    assert (task["status"], task["failReason"]) == ("FAILURE", f"account {account_id} is not available: banned")


def add_task(session_factory, account_id: str, status: str) -> None:
    now = now_ms()
    with session_factory() as session:
        session.add(Task(id=now * 1_000_000 + len(status), action="IMAGINE", status=status, prompt="p",
                         submit_time=now, mode="FAST", queue="mj.fast", account_id=account_id, updated_at=now,
                         properties={}, buttons=[], inputs={}))
        session.commit()


def test_delete_is_refused_while_the_account_has_open_tasks(client, session_factory):
    add_task(session_factory, "sim-1", "IN_PROGRESS")
    add_task(session_factory, "sim-1", "MODAL")
    add_task(session_factory, "sim-1", "SUCCESS")
    answer = client.delete("/mj/account/sim-1/delete").get_json()
    assert answer["code"] == 4 and "has 2 open tasks" in answer["description"]
    assert client.get("/mj/account/sim-1/fetch").get_json()["code"] == 1


def test_delete_removes_an_account_whose_tasks_are_finished(client, session_factory):
    add_task(session_factory, "sim-1", "SUCCESS")
    answer = client.delete("/mj/account/sim-1/delete").get_json()
    assert (answer["code"], answer["result"]["id"]) == (1, "sim-1")
    assert client.get("/mj/account/sim-1/fetch").status_code == 404


@pytest.mark.parametrize("patch, field", [
    ({"name": None}, "name"), ({"name": ""}, "name"), ({"name": "x" * 129}, "name"),
    ({"driver": "midjourney"}, "driver"), ({"driver": None}, "driver"),
    ({"modes": []}, "modes"), ({"modes": ["SLOW"]}, "modes"), ({"modes": "FAST"}, "modes"),
    ({"fastConcurrency": 0}, "fastConcurrency"), ({"fastConcurrency": 101}, "fastConcurrency"),
    ({"fastConcurrency": "3"}, "fastConcurrency"), ({"fastConcurrency": True}, "fastConcurrency"),
    ({"relaxConcurrency": -1}, "relaxConcurrency"), ({"relaxConcurrency": 0}, "relaxConcurrency"),
    ({"queueSize": 10_001}, "queueSize"), ({"weight": -1}, "weight"), ({"weight": 1001}, "weight"),
    ({"remix": "yes"}, "remix"), ({"enable": 1}, "enable"), ({"botTypes": ["DALL_E"]}, "botTypes"),
    ({"botTypes": []}, "botTypes"), ({"timeoutMinutes": 0}, "timeoutMinutes"),
    ({"timeoutMinutes": 121}, "timeoutMinutes"), ({"id": "has space"}, "id"), ({"id": "x" * 65}, "id"),
    ({"disabledReason": 5}, "disabledReason"), ({"fastConcurency": 3}, "fastConcurency"),
    ({"settings": []}, "settings"),
    ({"settings": {"secret": "s"}}, "settings.baseUrl"),
    ({"settings": {"baseUrl": "ftp://x"}}, "settings.baseUrl"),
    ({"settings": {"baseUrl": "https://"}}, "settings.baseUrl"),
    ({"settings": {"baseUrl": "https://x", "secret": ""}}, "settings.secret"),
    ({"settings": {"baseUrl": "https://x", "secret": 5}}, "settings.secret"),
    ({"settings": {"baseUrl": "https://x", "guildId": "1"}}, "settings.guildId"),
])
def test_each_invalid_field_is_refused_with_code_4_naming_it(client, patch, field):
    body = {k: v for k, v in {**MJPROXY, **patch}.items() if v is not None}  # None: the field is left out
    answer = client.post("/mj/account/create", json=body)
    assert answer.status_code == 200 and answer.get_json()["code"] == 4, answer.get_data(as_text=True)
    assert field in answer.get_json()["description"]


@pytest.mark.parametrize("settings_patch, field", [
    ({"guildId": None}, "settings.guildId"), ({"guildId": "12ab"}, "settings.guildId"),
    ({"channelId": None}, "settings.channelId"), ({"channelId": "#general"}, "settings.channelId"),
    ({"userToken": None}, "settings.userToken"), ({"userToken": "  "}, "settings.userToken"),
    ({"userAgent": 7}, "settings.userAgent"), ({"token": "other"}, "settings.token"),
])
def test_discord_settings_are_checked_naming_the_setting(client, settings_patch, field):
    merged = {k: v for k, v in {**DISCORD["settings"], **settings_patch}.items() if v is not None}
    answer = client.post("/mj/account/create", json={**DISCORD, "settings": merged}).get_json()
    assert answer["code"] == 4 and field in answer["description"]
    assert_no_secret(answer["description"])


def test_a_simulator_takes_no_settings(client):
    answer = client.post("/mj/account/create", json={"name": "s", "driver": "simulator",
                                                      "settings": {"secret": "x"}}).get_json()
    assert answer["code"] == 4 and "settings.secret is not a setting of driver simulator" in answer["description"]


def test_a_taken_id_is_refused(client):
    answer = client.post("/mj/account/create", json={"id": "sim-1", "name": "dup", "driver": "simulator"}).get_json()
    assert answer["code"] == 4 and "id sim-1 is taken" in answer["description"]


def test_update_refuses_invalid_fields_and_leaves_the_account_unchanged(client):
    answer = client.put("/mj/account/sim-1/update", json={"weight": 5, "queueSize": -1}).get_json()
    assert answer["code"] == 4 and "queueSize" in answer["description"]
    assert client.get("/mj/account/sim-1/fetch").get_json()["result"]["weight"] == 1
    renamed = client.put("/mj/account/sim-1/update", json={"id": "sim-9"}).get_json()
    assert renamed["code"] == 4 and "id cannot change" in renamed["description"]


def test_a_body_that_is_not_a_json_object_is_a_400(client):
    answer = client.post("/mj/account/create", data="[1]", content_type="application/json")
    assert answer.status_code == 400 and answer.get_json()["code"] == 4


def test_storing_a_secret_without_mjq_secret_key_is_refused_with_advice(settings, celery, redis, accounts):
    app = create_app(dataclasses.replace(settings, secret_key=""), celery=celery, redis=redis)
    client = app.test_client()
    answer = client.post("/mj/account/create", json=MJPROXY).get_json()
    assert answer["code"] == 9 and "MJQ_SECRET_KEY is not set" in answer["description"]
    assert client.post("/mj/account/create", json={"name": "s", "driver": "simulator"}).get_json()["code"] == 1
    assert client.get("/mj/account/list").get_json()["code"] == 1


def test_a_malformed_mjq_secret_key_stops_the_app_at_start(settings, celery, redis):
    from config import ConfigError

    with pytest.raises(ConfigError, match="MJQ_SECRET_KEY"):
        create_app(dataclasses.replace(settings, secret_key="not-a-key"), celery=celery, redis=redis)


@pytest.fixture
def authed(settings, celery, redis, accounts, session_factory):
    """An app that needs credentials, with a user key and an admin key."""
    app = create_app(dataclasses.replace(settings, api_secret="S"), celery=celery, redis=redis)
    with session_factory() as session:
        _row, user_key = create_key(session, "user", "basic", "user", DEFAULT_PLANS)
        _row, admin_key = create_key(session, "ops", "basic", "admin", DEFAULT_PLANS)
    return app.test_client(), user_key, admin_key


@pytest.mark.parametrize("method, path", [
    ("POST", "/mj/account/create"), ("GET", "/mj/account/list"), ("POST", "/mj/account/query"),
    ("GET", "/mj/account/sim-1/fetch"), ("PUT", "/mj/account/sim-1/update"), ("DELETE", "/mj/account/sim-1/delete"),
    ("POST", "/mj/account/sim-1/enable"), ("POST", "/mj/account/sim-1/disable"),
])
def test_a_user_key_gets_403_on_every_account_endpoint(authed, method, path):
    client, user_key, _admin = authed
    answer = client.open(path, method=method, json={"name": "x", "driver": "simulator"},
                         headers={"mj-api-secret": user_key})
    assert answer.status_code == 403
    assert client.open(path, method=method).status_code == 401  # and no credentials at all: 401


def test_admin_keys_and_the_bootstrap_secret_manage_accounts(authed):
    client, _user, admin_key = authed
    assert client.get("/mj/account/list", headers={"mj-api-secret": "S"}).get_json()["code"] == 1
    made = client.post("/mj/account/create", json={"name": "x", "driver": "simulator"},
                       headers={"Authorization": f"Bearer {admin_key}"}).get_json()
    assert made["code"] == 1


# --- mjq accounts ---------------------------------------------------------------------------------------------

@pytest.fixture
def cli_env(monkeypatch, settings, accounts):
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MJQ_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("MJQ_DATA_DIR", settings.data_dir)
    return settings


def test_the_cli_creates_shows_updates_and_lists_accounts(cli_env, capsys, session_factory):
    assert main(["accounts", "create", "--id", "up-1", "--name", "Upstream", "--driver", "mjproxy",
                 "--setting", "baseUrl=https://mj.example.com", "--setting", f"secret={UPSTREAM_SECRET}",
                 "--modes", "FAST,RELAX", "--fast-concurrency", "12", "--relax-concurrency", "3",
                 "--queue-size", "20", "--weight", "2", "--remix", "--bot-types", "MID_JOURNEY",
                 "--timeout-minutes", "9"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert (created["id"], created["modes"], created["fastConcurrency"], created["remix"]) == (
        "up-1", ["FAST", "RELAX"], 12, True)
    assert (created["queueSize"], created["weight"], created["botTypes"], created["timeoutMinutes"]) == (
        20, 2, ["MID_JOURNEY"], 9)
    assert main(["accounts", "update", "up-1", "--weight", "5", "--no-remix"]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert (updated["weight"], updated["remix"], updated["secretsSet"]) == (5, False, ["secret"])
    assert main(["accounts", "show", "up-1"]) == 0 and json.loads(capsys.readouterr().out)["name"] == "Upstream"
    assert main(["accounts", "list"]) == 0
    out = capsys.readouterr().out
    assert "up-1" in out and "sim-1" in out and "3 accounts" in out
    assert UPSTREAM_SECRET not in out
    with session_factory() as session:
        assert account_secrets(session.get(Account, "up-1"), box_of(cli_env)) == {"secret": UPSTREAM_SECRET}


def test_the_cli_reads_a_secret_from_stdin(cli_env, capsys, monkeypatch, session_factory):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(DISCORD_TOKEN + "\n"))
    assert main(["accounts", "create", "--id", "d", "--name", "D", "--driver", "discord", "--setting",
                 "guildId=1", "--setting", "channelId=2", "--setting", "token=-"]) == 0
    assert_no_secret(capsys.readouterr().out)
    with session_factory() as session:
        assert account_secrets(session.get(Account, "d"), box_of(cli_env)) == {"userToken": DISCORD_TOKEN}


def test_the_cli_disables_enables_and_deletes(cli_env, capsys):
    assert main(["accounts", "disable", "sim-1", "--reason", "banned"]) == 0
    assert json.loads(capsys.readouterr().out)["disabledReason"] == "banned"
    assert main(["accounts", "enable", "sim-1"]) == 0 and json.loads(capsys.readouterr().out)["enable"] is True
    assert main(["accounts", "delete", "sim-2"]) == 0 and "account sim-2 deleted" in capsys.readouterr().out
    assert main(["accounts", "show", "sim-2"]) == 2 and "account sim-2 not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["create", "--name", "x", "--driver", "mjproxy", "--fast-concurrency", "lots", "--setting", "baseUrl=http://a"],
     "fastConcurrency must be a whole number 1..100, got 'lots'"),
    (["create", "--name", "x", "--driver", "ftp"], "driver must be one of simulator, mjproxy, discord"),
    (["create", "--name", "x", "--driver", "mjproxy"], "settings.baseUrl is required for driver mjproxy"),
    (["create", "--name", "x", "--driver", "simulator", "--setting", "novalue"],
     "--setting 'novalue' must be KEY=VALUE"),
    (["create", "--name", "x", "--driver", "simulator", "--modes", "FAST,SLOW"], "modes must be a non-empty list"),
    (["update", "sim-1", "--queue-size", "-4"], "queueSize must be a whole number 0..10000"),
])
def test_the_cli_refuses_bad_input_with_exit_code_2_and_the_message(cli_env, capsys, argv, message):
    assert main(["accounts", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_cli_without_mjq_secret_key_refuses_to_store_a_secret(cli_env, capsys, monkeypatch):
    monkeypatch.delenv("MJQ_SECRET_KEY")
    assert main(["accounts", "create", "--name", "x", "--driver", "mjproxy", "--setting", "baseUrl=http://a",
                 "--setting", "secret=s"]) == 2
    assert "MJQ_SECRET_KEY is not set" in capsys.readouterr().err
