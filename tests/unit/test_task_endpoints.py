"""Reading tasks: fetch, list-by-condition, list, queue."""
from __future__ import annotations

from app import protocol
from app.models import Task, now_ms
from app.protocol import TASK_KEYS


def submit(client, prompt="cat", path="/mj"):
    return client.post(f"{path}/submit/imagine", json={"prompt": prompt}).get_json()["result"]


def test_fetch_returns_every_task_key_with_nulls_where_unknown(client):
    task_id = submit(client)
    resp = client.get(f"/mj/task/{task_id}/fetch")
    task = resp.get_json()
    assert tuple(task) == TASK_KEYS
    assert task["id"] == task_id and task["status"] == "NOT_START" and task["action"] == "IMAGINE"
    assert task["progress"] is None and task["imageUrl"] is None and task["startTime"] is None
    assert isinstance(task["submitTime"], int) and abs(task["submitTime"] - now_ms()) < 60_000
    assert task["buttons"] == [] and isinstance(task["properties"], dict)
    assert '"state":null' in resp.get_data(as_text=True)


def test_fetch_works_under_every_mode_prefix(client):
    task_id = submit(client)
    for prefix in ("/mj", "/mj-fast/mj", "/mj-relax/mj", "/mj-turbo/mj"):
        assert client.get(f"{prefix}/task/{task_id}/fetch").get_json()["id"] == task_id


def test_an_unknown_or_malformed_task_id_is_404_with_code_3(client):
    for task_id in ("1234567890123456789", "abc", "-1", "99999999999999999999999"):
        resp = client.get(f"/mj/task/{task_id}/fetch")
        assert resp.status_code == 404 and resp.get_json()["code"] == 3


def test_list_by_condition_takes_string_and_number_ids_and_answers_a_bare_array(client):
    a, b = submit(client, "a"), submit(client, "b")
    resp = client.post("/mj/task/list-by-condition", json={"ids": [b, int(a), "42", "x", None]})
    assert [t["id"] for t in resp.get_json()] == [b, a]
    assert client.post("/mj/task/list-by-condition", json={"ids": None}).get_json() == []
    assert client.post("/mj/task/list-by-condition", json={}).get_json() == []
    assert client.post("/mj-relax/mj/task/list-by-condition", json={"ids": [a]}).get_json()[0]["id"] == a


def test_every_reader_answers_the_bytes_of_task_to_json(client, session_factory):
    # The readers select plain rows of the task's columns, not Task objects (app/api/tasks.py): not a byte may differ.
    task_id = submit(client, 'a fox 狐 "q" \\ 🦊')
    with session_factory() as s:
        task = s.get(Task, int(task_id))
        task.status, task.progress, task.image_url = "SUCCESS", "100%", "http://mjq.test/mj/image/x/1.png"
        task.properties = {**task.properties, "seed": "7", "nested": {"a": [1, 2.5, None, "é"]}}
        task.buttons = [protocol.button("MJ::JOB::upsample::1::h", "U1"), protocol.button("x", emoji="🔄")]
        s.commit()
        expected = protocol.dumps(task.to_json())
    assert client.get(f"/mj/task/{task_id}/fetch").get_data(as_text=True) == expected
    assert client.post("/mj/task/list-by-condition", json={"ids": [task_id]}).get_data(as_text=True) == f"[{expected}]"
    assert client.get("/mj/task/list").get_data(as_text=True) == f"[{expected}]"


def test_list_by_condition_answers_each_task_once_in_the_order_first_asked(client):
    a, b = submit(client, "a"), submit(client, "b")
    ids = [b, a, int(b), f" {a} ", *(str(10**18 + i) for i in range(996))]  # 1,000 ids, the cap
    assert [t["id"] for t in client.post("/mj/task/list-by-condition", json={"ids": ids}).get_json()] == [b, a]


def test_list_by_condition_refuses_a_non_list_or_too_many_ids(client):
    assert client.post("/mj/task/list-by-condition", json={"ids": "1"}).status_code == 400
    assert client.post("/mj/task/list-by-condition", json={"ids": list(range(1, 1002))}).status_code == 400


def test_list_is_newest_first_and_paged(client):
    ids = [submit(client, f"p{i}") for i in range(5)]
    first = client.get("/mj/task/list?limit=2")
    assert [t["id"] for t in first.get_json()] == ids[::-1][:2]
    nxt = first.headers["X-Next-Before"]
    second = client.get(f"/mj/task/list?limit=2&before={nxt}")
    assert [t["id"] for t in second.get_json()] == ids[::-1][2:4]
    third = client.get(f"/mj/task/list?limit=2&before={second.headers['X-Next-Before']}")
    assert [t["id"] for t in third.get_json()] == ids[:1] and "X-Next-Before" not in third.headers


def test_list_never_returns_more_than_the_page_cap(client, settings):
    assert client.get(f"/mj/task/list?limit={settings.list_page_size + 1}").status_code == 400
    assert client.get("/mj/task/list?limit=0").status_code == 400


def test_queue_lists_open_tasks_oldest_first(client, session_factory):
    a, b, c = submit(client, "a"), submit(client, "b"), submit(client, "c")
    with session_factory() as s:
        s.get(Task, int(b)).status = "SUCCESS"
        s.commit()
    assert [t["id"] for t in client.get("/mj/task/queue").get_json()] == [a, c]


def test_unknown_routes_answer_json_404(client):
    resp = client.get("/mj/nope")
    assert resp.status_code == 404 and resp.get_json()["code"] == 3
    assert client.get("/mj/submit/imagine").status_code == 405


def test_ready_reports_each_dependency(client):
    resp = client.get("/ready")
    assert resp.status_code == 200 and resp.get_json()["checks"] == {"database": "ok", "redis": "ok"}
