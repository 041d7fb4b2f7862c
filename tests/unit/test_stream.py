"""Live progress over Server-Sent Events: `/mj/task/{id}/stream` and `/mj/task/stream`."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.unit.test_tenancy import ADMIN, PLANS, auth, new_key
from workers.events import TaskEvents


@pytest.fixture
def settings(settings):
    return replace(settings, api_secret="S", plans_json=PLANS, stream_max_seconds=3, stream_heartbeat_seconds=0.5)


def submit(client, headers=ADMIN, prompt="a red fox") -> str:
    body = client.post("/mj/submit/imagine", json={"prompt": prompt}, headers=headers).get_json()
    assert body["code"] == 1, body
    return body["result"]


class Frames:
    """Reads an SSE body frame by frame, as an EventSource would (comments kept, to see heartbeats)."""

    def __init__(self, response) -> None:
        self.response = response
        self.chunks: Iterator[bytes] = iter(response.response)
        self.buffer = b""

    def next(self) -> dict[str, Any] | None:
        """The next frame as {'id', 'event', 'data', 'comment', 'retry'}; None when the stream closed."""
        while b"\n\n" not in self.buffer:
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                return None
        raw, self.buffer = self.buffer.split(b"\n\n", 1)
        frame: dict[str, Any] = {}
        for line in raw.decode().split("\n"):
            field, _, value = line.partition(":")
            frame[field or "comment"] = value.strip()
        if "data" in frame:
            frame["data"] = json.loads(frame["data"])
        return frame

    def next_task(self) -> dict[str, Any] | None:
        while (frame := self.next()) is not None:
            if frame.get("event") == "task":
                return frame
        return None

    def rest(self) -> list[dict[str, Any]]:
        frames = []
        while (frame := self.next()) is not None:
            frames.append(frame)
        self.response.close()
        return frames


def open_stream(client, path: str, headers=ADMIN) -> Frames:
    response = client.get(path, headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    return Frames(response)


def events(session_factory, redis, task_id: str) -> TaskEvents:
    return TaskEvents(session_factory, redis, int(task_id), None)


def test_a_stream_sends_the_task_then_every_change_in_order_and_ends_at_success(client, session_factory, redis):
    task_id = submit(client)
    stream = open_stream(client, f"/mj/task/{task_id}/stream")
    first = stream.next_task()
    assert first["data"]["id"] == task_id and first["data"]["status"] == "NOT_START" and first["id"] == "0"
    writer = events(session_factory, redis, task_id)
    writer.transition(status="IN_PROGRESS", progress="0%")
    writer.transition(progress="40%")
    writer.transition(progress="80%")
    writer.transition(status="SUCCESS", progress="100%", imageUrl="http://x/fox.png")
    seen = [stream.next_task() for _ in range(4)]
    assert [f["data"]["progress"] for f in seen] == ["0%", "40%", "80%", "100%"]
    assert [f["id"] for f in seen] == ["1", "2", "3", "4"]
    assert seen[-1]["data"]["status"] == "SUCCESS" and seen[-1]["data"]["imageUrl"] == "http://x/fox.png"
    assert stream.rest() == []  # closed right after the terminal event


def test_a_finished_task_streams_its_final_state_and_closes(client, session_factory, redis):
    task_id = submit(client)
    events(session_factory, redis, task_id).transition(status="FAILURE", failReason="banned")
    frames = open_stream(client, f"/mj/task/{task_id}/stream").rest()
    tasks = [f for f in frames if f.get("event") == "task"]
    assert [(t["data"]["status"], t["data"]["failReason"]) for t in tasks] == [("FAILURE", "banned")]


def test_another_keys_task_is_404_code_3_before_any_streaming(client):
    alice, bob = new_key(client), new_key(client)
    task_id = submit(client, auth(alice))
    for path in (f"/mj/task/{task_id}/stream", "/mj/task/123456789/stream", "/mj/task/abc/stream"):
        resp = client.get(path, headers=auth(bob))
        assert resp.status_code == 404 and resp.get_json()["code"] == 3
    assert client.get(f"/mj/task/{task_id}/stream", headers={"mj-api-secret": "wrong"}).status_code == 401
    own = open_stream(client, f"/mj/task/{task_id}/stream", auth(alice))
    assert own.next_task()["data"]["id"] == task_id
    own.response.close()


def test_a_reconnect_with_last_event_id_skips_what_the_client_already_has(client, session_factory, redis):
    task_id = submit(client)
    writer = events(session_factory, redis, task_id)
    writer.transition(status="IN_PROGRESS", progress="10%")
    writer.transition(progress="50%")
    resumed = client.get(f"/mj/task/{task_id}/stream", headers={**ADMIN, "Last-Event-ID": "2"}, buffered=False)
    stream = Frames(resumed)
    writer.transition(progress="70%")
    frame = stream.next_task()
    assert (frame["id"], frame["data"]["progress"]) == ("3", "70%")  # not seq 2 again
    writer.transition(status="CANCEL")
    assert stream.next_task()["data"]["status"] == "CANCEL" and stream.rest() == []
    # Reconnecting after the final event: 204, which makes EventSource stop reconnecting.
    done = client.get(f"/mj/task/{task_id}/stream", headers={**ADMIN, "Last-Event-ID": "4"})
    assert done.status_code == 204 and done.data == b""


def test_a_stream_closes_after_its_lifetime_and_sends_heartbeats_meanwhile(client):
    task_id = submit(client)
    frames = open_stream(client, f"/mj/task/{task_id}/stream").rest()  # nothing happens: lifetime 3 s
    assert frames[0] == {"retry": "1000"}
    assert [f["data"]["id"] for f in frames if "data" in f] == [task_id]
    assert sum(1 for f in frames if f.get("comment") == "keep-alive") >= 3


def test_without_redis_the_stream_polls_the_database_every_second(client, app, session_factory, redis):
    task_id = submit(client)

    def refuse(*args, **kwargs):
        raise RedisConnectionError("redis is down")

    app.extensions["mjq"].redis = type("DownRedis", (), {"pubsub": lambda self, **kw: DownPubSub()})()

    class DownPubSub:
        subscribe = staticmethod(refuse)

        def close(self) -> None:
            pass

    stream = open_stream(client, f"/mj/task/{task_id}/stream")
    assert stream.next_task()["data"]["status"] == "NOT_START"
    events(session_factory, None, task_id).transition(status="SUCCESS", progress="100%")
    frame = stream.next_task()
    assert frame["data"]["status"] == "SUCCESS" and frame["id"] == "1" and stream.rest() == []


def test_the_multi_task_stream_follows_only_the_visible_ids(client, session_factory, redis):
    alice, bob = new_key(client), new_key(client)
    mine = [submit(client, auth(alice), p) for p in ("one", "two")]
    theirs = submit(client, auth(bob))
    stream = open_stream(client, f"/mj/task/stream?ids={mine[0]},{theirs},{mine[1]},x", auth(alice))
    snapshot = [stream.next_task(), stream.next_task()]
    assert sorted(f["data"]["id"] for f in snapshot) == sorted(mine)
    events(session_factory, redis, theirs).transition(status="IN_PROGRESS", progress="5%")
    events(session_factory, redis, mine[1]).transition(status="IN_PROGRESS", progress="30%")
    events(session_factory, redis, mine[1]).transition(status="SUCCESS", progress="100%")
    events(session_factory, redis, mine[0]).transition(status="IN_PROGRESS", progress="10%")
    changes = [stream.next_task() for _ in range(3)]
    assert [(f["data"]["id"], f["data"]["progress"]) for f in changes] == [
        (mine[1], "30%"), (mine[1], "100%"), (mine[0], "10%")]
    assert changes[0]["id"] == f"{mine[1]}:1"
    rest = stream.rest()  # it does not end at a terminal state, only at its lifetime
    assert all(f["data"]["id"] != theirs for f in rest if "data" in f)


def test_the_all_tasks_stream_is_for_admins_and_caps_the_ids(client, session_factory, redis):
    user = new_key(client)
    refused = client.get("/mj/task/stream", headers=auth(user))
    assert refused.status_code == 403
    many = ",".join(str(i) for i in range(1, 102))
    assert client.get(f"/mj/task/stream?ids={many}", headers=ADMIN).status_code == 400
    stream = open_stream(client, "/mj/task/stream")
    task_id = submit(client)
    events(session_factory, redis, task_id).transition(status="IN_PROGRESS", progress="20%")
    frame = stream.next_task()
    assert frame["data"]["id"] == task_id and frame["data"]["progress"] == "20%"
    stream.response.close()
