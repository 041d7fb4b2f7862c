"""The in-process discord harness of the unit tests: the fake Discord, a gateway supervisor thread writing the
account's event stream (fakeredis), the API's test client and an executor running jobs through the driver."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from app.crypto import SecretBox, generate_key
from app.models import Task
from app.services.account_admin import account_secrets, create_account
from tests.fakes.fake_discord import FakeDiscord, User
from tests.processes import wait_for
from workers.dispatch import Dispatcher
from workers.drivers.discord import DiscordDriver, TaskLookup
from workers.drivers.discord_accounts import AccountRetirer
from workers.drivers.discord_rest import DiscordUrls
from workers.executor import Executor
from workers.gateway.supervisor import Gateway


@dataclass
class Harness:
    fake: FakeDiscord
    user: User
    box: SecretBox
    executor: Executor
    gateway: Gateway
    session_factory: Any
    client: Any
    retirer: AccountRetirer

    def submit(self, path: str, body: dict[str, Any], code: int = 1) -> int:
        answer = self.client.post(f"/mj{path}", json={**body, "accountFilter": {"instanceId": "dc-1"}}).get_json()
        assert answer["code"] == code, answer
        return int(answer["result"])

    def run(self, task_id: int) -> dict[str, Any]:
        self.executor.execute(task_id)
        with self.session_factory() as session:
            task = session.get(Task, task_id)
            assert task is not None
            return task.to_json()

    def click(self, parent: dict[str, Any], label: str, code: int = 1) -> int:
        custom_id = next(b["customId"] for b in parent["buttons"] if (b["label"] or b["emoji"]) == label)
        answer = self.client.post("/mj/submit/action", json={"taskId": parent["id"], "customId": custom_id}).get_json()
        assert answer["code"] == code, answer
        return int(answer["result"])


@pytest.fixture
def harness(client, celery, session_factory, redis, images) -> Iterator[Harness]:
    box = SecretBox.from_key(generate_key())
    with FakeDiscord(job_seconds=0.4) as fake:
        user = fake.add_user("token-1")
        with session_factory() as session:
            create_account(session, {"id": "dc-1", "name": "Discord 1", "driver": "discord", "settings": {
                "guildId": user.guild_id, "channelId": user.channel_id, "userToken": user.token}}, box)
        secrets = lambda account: account_secrets(account, box)  # noqa: E731
        retirer = AccountRetirer(session_factory, redis, dispatcher=Dispatcher(celery))
        urls = DiscordUrls(api=fake.url, gateway=fake.gateway_url, inpaint=fake.url)
        driver = DiscordDriver(images, redis, requests.Session(), TaskLookup(session_factory), urls, retirer,
                               modal_wait_seconds=10)
        executor = Executor(session_factory, redis, {"discord": driver}, "fast@test/1", secrets=secrets)
        gateway = Gateway(session_factory, redis, secrets, retirer, "gw@test/1", fake.gateway_url, lease_ms=3000,
                          poll_seconds=0.2)
        stop = threading.Event()
        thread = threading.Thread(target=gateway.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: fake.connected(user.token), 10, "the gateway to connect")
        yield Harness(fake, user, box, executor, gateway, session_factory, client, retirer)
        stop.set()
        thread.join(timeout=10)


