"""Hostile input is refused with a clear answer in the protocol's envelope and changes nothing; never a 500.

Deeply nested JSON, Unicode digits where a number is read, malformed and fullwidth webhook hosts, images
that declare too many pixels, and chunked bodies over the size limit.
"""
from __future__ import annotations

import base64
import io
import struct
import zlib
from dataclasses import replace

import pytest
from PIL import Image
from sqlalchemy import func, select

from app import create_app, protocol
from app.image_variants import store_variants
from app.models import Account, Task
from tests.fakes.webhooks import Sentinel, make_deliverer
from tests.imaging import data_url
from tests.unit.test_executor import FakeClock
from tests.unit.test_submit_imagine import count_tasks
from tests.unit.test_webhooks import one_event, reload
from workers.ssrf import system_resolver

SUPERSCRIPT_TWO = "\u00b2"  # '²': str.isdigit() takes it, int() does not
ENDLESS = pytest.param("9" * 5000, id="5000-digits")  # int() refuses more than 4,300 digits


def big_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size: a few KB for tens of megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def count_accounts(session_factory) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Account))


def refused(resp, status: int, description: str) -> None:
    assert (resp.status_code, resp.get_json()["code"]) == (status, protocol.CODE_VALIDATION_ERROR), resp.get_json()
    assert description in resp.get_json()["description"]


# 1. Deeply nested JSON


@pytest.mark.parametrize("path", ["/mj/submit/imagine", "/mj/task/list-by-condition", "/mj/account/create"])
def test_a_body_nested_100000_levels_deep_is_invalid_json_and_creates_nothing(client, session_factory, path):
    accounts = count_accounts(session_factory)
    body = '{"prompt": "a fox", "a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = client.post(path, data=body, content_type="application/json")
    refused(resp, 400, "request body is not valid JSON: nested too deeply")
    assert (count_tasks(session_factory), count_accounts(session_factory)) == (0, accounts)


@pytest.mark.parametrize("depth", [500, 900, 980])
def test_a_nul_deep_inside_a_body_the_decoder_accepts_is_refused_as_a_bad_body(client, session_factory, depth):
    body = '{"prompt": "a fox", "a": ' + "[" * depth + '"\\u0000"' + "]" * depth + "}"
    resp = client.post("/mj/submit/imagine", data=body, content_type="application/json")
    assert (resp.status_code, resp.get_json()["code"]) == (400, protocol.CODE_VALIDATION_ERROR)
    assert resp.get_json()["description"].startswith(("request contains a NUL", "request body is not valid JSON"))
    assert count_tasks(session_factory) == 0


# 2. Unicode digits (and numbers too long for int()) where a number is read


@pytest.mark.parametrize("query", [f"limit={SUPERSCRIPT_TWO}", f"pageSize={SUPERSCRIPT_TWO}",
                                   pytest.param("limit=" + "9" * 5000, id="limit=5000-digits")])
@pytest.mark.parametrize("path", ["/mj/task/list", "/mj/task/queue"])
def test_a_page_size_in_unicode_or_endless_digits_is_a_400_like_any_non_number(client, path, query):
    refused(client.get(f"{path}?{query}"), 400, "limit must be 1..")


@pytest.mark.parametrize("days", [SUPERSCRIPT_TWO, "\u0663", ENDLESS])  # '٣' is an Arabic-Indic three
@pytest.mark.parametrize("path", ["/mj/usage", "/mj/admin/stats"])
def test_days_in_unicode_or_endless_digits_are_code_4_like_any_non_number(client, path, days):
    refused(client.get(path, query_string={"days": days}), 200, "days must be 1..366")


def test_a_task_id_of_5000_digits_is_an_unknown_task(client):
    resp = client.get(f"/mj/task/{ENDLESS.values[0]}/fetch")
    assert (resp.status_code, resp.get_json()["code"]) == (404, protocol.CODE_NOT_FOUND)


@pytest.mark.parametrize("last", [SUPERSCRIPT_TWO, ENDLESS])
def test_a_last_event_id_in_unicode_digits_is_ignored_and_the_stream_starts_with_the_task(client, last):
    task_id = client.post("/mj/submit/imagine", json={"prompt": "a fox"}).get_json()["result"]
    resp = client.get(f"/mj/task/{task_id}/stream", headers={"Last-Event-ID": last}, buffered=False)
    try:
        assert resp.status_code == 200
        text = b"".join(next(iter(resp.response)) for _ in range(2)).decode()
        assert "event: task" in text and f'"id":"{task_id}"' in text
    finally:
        resp.close()


# 3 and 6. notifyHook: malformed brackets, NFKC tricks and fullwidth IP literals


MALFORMED_HOOKS = ["http://[::1/hook", "http://[zzz]/hook", "http://a]b/hook", "http://hooks\uff03example.com/x"]
FULLWIDTH_LITERALS = ["\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127\u30020\u30020\u30021", "\uff11\uff10.0.0.1",
                      "\uff10\uff58\uff17\uff46\uff10\uff10\uff10\uff10\uff11"]  # ０ｘ７ｆ０００００１


@pytest.mark.parametrize("hook", MALFORMED_HOOKS)
def test_a_notify_hook_with_a_malformed_host_is_code_4_naming_the_field(client, session_factory, hook):
    resp = client.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": hook})
    refused(resp, 200, "notifyHook has an invalid host")
    assert count_tasks(session_factory) == 0


@pytest.mark.parametrize("host", FULLWIDTH_LITERALS)
def test_a_notify_hook_with_a_fullwidth_ip_literal_is_code_4_like_an_ascii_one(client, session_factory, host):
    resp = client.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": f"http://{host}:8080/hook"})
    refused(resp, 200, "notifyHook ")
    assert count_tasks(session_factory) == 0


@pytest.mark.parametrize("url", MALFORMED_HOOKS + [f"http://{host}:{{port}}/hook" for host in FULLWIDTH_LITERALS])
def test_a_stored_hook_the_guard_refuses_fails_at_its_first_attempt_and_sends_nothing(session_factory, url):
    clock = FakeClock()
    with Sentinel() as sentinel:
        row = one_event(session_factory, url.replace("{port}", str(sentinel.port)), clock)
        deliverer = make_deliverer(session_factory, clock, allow_private=False, resolver=system_resolver)
        assert deliverer.attempt(row.id) == "failed"
        assert (sentinel.connections, sentinel.bytes) == (0, 0)
    assert reload(session_factory, row).last_error.startswith("refused: the URL ")


# 4. Images over 40 megapixels, decompression bombs, unreadable headers


def test_a_48_megapixel_png_of_6_kb_is_code_4_naming_the_field_and_its_size(client, session_factory):
    resp = client.post("/mj/submit/imagine", json={"prompt": "a fox", "base64Array": [png_url(big_png(8000, 6000))]})
    refused(resp, 200, "base64Array[0] is 8000×6000 (48.0 MP); at most 40 MP")
    assert count_tasks(session_factory) == 0


def test_a_png_of_exactly_40_megapixels_is_accepted(client, session_factory):
    resp = client.post("/mj/submit/imagine", json={"prompt": "a fox", "base64Array": [png_url(big_png(8000, 5000))]})
    assert resp.get_json()["code"] == protocol.CODE_SUCCESS, resp.get_json()
    assert count_tasks(session_factory) == 1


@pytest.mark.parametrize("path, body", [
    ("/mj/submit/describe", {"base64": png_url(big_png(10000, 9000))}),  # over Pillow's bomb warning
    ("/mj/submit/blend", {"base64Array": [data_url(Image.new("RGB", (8, 8))), png_url(big_png(20000, 10000))]}),
])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_every_image_field_refuses_too_many_pixels(client, session_factory, path, body):
    answer = client.post(path, json=body).get_json()
    assert answer["code"] == protocol.CODE_VALIDATION_ERROR and "at most 40 MP" in answer["description"], answer
    assert count_tasks(session_factory) == 0


def test_a_png_whose_header_pillow_cannot_read_is_code_4(client, session_factory):
    resp = client.post("/mj/submit/imagine", json={"prompt": "a fox", "base64Array": [png_url(b"\x89PNG\r\n\x1a\nxx")]})
    refused(resp, 200, "base64Array[0] is not a readable PNG image")
    assert count_tasks(session_factory) == 0


def test_a_200_megapixel_mask_for_vary_region_is_code_4_and_leaves_the_modal_open(walk, client, session_factory):
    upscale = walk.done(walk.click(walk.imagine("a lighthouse"), "U1"))
    modal = walk.click(upscale, "Vary (Region)")
    assert modal["code"] == 21
    mask = png_url(big_png(20000, 10000))  # over twice Pillow's bomb limit: Image.open itself raises
    resp = client.post("/mj/submit/modal", json={"taskId": modal["result"], "maskBase64": mask})
    refused(resp, 200, "maskBase64 declares more than")
    with session_factory() as session:
        assert session.get(Task, int(modal["result"])).status == protocol.MODAL


def test_a_stored_grid_that_is_a_decompression_bomb_gets_no_thumbnail_and_no_error(images):
    url = images.put("7/grid.png", big_png(20000, 10000))
    assert store_variants(images, 7, "IMAGINE", url) == {}


# 5. Chunked bodies over MJQ_MAX_BODY_BYTES


@pytest.fixture
def small_client(settings, celery, redis, accounts):
    """A client of an API whose bodies are at most 1,024 bytes (MJQ_MAX_BODY_BYTES)."""
    return create_app(replace(settings, max_body_bytes=1024), celery=celery, redis=redis).test_client()


def post_chunked(client, body: bytes):
    return client.post("/mj/submit/imagine", input_stream=io.BytesIO(body), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})


def test_a_chunked_body_over_the_limit_is_413_like_one_with_a_content_length(small_client, session_factory):
    body = b'{"prompt": "a fox"}' + b" " * 3000  # its first 1024 bytes alone are a valid request
    resp = post_chunked(small_client, body)
    assert (resp.status_code, resp.get_json()["code"]) == (413, protocol.CODE_VALIDATION_ERROR)
    assert resp.get_json()["description"] == "request body is larger than 1024 bytes"
    assert small_client.post("/mj/submit/imagine", data=body, content_type="application/json").status_code == 413
    assert count_tasks(session_factory) == 0


def test_a_chunked_body_of_exactly_the_limit_is_read_whole(small_client, session_factory):
    body = b'{"prompt": "a fox"' + b" " * (1024 - 19) + b"}"
    assert len(body) == 1024
    assert post_chunked(small_client, body).get_json()["code"] == protocol.CODE_SUCCESS
    assert count_tasks(session_factory) == 1
