"""The Discord REST client against the fake Discord's real HTTP server."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.fakes.fake_discord import FakeDiscord, User
from workers.drivers.base import UpstreamError
from workers.drivers.discord_payloads import FALLBACK_COMMANDS, MIDJOURNEY_APP, new_nonce, option
from workers.drivers.discord_rest import DiscordRest, DiscordUrls


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord(job_seconds=0.2) as server:
        yield server


@pytest.fixture
def user(fake: FakeDiscord) -> User:
    return fake.add_user("token-rest")


def rest_for(fake: FakeDiscord, user: User, redis, sleeps: list[float] | None = None, token: str | None = None,
             account_id: str = "dc-1") -> DiscordRest:
    return DiscordRest(requests.Session(), DiscordUrls(api=fake.url), token or user.token, user.guild_id,
                       user.channel_id, "TestAgent/1.0", redis, account_id,
                       sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_an_interaction_sends_the_raw_token_and_the_accounts_user_agent_and_succeeds_on_204(fake, user, redis):
    seen: list[dict[str, str]] = []
    session = requests.Session()
    session.hooks["response"].append(lambda resp, *a, **k: seen.append(dict(resp.request.headers)))
    rest = DiscordRest(session, DiscordUrls(api=fake.url), user.token, user.guild_id, user.channel_id,
                       "TestAgent/1.0", redis, "dc-1")
    rest.slash_command(MIDJOURNEY_APP, "imagine", [option("prompt", "a cat --fast")], new_nonce())
    posted = [h for h in seen if h.get("Content-Type") == "application/json"]
    assert posted[-1]["Authorization"] == user.token and posted[-1]["User-Agent"] == "TestAgent/1.0"
    payload = fake.interactions[-1]
    assert payload["type"] == 2 and payload["application_id"] == MIDJOURNEY_APP
    assert payload["data"]["id"] == FALLBACK_COMMANDS[(MIDJOURNEY_APP, "imagine")].id
    assert payload["guild_id"] == user.guild_id and payload["channel_id"] == user.channel_id


def test_discords_error_message_becomes_the_fail_reason(fake, user, redis):
    rest = rest_for(fake, user, redis, token="not-a-token")
    with pytest.raises(UpstreamError, match="^401: Unauthorized$"):
        rest.interact({"type": 2, "nonce": "1"})


def test_a_429_is_obeyed_for_the_whole_account_then_the_call_is_retried(fake, user, redis):
    sleeps: list[float] = []
    rest = rest_for(fake, user, redis, sleeps)
    fake.rate_limit(2, 0.25)
    rest.slash_command(MIDJOURNEY_APP, "imagine", [option("prompt", "a cat")], new_nonce())
    assert sleeps and all(0 < s <= 0.25 for s in sleeps) and len(fake.interactions) == 1
    # A long pause seen by one worker holds every client of the same account back, through Redis.
    fake.rate_limit(1, 5.0)
    first: list[float] = []
    rest_for(fake, user, redis, first).slash_command(MIDJOURNEY_APP, "imagine", [option("prompt", "b")], new_nonce())
    assert first[-1] == 5.0
    other: list[float] = []
    rest_for(fake, user, redis, other).gate.wait()
    assert other and other[0] > 4.0
    untouched: list[float] = []
    rest_for(fake, user, redis, untouched, account_id="dc-2").gate.wait()
    assert untouched == []


def test_a_stale_command_version_refreshes_the_index_once_and_retries_once(fake, user, redis):
    rest = rest_for(fake, user, redis)
    rest.slash_command(MIDJOURNEY_APP, "imagine", [option("prompt", "first")], new_nonce())
    fake.redeploy()
    rest2 = rest_for(fake, user, redis)  # another process: the cached index is stale now
    rest2.slash_command(MIDJOURNEY_APP, "imagine", [option("prompt", "second")], new_nonce())
    assert fake.interactions[-1]["data"]["options"][0]["value"] == "second"
    assert fake.interactions[-1]["data"]["version"] == fake.versions[(MIDJOURNEY_APP, "imagine")]


def test_an_upload_goes_through_a_slot_and_a_pad_image_message_gives_a_cdn_url(fake, user, redis):
    rest = rest_for(fake, user, redis)
    uploaded = rest.upload("42-0.png", b"\x89PNG fake bytes", "image/png")
    assert uploaded.endswith("/42-0.png")
    url = rest.post_image_message("42-0.png", uploaded)
    assert url.startswith(fake.url) and "?ex=" in url
    assert rest.download(url) == b"\x89PNG fake bytes"
