"""A whole mjq stack on Discord accounts only, against the fake Discord (tests/fakes/fake_discord.py).

Its own PostgreSQL database and Redis database number (the session's shared stack seeds
simulator accounts and runs its own workers on the shared queues), a gunicorn web process,
fast and normal Celery workers, gateway processes (`python -m workers.gateway`), and
discord accounts created through the accounts admin API with MJQ_SECRET_KEY set.
"""
from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib
import requests
from cryptography.fernet import Fernet

from tests.databases import claimed_redis, fresh_database
from tests.fakes.fake_discord import FakeDiscord, User
from tests.processes import Process, celery_worker, free_port, gunicorn, wait_for

SECRET = "S"


@dataclass
class DiscordStack:
    fake: FakeDiscord
    env: dict[str, str]
    log_dir: Path
    base: str
    redis: redis_lib.Redis
    users: dict[str, User] = field(default_factory=dict)
    gateways: list[Process] = field(default_factory=list)

    def gateway(self) -> Process:
        """Start one more gateway process."""
        proc = Process(f"gateway-{len(self.gateways) + 1}", [sys.executable, "-m", "workers.gateway"], self.env,
                       self.log_dir)
        proc.wait_for_output("polling every", timeout=60)
        self.gateways.append(proc)
        return proc

    def create_account(self, account_id: str, remix: bool = False, **fields: Any) -> User:
        """A discord account on a new fake user, through the admin API (the token is stored encrypted); `remix`:
        the user has Remix mode on (the bot opens Remix modals) and so does the account."""
        user = self.fake.add_user(f"token-{account_id}-{secrets.token_hex(6)}", remix=remix)
        body = {"id": account_id, "name": account_id, "driver": "discord", "fastConcurrency": 3, "remix": remix,
                **fields,
                "settings": {"guildId": user.guild_id, "channelId": user.channel_id, "userToken": user.token}}
        answer = self.api("POST", "/mj/account/create", body)
        assert answer["code"] == 1, answer
        self.users[account_id] = user
        wait_for(lambda: self.fake.connected(user.token), 30, f"a gateway to connect {account_id}")
        return user

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = requests.request(method, f"{self.base}{path}", json=body, headers={"mj-api-secret": SECRET},
                                timeout=30)
        return resp.json()

    def holder_pid(self, account_id: str) -> int | None:
        """The pid of the gateway process that holds the account's lease (`host/pid|token`)."""
        value = self.redis.get(f"mjq:discord:{account_id}:owner")
        if not value:
            return None
        return int(value.decode().split("|", 1)[0].rsplit("/", 1)[1])


@contextmanager
def discord_stack(log_dir: Path, data_dir: Path, job_seconds: float = 1.0, lease_seconds: float = 6.0
                  ) -> Iterator[DiscordStack]:
    with fresh_database("discord") as pg_url, claimed_redis("discord") as redis_url, \
            FakeDiscord(job_seconds=job_seconds) as fake:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MJQ_", "DATABASE_URL", "REDIS_URL"))}
        env.update({
            "DATABASE_URL": pg_url, "REDIS_URL": redis_url, "MJQ_DATA_DIR": str(data_dir), "MJQ_PORT": str(port),
            "MJQ_PUBLIC_URL": f"http://127.0.0.1:{port}", "MJQ_WEB_WORKERS": "1", "MJQ_LOG_LEVEL": "INFO",
            "MJQ_API_SECRET": SECRET, "MJQ_SECRET_KEY": Fernet.generate_key().decode(),
            "MJQ_WORKER_CONCURRENCY": "20", "MJQ_DISCORD_API_URL": fake.url,
            "MJQ_DISCORD_GATEWAY_URL": fake.gateway_url, "MJQ_DISCORD_INPAINT_URL": fake.url,
            "MJQ_GATEWAY_LEASE_SECONDS": str(lease_seconds),
        })
        procs = [gunicorn(env, log_dir), celery_worker("mj.fast", "fast@discord", env, log_dir),
                 celery_worker("mj.normal", "normal@discord", env, log_dir)]
        stack = DiscordStack(fake, env, log_dir, f"http://127.0.0.1:{port}", redis_lib.Redis.from_url(redis_url))
        try:
            yield stack
        finally:
            for proc in [*stack.gateways, *procs]:
                proc.stop()
            stack.redis.close()
