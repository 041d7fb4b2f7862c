"""The `mjq` client commands against the Flask app (through a requests adapter), without a server."""
from __future__ import annotations

import io
from dataclasses import replace

import pytest
import requests
from requests.adapters import BaseAdapter

from app.buttons import grid_buttons
from app.cli import main
from app.cli_client import Client, ClientError, ProgressBar, _events, _resolve_button
from workers.events import TaskEvents

BASE = "http://mjq.test"


@pytest.fixture
def settings(settings):
    return replace(settings, api_secret="S")


class FlaskAdapter(BaseAdapter):
    """Sends requests' requests to a Flask test client, so the client code runs unchanged."""

    def __init__(self, app) -> None:
        super().__init__()
        self.client = app.test_client()

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        path = request.url[len(BASE):]
        answer = self.client.open(path, method=request.method, headers=dict(request.headers), data=request.body)
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers.update(answer.headers)
        response.raw = io.BytesIO(answer.get_data())
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


def client_for(app, key: str = "S") -> Client:
    http = requests.Session()
    http.mount(BASE, FlaskAdapter(app))
    return Client(BASE, key, http)


def test_a_wrong_key_is_a_one_line_401_error(app):
    with pytest.raises(ClientError, match="^401 unauthorized: the server refused the key"):
        client_for(app, "nope").fetch("1")


def test_refusals_name_their_code_and_meaning(app):
    client = client_for(app)
    with pytest.raises(ClientError, match=r"code 4, validation error"):
        client.submit("/mj/submit/imagine", {"prompt": ""})
    with pytest.raises(ClientError, match=r"code 24, banned prompt"):
        client.submit("/mj/submit/imagine", {"prompt": "a naked fox"})
    with pytest.raises(ClientError, match=r"^task 42 not found \(code 3\)$"):
        client.fetch("42")


def test_following_a_task_yields_its_json_until_the_terminal_state(app, session_factory, redis):
    client = client_for(app)
    task_id = client.submit("/mj/submit/imagine", {"prompt": "a red fox"})
    TaskEvents(session_factory, redis, int(task_id), None).transition(status="FAILURE", failReason="upstream said no")
    states = [(t["status"], t["failReason"]) for t in client.follow(task_id)]
    assert states == [("FAILURE", "upstream said no")]


def test_the_sse_reader_keeps_task_events_with_their_ids_and_skips_comments():
    lines = ["retry: 1000", "", ": keep-alive", "", "id: 3", "event: task", 'data: {"id": "7", "progress": "46%"}', "",
             "event: other", "data: {}", ""]
    assert list(_events(iter(lines))) == [("3", {"id": "7", "progress": "46%"})]


def test_button_labels_resolve_to_the_tasks_custom_ids():
    task = {"id": "7", "buttons": grid_buttons("abc")}
    assert _resolve_button(task, "U2") == "MJ::JOB::upsample::2::abc"
    assert _resolve_button(task, "v4") == "MJ::JOB::variation::4::abc"
    assert _resolve_button(task, "R") == _resolve_button(task, "🔄") == "MJ::JOB::reroll::0::abc::SOLO"
    assert _resolve_button(task, "MJ::JOB::upsample::1::abc") == "MJ::JOB::upsample::1::abc"
    with pytest.raises(ClientError, match="has no button 'Zoom Out 2x' \\(buttons: U1, U2"):
        _resolve_button(task, "Zoom Out 2x")


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_redraws_one_line_on_a_terminal_and_prints_lines_otherwise():
    tty, plain = FakeTty(), io.StringIO()
    for stream in (tty, plain):
        bar = ProgressBar(stream)
        for progress, status in (("0%", "SUBMITTED"), ("46%", "IN_PROGRESS"), ("46%", "IN_PROGRESS"),
                                 ("100%", "SUCCESS")):
            bar.update({"id": "7", "status": status, "progress": progress})
        bar.finish()
    assert tty.getvalue().count("\r") == 3 and " 46% IN_PROGRESS" in tty.getvalue()
    assert "█" * 13 + "░" * 17 in tty.getvalue() and tty.getvalue().endswith("100% SUCCESS\n")
    assert plain.getvalue().splitlines() == ["task 7 SUBMITTED 0%", "task 7 IN_PROGRESS 46%", "task 7 SUCCESS 100%"]


def test_an_unreachable_server_is_exit_1_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("MJQ_URL", "http://127.0.0.1:9")
    assert main(["fetch", "1"]) == 1
    assert capsys.readouterr().err == "mjq: cannot reach mjq at http://127.0.0.1:9 (set MJQ_URL or MJQ_PUBLIC_URL)\n"
