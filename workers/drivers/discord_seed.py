"""A Discord job's seed, asked of Midjourney in the account's DM channel (§4.11).

`/show <job hash>` in the DM with the bot reposts the job; a ✉️ reaction on that message
makes the bot DM `**Job ID**: <hash>` … `**seed** <digits>`. The events arrive through the
account's stream like every other (the gateway publishes the bots' DMs). Midjourney does
not give the seed otherwise, so the API asks once per task and keeps the answer.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
from redis import Redis

from workers.drivers import discord_parse as dp
from workers.drivers.base import UpstreamError
from workers.drivers.discord_events import EventStream
from workers.drivers.discord_payloads import app_for, new_nonce, option
from workers.drivers.discord_rest import DiscordRest, DiscordUrls

#: Longest wait for each of the bot's two answers (the reposted job, then the DM), seconds.
SEED_WAIT_SECONDS = 60.0
ENVELOPE = "✉️"
#: One XREAD's block in the web process, milliseconds (its Redis client times out after 2 s).
SEED_READ_BLOCK_MS = 500


def fetch_seed(rest: DiscordRest, stream: EventStream, job_hash: str, bot_type: str = "MID_JOURNEY",
               wait_seconds: float = SEED_WAIT_SECONDS, clock: Callable[[], float] = time.monotonic) -> str:
    """The seed of job `job_hash`. Raises UpstreamError when the bot does not answer in time."""
    app = app_for(bot_type)  # a niji job is shown by the niji bot, in the DM with that bot
    dm_channel = rest.open_dm(app)
    since = stream.last_id()
    nonce = new_nonce()
    rest.slash_command(app, "show", [option("job_id", job_hash)], nonce, channel_id=dm_channel,
                       in_guild=False)
    shown: dict[str, Any] | None = None
    deadline = [clock() + wait_seconds]  # moved on once the job is shown: each answer gets the full wait
    for event in stream.follow(since, until=lambda: clock() > deadline[0], block_ms=SEED_READ_BLOCK_MS):
        if event.type != "MESSAGE_CREATE" or str(event.data.get("channel_id")) != dm_channel:
            continue
        data = event.data
        if shown is None:
            reading = dp.read_message(data)
            if reading.state == dp.FAILED and str(data.get("nonce") or "") == nonce:
                raise UpstreamError(reading.fail_reason or "/show failed")
            if str(data.get("nonce") or "") == nonce or reading.job_hash == job_hash:
                shown = data
                rest.react(dm_channel, str(data["id"]), ENVELOPE)
                deadline[0] = clock() + wait_seconds
            continue
        found = dp.parse_seed(str(data.get("content") or ""))
        if found is not None and found[0] == job_hash.lower():
            return found[1]
    raise UpstreamError(f"Midjourney did not send the seed of job {job_hash} within {wait_seconds:.0f} s")


def seed_lookup(redis: Redis, urls: DiscordUrls, secrets: Callable[[Any], dict[str, str]],
                http: requests.Session | None = None) -> Callable[[Any, Any], str | None]:
    """A lookup for the image-seed endpoint: (task, account) -> seed for tasks of discord accounts, else None."""
    session = http or requests.Session()

    def lookup(task: Any, account: Any) -> str | None:
        props = task.properties or {}
        if account is None or account.driver != "discord" or not props.get("messageHash"):
            return None
        settings = {**(account.settings or {}), **secrets(account)}
        rest = DiscordRest(session, urls, str(settings.get("userToken") or ""), str(settings.get("guildId") or ""),
                           str(settings.get("channelId") or ""), str(settings.get("userAgent") or ""), redis,
                           account.id)
        return fetch_seed(rest, EventStream(redis, account.id), str(props["messageHash"]), task.bot_type)

    return lookup


def seed_lookup_from_settings(settings: Any, redis: Redis) -> Callable[[Any, Any], str | None]:
    """`seed_lookup` with Discord's URLs and the secret key from `settings` (what the API process uses)."""
    from app.crypto import SecretBox
    from app.services.account_admin import account_secrets

    box = SecretBox.from_settings(settings)
    urls = DiscordUrls(api=settings.discord_api_url, gateway=settings.discord_gateway_url,
                       cdn=settings.discord_cdn_url, upload=settings.discord_upload_url,
                       inpaint=settings.discord_inpaint_url)
    return seed_lookup(redis, urls, lambda account: account_secrets(account, box))
