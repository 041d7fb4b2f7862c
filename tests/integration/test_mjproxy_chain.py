"""mjq → mjq: the whole action walk against a first mjq whose accounts are mjproxy accounts pointing
at a second mjq that runs the simulator (one of them in Remix mode, for the walk's Remix steps).
Both are real processes (gunicorn and a celery worker each) with their own PostgreSQL database
and Redis database number; the second calls the first back on its notify hook."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from app.crypto import generate_key
from app.db import make_engine, make_session_factory
from app.models import Account
from app.services.accounts import seed_simulator_accounts
from config import Settings
from tests.databases import claimed_redis, fresh_database
from tests.e2e.action_walk import STEPS, walk_in_parallel
from tests.processes import Process, celery_worker, free_port, gunicorn, wait_for

pytestmark = pytest.mark.integration

ACCOUNT = "upstream-mjq"
REMIX_ACCOUNT = "upstream-mjq-remix"
UPSTREAM_SECRET = "U"
SECRET = "S"


def base_env(database_url: str, redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MJQ_", "DATABASE_URL", "REDIS_URL"))}
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "MJQ_DATA_DIR": str(data_dir),
                "MJQ_PORT": str(port), "MJQ_PUBLIC_URL": f"http://127.0.0.1:{port}", "MJQ_WEB_WORKERS": "1",
                "MJQ_WEB_THREADS": "8", "MJQ_LOG_LEVEL": "INFO"})
    return env


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    logs = tmp_path_factory.mktemp("chain-logs")
    with ExitStack() as stack:
        up_db, up_redis = stack.enter_context(fresh_database("chain_up")), stack.enter_context(claimed_redis("up"))
        our_db, our_redis = stack.enter_context(fresh_database("chain")), stack.enter_context(claimed_redis("chain"))
        up_port, our_port = free_port(), free_port()

        # The second mjq: simulator accounts, 1 s jobs, webhooks allowed to reach loopback.
        up_env = base_env(up_db, up_redis, tmp_path_factory.mktemp("up-data"), up_port)
        up_env.update({"MJQ_API_SECRET": UPSTREAM_SECRET, "MJQ_SIM_JOB_SECONDS": "1",
                       "MJQ_WEBHOOK_ALLOW_PRIVATE": "true"})
        engine = make_engine(Settings.from_env(up_env).effective_database_url)
        with make_session_factory(engine)() as session:
            seed_simulator_accounts(session, 2)
            # Remix on upstream too, so a Remix prompt written on the first mjq is the one the upstream runs: a
            # Reroll/Variation/Pan there opens the upstream's modal, which the driver completes with the job's prompt.
            for account in session.scalars(select(Account)):
                account.remix = True
            session.commit()
        engine.dispose()

        # The first mjq: no simulator account; upstreams call it back by host name (mjq refuses IP hooks).
        our_env = base_env(our_db, our_redis, tmp_path_factory.mktemp("our-data"), our_port)
        # Polls only once a minute: a walk this fast shows the notify hook carried the events.
        our_env.update({"MJQ_API_SECRET": SECRET, "MJQ_SECRET_KEY": generate_key(),
                        "MJQ_MJPROXY_CALLBACK_URL": f"http://localhost:{our_port}", "MJQ_MJPROXY_POLL_SECONDS": "60"})

        procs: list[Process] = []
        stack.callback(lambda: [p.stop() for p in reversed(procs)])
        up_logs, our_logs = logs / "upstream", logs / "first"
        up_logs.mkdir()
        our_logs.mkdir()
        # One worker per mjq takes every queue it needs (2 cores: fewer processes, same code paths).
        procs.append(gunicorn(up_env, up_logs))
        procs.append(celery_worker("mj.fast,mj.normal,mj.webhooks", "upstream@chain", up_env, up_logs,
                                   concurrency=8))
        procs.append(gunicorn(our_env, our_logs))
        procs.append(celery_worker("mj.fast,mj.normal", "first@chain", our_env, our_logs, concurrency=8))
        up_url, our_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{our_port}"
        for account_id, remix in ((ACCOUNT, False), (REMIX_ACCOUNT, True)):
            created = requests.post(f"{our_url}/mj/account/create", headers={"mj-api-secret": SECRET}, timeout=10,
                                    json={"id": account_id, "name": "Second mjq", "driver": "mjproxy",
                                          "settings": {"baseUrl": up_url, "secret": UPSTREAM_SECRET}, "remix": remix,
                                          "fastConcurrency": 6, "relaxConcurrency": 3, "queueSize": 50}).json()
            assert created["code"] == 1 and created["result"]["secretsSet"] == ["secret"], created
        yield {"ours": our_url, "upstream": up_url, "procs": procs}


def test_every_action_of_the_walk_runs_through_an_mjproxy_account_on_a_second_mjq(chain):
    """Both walks at once, under /mj and /mj-relax/mj: each task has a twin on the second mjq, in the same
    mode, with the same buttons and image bytes, and the second mjq's SUCCESS hook reached the first."""
    ours, upstream = str(chain["ours"]), str(chain["upstream"])
    started = time.monotonic()
    walkers, errors = walk_in_parallel(ours, SECRET)
    elapsed = time.monotonic() - started
    assert errors == {}
    assert all(sorted(w.names) == sorted(STEPS) and w.remix_filter == {"instanceId": REMIX_ACCOUNT}
               for w in walkers.values())
    assert elapsed < 120, f"the walks took {elapsed:.0f} s: events came by the 60 s poll, not the notify hook"

    up = requests.Session()
    up.headers["mj-api-secret"] = UPSTREAM_SECRET
    followed = {prefix: 0 for prefix in walkers}
    for prefix, walker in walkers.items():
        for task_id in dict.fromkeys(walker.task_ids):
            task = requests.get(f"{ours}/mj/task/{task_id}/fetch", headers={"mj-api-secret": SECRET},
                                timeout=10).json()
            assert task["properties"]["discordInstanceId"] in (ACCOUNT, REMIX_ACCOUNT)
            if task["status"] != "SUCCESS":
                assert task["status"] == "CANCEL"  # the walk's last step
                continue
            twin = up.get(f"{upstream}/mj/task/{task['properties']['upstreamTaskId']}/fetch", timeout=10).json()
            assert twin["status"] == "SUCCESS" and twin["state"] == task_id and twin["action"] == task["action"]
            assert twin["properties"]["mode"] == task["properties"]["mode"] == ("RELAX" if "relax" in prefix
                                                                                else "FAST")
            assert task["buttons"] == twin["buttons"]
            if task["imageUrl"]:
                assert task["imageUrl"].startswith(f"{ours}/mj/image/{task_id}/")
                assert requests.get(task["imageUrl"], timeout=10).content == requests.get(twin["imageUrl"],
                                                                                         timeout=10).content
            # The second mjq called the first back: the SUCCESS event reached the notify hook. It may still be on
            # its way: the first mjq can have read the result by the fetch an earlier event's hook prompted.
            def success_delivered(twin_id: str = twin["id"]) -> bool:
                deliveries = up.get(f"{upstream}/mj/task/{twin_id}/deliveries", timeout=10).json()
                return any(d["taskStatus"] == "SUCCESS" and d["status"] == "delivered" for d in deliveries)

            wait_for(success_delivered, 15, f"the SUCCESS webhook of upstream task {twin['id']} delivered")
            followed[prefix] += 1
        assert followed[prefix] == len(set(walker.task_ids)) - 1
    walks = " + ".join(f"{len(w.log)} steps under {p} ({w.seconds:.1f} s)" for p, w in walkers.items())
    print(f"\nchain walks: {walks} ok in "
          f"{elapsed:.1f} s; {sum(followed.values())} tasks followed on the second mjq in the same mode, each "
          "with its SUCCESS hook delivered and the same image bytes")
