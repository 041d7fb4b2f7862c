"""A relay URL still serves after the upstream's URL is gone: the mjproxy driver copies the final
image into mjq's store and records the upstream's own URL for the `origin` mode."""
from __future__ import annotations

import requests

# The mjproxy driver's fixtures (settings, fake upstream, its account, the harness), shared by name.
from tests.unit.test_mjproxy_driver import (  # noqa: F401
    Harness,
    accounts,
    fake,
    finish,
    harness,
    imagine,
    png,
    settings,
)
from workers.executor import DONE

UPSTREAM_TIMEOUT_SECONDS = 2


def test_the_relay_url_serves_the_same_bytes_after_the_upstream_server_is_gone(harness: Harness, fake, client):  # noqa: F811
    task_id, upstream_id = imagine(harness, fake)
    final = png((30, 90, 200), (96, 64))
    finish(fake, upstream_id, final)
    harness.threads[0].join(10)
    assert harness.outcomes[task_id] == DONE
    relay = client.get(f"/mj-relay/mj/task/{task_id}/fetch").get_json()["imageUrl"]
    origin = client.get(f"/mj-origin/mj/task/{task_id}/fetch").get_json()["imageUrl"]
    assert relay.startswith(f"http://mjq.test/mj/image/{task_id}/") and origin.startswith(f"{fake.url}/img/")
    assert requests.get(origin, timeout=UPSTREAM_TIMEOUT_SECONDS).content == final

    fake.__exit__(None, None, None)
    fake._server.server_close()  # the upstream is gone: its port refuses connections

    try:
        requests.get(origin, timeout=UPSTREAM_TIMEOUT_SECONDS)
        origin_served = True
    except requests.RequestException:
        origin_served = False
    assert not origin_served
    response = client.get(relay.removeprefix("http://mjq.test"))
    assert (response.status_code, response.data) == (200, final)
