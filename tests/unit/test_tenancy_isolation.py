"""Isolation between keys: every endpoint that takes a task id answers key B about key A's task
exactly as it answers an unknown id, and the lists never show A's tasks to B."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from sqlalchemy import select, update

from app.models import Account, Task, WebhookDelivery
from tests.fakes.webhooks import deliveries
from tests.unit.conftest import drain
from tests.unit.test_actions import button
from tests.unit.test_executor import make_executor
from tests.unit.test_tenancy import PLANS, auth, new_key
from workers import queues
from workers.webhook_outbox import WebhookOutbox

#: A well-formed id no task has, as long as the real ones (epoch ms + 6 digits).
UNKNOWN = "1000000000000000001"


@pytest.fixture
def settings(settings):
    # A stream lifetime of 0 sends its opening frames and closes, so a whole stream body can be compared.
    return replace(settings, api_secret="S", plans_json=PLANS, stream_max_seconds=0.0)


@dataclass
class World:
    """Key A's tasks, in every state the endpoints need, and the two keys."""

    a: dict[str, Any]
    b: dict[str, Any]
    ids: dict[str, str]        # grid (SUCCESS, with webhook deliveries), modal (MODAL), open (NOT_START)
    custom_id: str             # the grid's U1
    delivery: str              # the grid's last webhook delivery


@pytest.fixture
def world(client, celery, session_factory, redis, images) -> World:
    a, b = new_key(client, "premium"), new_key(client, "premium")
    executor = make_executor(session_factory, redis, images)
    executor.listeners = [WebhookOutbox()]

    def run(path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = client.post(path, json=body, headers=auth(a)).get_json()
        for message in drain(celery, queues.FAST):
            executor.execute(int(message["args"][0]))
        return client.get(f"/mj/task/{answer['result']}/fetch", headers=auth(a)).get_json()

    with session_factory() as s:  # on a Remix account V1 opens a modal
        s.execute(update(Account).values(remix=True))
        s.commit()
    grid = run("/mj/submit/imagine", {"prompt": "a fox", "notifyHook": "https://hooks.example.com/a"})
    modal = client.post("/mj/submit/action", json={"taskId": grid["id"], "customId": button(grid, "V1")},
                        headers=auth(a)).get_json()
    still_open = client.post("/mj/submit/imagine", json={"prompt": "a waiting fox"}, headers=auth(a)).get_json()
    assert (grid["status"], modal["code"], still_open["code"]) == ("SUCCESS", 21, 1)
    return World(a, b, {"grid": grid["id"], "modal": modal["result"], "open": still_open["result"]}, button(grid, "U1"),
                 str(deliveries(session_factory, int(grid["id"]))[-1].id))


@dataclass(frozen=True)
class Call:
    """One request naming a task: `{id}` in the path and body stands for the task id."""

    method: str
    path: str
    body: Any = None
    task: str = "grid"

    def send(self, client, key: dict[str, Any], task_id: str, world: World) -> tuple[int, str, str]:
        """(status, content type, body) of the answer, with `task_id` written as `{id}` wherever it appears."""
        def fill(text: str) -> str:
            return text.replace("{id}", task_id).replace("{custom}", world.custom_id).replace(
                "{delivery}", world.delivery)

        body = None if self.body is None else json.loads(fill(json.dumps(self.body)))
        resp = client.open(fill(self.path), method=self.method, json=body, headers=auth(key))
        return resp.status_code, resp.mimetype, resp.get_data(as_text=True).replace(task_id, "{id}")


CALLS = {
    "fetch": Call("GET", "/mj/task/{id}/fetch"),
    "list-by-condition": Call("POST", "/mj/task/list-by-condition", {"ids": ["{id}"]}),
    "list-by-ids": Call("POST", "/mj/task/list-by-ids", {"ids": ["{id}"]}),
    "submit/action": Call("POST", "/mj/submit/action", {"taskId": "{id}", "customId": "{custom}"}),
    "submit/change": Call("POST", "/mj/submit/change", {"taskId": "{id}", "action": "UPSCALE", "index": 2}),
    "submit/simple-change": Call("POST", "/mj/submit/simple-change", {"content": "{id} V1"}),
    "submit/modal": Call("POST", "/mj/submit/modal", {"taskId": "{id}", "prompt": "a grey fox"}, "modal"),
    "cancel": Call("POST", "/mj/task/{id}/cancel", task="open"),
    "image-seed": Call("GET", "/mj/task/{id}/image-seed"),
    "stream": Call("GET", "/mj/task/{id}/stream", task="open"),
    "stream?ids=": Call("GET", "/mj/task/stream?ids={id}"),
    "deliveries": Call("GET", "/mj/task/{id}/deliveries"),
    "redeliver": Call("POST", "/mj/task/{id}/deliveries/{delivery}/redeliver"),
    "redeliver a wrong delivery": Call("POST", "/mj/task/{id}/deliveries/4242/redeliver"),
}


def everything(session_factory) -> list[Any]:
    """Every task and delivery as stored: what B's requests must leave unchanged."""
    with session_factory() as s:
        return ([t.to_json() for t in s.scalars(select(Task).order_by(Task.id))]
                + [(d.id, d.status, d.next_attempt_at) for d in s.scalars(select(WebhookDelivery))])


@pytest.mark.parametrize("name", CALLS)
def test_another_keys_task_is_answered_exactly_like_an_unknown_id(name, client, world, session_factory):
    call, theirs = CALLS[name], world.ids[CALLS[name].task]
    before = everything(session_factory)
    foreign = call.send(client, world.b, theirs, world)
    unknown = call.send(client, world.b, UNKNOWN, world)
    assert foreign == unknown
    assert everything(session_factory) == before
    # The same request by the owner gets a different answer, so the comparison above can fail.
    assert call.send(client, world.a, theirs, world) != unknown


@pytest.mark.parametrize("path", ["/mj/task/list", "/mj/task/queue", "/mj-relax/mj/task/list"])
def test_the_lists_of_another_key_never_show_the_task(path, client, world):
    def listed(key: dict[str, Any]) -> set[str]:
        return {t["id"] for t in client.get(path, headers=auth(key)).get_json()}

    assert world.ids["open"] in listed(world.a)
    assert listed(world.b).isdisjoint(world.ids.values())
