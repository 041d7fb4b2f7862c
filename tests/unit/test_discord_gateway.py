"""The gateway: zlib-stream sessions, resume, invalid session, heartbeat ACKs, fatal closes, ownership leases."""
from __future__ import annotations

import time

import fakeredis
import pytest

from app import protocol
from app.models import Account, Task
from app.services.account_admin import create_account
from tests.processes import wait_for
from tests.unit import discord_harness
from tests.unit.conftest import drain
from workers.drivers.discord_events import EventStream
from workers.gateway.connection import identify_payload
from workers.gateway.ownership import Ownership

harness = discord_harness.harness


def events_of(redis, kind: str) -> list[dict]:
    return [e.data for e in EventStream(redis, "dc-1").read("0-0", block_ms=10, count=10_000) if e.type == kind]


def test_identify_is_the_web_clients_payload_with_the_browser_parsed_from_the_user_agent():
    ua = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
          "Safari/537.36")
    d = identify_payload("tok", ua)
    assert d["token"] == "tok" and d["capabilities"] == 16381 and d["compress"] is False
    assert d["properties"]["browser"] == "Chrome" and d["properties"]["browser_version"] == "124.0.0.0"
    assert d["properties"]["os"] == "Windows" and d["properties"]["browser_user_agent"] == ua
    assert d["properties"]["client_build_number"] == 222963 and d["presence"]["status"] == "online"


def test_zlib_stream_events_of_the_accounts_channel_reach_the_stream_and_others_do_not(harness, redis):
    user = harness.user
    harness.fake.dispatch(user, "MESSAGE_CREATE", {"id": "1", "channel_id": user.channel_id, "content": "mine",
                                                   "author": {"id": "5"}})
    harness.fake.dispatch(user, "MESSAGE_CREATE", {"id": "2", "channel_id": "999", "content": "elsewhere",
                                                   "author": {"id": "5"}})
    harness.fake.dispatch(user, "TYPING_START", {"channel_id": user.channel_id})
    wait_for(lambda: events_of(redis, "MESSAGE_CREATE"), 5, "the event in the stream")
    assert [m["content"] for m in events_of(redis, "MESSAGE_CREATE")] == ["mine"]
    assert events_of(redis, "TYPING_START") == []


def test_a_reconnect_request_resumes_and_replays_what_was_missed(harness, redis):
    user = harness.user
    harness.fake.close(user.token, 4000, "unknown error")  # resumable
    harness.fake.dispatch(user, "MESSAGE_CREATE", {"id": "7", "channel_id": user.channel_id, "content": "missed"})
    wait_for(lambda: harness.fake.resumes >= 1, 10, "a RESUME")
    wait_for(lambda: [m for m in events_of(redis, "MESSAGE_CREATE") if m["content"] == "missed"], 5, "the replay")
    harness.fake.reconnect(user.token)  # op 7
    wait_for(lambda: harness.fake.resumes >= 2, 10, "a second RESUME")
    assert harness.fake.identifies == 1


def test_an_invalid_session_identifies_again(harness):
    harness.fake.invalidate(harness.user.token)
    wait_for(lambda: harness.fake.identifies == 2 and harness.fake.connected(harness.user.token), 10, "a new IDENTIFY")


def test_a_missed_heartbeat_ack_ends_the_session_and_it_is_resumed(harness):
    harness.fake.ack_heartbeats = False
    wait_for(lambda: harness.fake.resumes >= 1, 15, "a RESUME after the missed ACK")
    harness.fake.ack_heartbeats = True


def test_a_4004_close_disables_the_account_and_moves_its_waiting_job_to_another_account(harness, celery):
    other = harness.fake.add_user("token-2")  # a live token: the gateway connects dc-2 once it is enabled
    with harness.session_factory() as session:
        create_account(session, {"id": "dc-2", "name": "Discord 2", "driver": "discord", "enable": False, "settings": {
            "guildId": other.guild_id, "channelId": other.channel_id, "userToken": other.token}}, harness.box)
    waiting = harness.submit("/submit/imagine", {"prompt": "a waiting fox"})
    follow_up_parent = harness.run(harness.submit("/submit/imagine", {"prompt": "a parent fox"}))
    pinned = harness.click(follow_up_parent, "U1")
    with harness.session_factory() as session:
        for other in session.query(Account).filter(Account.id != "dc-1"):
            other.enable = other.id == "dc-2"  # the only other account: the simulator ones step aside
        session.commit()
    drain(celery, "mj.fast")
    harness.fake.close(harness.user.token, 4004, "Authentication failed")

    def disabled() -> Account | None:
        with harness.session_factory() as session:
            account = session.get(Account, "dc-1")
            return account if account is not None and not account.enable else None

    account = wait_for(disabled, 10, "dc-1 to be disabled")
    assert account.disabled_reason == "Discord gateway closed with 4004: Authentication failed"  # type: ignore[union-attr]

    def evacuated() -> tuple[Task, Task] | None:
        with harness.session_factory() as session:
            moved, failed = session.get(Task, waiting), session.get(Task, pinned)
            assert moved is not None and failed is not None
            return (moved, failed) if moved.account_id != "dc-1" and failed.status != protocol.NOT_START else None

    moved, failed = wait_for(evacuated, 10, "the jobs of dc-1 to move or fail")  # type: ignore[misc]
    assert moved.account_id == "dc-2" and moved.status == protocol.NOT_START and moved.attempt == 1, moved.fail_reason
    assert moved.properties["discordInstanceId"] == "dc-2"
    assert failed.status == protocol.FAILURE and "4004" in (failed.fail_reason or "")
    assert [m["args"][0] for m in drain(celery, "mj.fast")] == [str(waiting)]
    # The server sees the socket go once the close handshake ends; after that the gateway must not
    # come back with the revoked token (five of its 0.2 s polls later it is still gone).
    wait_for(lambda: not harness.fake.connected(harness.user.token), 5, "dc-1's socket to close")
    time.sleep(1.0)
    assert not harness.fake.connected(harness.user.token)


def test_one_process_holds_an_account_and_a_stale_holder_can_neither_renew_nor_publish():
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    first, second = Ownership(redis, "host/1", ttl_ms=1000), Ownership(redis, "host/2", ttl_ms=1000)
    lease = first.acquire("dc-1")
    assert lease is not None and second.acquire("dc-1") is None
    assert first.renew(lease)
    redis.delete("mjq:discord:dc-1:owner")  # the TTL ran out while host/1 was paused
    taken = second.acquire("dc-1")
    assert taken is not None and taken.token > lease.token
    assert not first.renew(lease)
    stream = EventStream(redis, "dc-1")
    assert stream.append("MESSAGE_CREATE", {"id": "1"}, holder=lease.value) is None
    assert stream.append("MESSAGE_CREATE", {"id": "2"}, holder=taken.value) is not None
    assert [e.data["id"] for e in stream.read("0-0", block_ms=10)] == ["2"]
    second.release(taken)
    assert first.acquire("dc-1") is not None


def _enabled(harness) -> Account:
    with harness.session_factory() as session:
        account = session.get(Account, "dc-1")
        assert account is not None
        return account


@pytest.mark.parametrize("code", [4000, 4001, 4002, 4003, 4005, 4007, 4008, 4009])
def test_a_close_discord_lets_clients_reconnect_from_keeps_the_account_and_connects_again(harness, code):
    fake, token = harness.fake, harness.user.token
    fake.close(token, code, "reconnect, please")
    # 4007 (invalid seq) and 4009 (session timed out) need a new session; the others resume the old one.
    if code in (4007, 4009):
        wait_for(lambda: fake.identifies == 2 and fake.connected(token), 10, "a new IDENTIFY")
        assert fake.resumes == 0
    else:
        wait_for(lambda: fake.resumes == 1 and fake.connected(token), 10, "a RESUME")
        assert fake.identifies == 1
    account = _enabled(harness)
    assert account.enable and account.disabled_reason is None


@pytest.mark.parametrize(("code", "reason"), [(4010, "Invalid shard"), (4011, "Sharding required"),
                                              (4012, "Invalid API version"), (4013, "Invalid intent(s)"),
                                              (4014, "Disallowed intent(s)")])
def test_a_close_discord_documents_as_final_disables_the_account_with_the_code_and_reason(harness, code, reason):
    harness.fake.close(harness.user.token, code, reason)
    wait_for(lambda: not _enabled(harness).enable, 10, "dc-1 to be disabled")
    assert _enabled(harness).disabled_reason == f"Discord gateway closed with {code}: {reason}"
    wait_for(lambda: not harness.fake.connected(harness.user.token), 5, "dc-1's socket to close")
    assert harness.fake.identifies == 1 and harness.fake.resumes == 0
