"""P5: `list-by-condition` of 100 ids and `fetch` on a large tasks table, beside bare primary-key SELECTs.

Rows are generated inside PostgreSQL (`INSERT … SELECT generate_series`) into the migrated
schema, shaped like finished IMAGINE tasks (nine buttons, the simulator's properties), first
10 k then up to 1 M, each followed by VACUUM ANALYZE. The requests go over HTTP, one at a
time on a keep-alive connection, to gunicorn with the production config; the ids are drawn
at random from the whole table. The baseline runs psycopg2 `SELECT * … WHERE id = ANY(…)`
and `… WHERE id = …` for the same ids from this process, each right after the mjq request
for the same ids, so both meet the same moments of a shared machine.
"""
from __future__ import annotations

import http.client
import json
import random
import time
from collections.abc import Callable

import psycopg2

from bench.harness import Stack
from bench.report import Row, Section, ms, ratio
from bench.stats import percentile

SIZES = (10_000, 1_000_000)
LIST_IDS = 100
LIST_REQUESTS = 300
FETCH_REQUESTS = 1000
WARMUP_REQUESTS = 30
TARGET_LIST_P99_MS = 20.0
TARGET_FETCH_P99_MS = 5.0
#: Generated tasks are spread over 30 days before now, this many ms apart at 1 M rows.
SPAN_MS = 30 * 86_400_000

_BUTTON = '{{"customId":"MJ::JOB::{kind}::{n}::HASH{extra}","emoji":"{emoji}","label":"{label}","type":2,"style":2}}'
BUTTONS = "[" + ",".join(
    [_BUTTON.format(kind="upsample", n=i, extra="", emoji="", label=f"U{i}") for i in range(1, 5)]
    + [_BUTTON.format(kind="reroll", n=0, extra="::SOLO", emoji="🔄", label="")]
    + [_BUTTON.format(kind="variation", n=i, extra="", emoji="", label=f"V{i}") for i in range(1, 5)]
) + "]"

INSERT = """
INSERT INTO tasks (id, action, status, prompt, prompt_en, description, state, submit_time, start_time,
                   finish_time, image_url, progress, fail_reason, properties, buttons, mode, queue, bot_type,
                   account_id, owner, parent_id, notify_hook, inputs, attempt, seq, claimed_by, upstream_id,
                   upstream_state, enqueued_at, updated_at)
SELECT ms * 1000000 + (g * 7919) %% 1000000, 'IMAGINE', CASE WHEN g %% 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
       p, p, '/imagine ' || p, NULL, ms, ms + 900, ms + 45000,
       CASE WHEN g %% 20 = 0 THEN NULL ELSE 'http://127.0.0.1:8080/mj/image/' || g || '/' || h || '.png' END,
       CASE WHEN g %% 20 = 0 THEN '' ELSE '100%%' END,
       CASE WHEN g %% 20 = 0 THEN '[Banned prompt detected] Sorry!' END,
       jsonb_build_object('discordInstanceId', 'sim-' || (1 + g %% 2), 'botType', 'MID_JOURNEY',
                          'nonce', (ms * 4194304)::text, 'mode', 'FAST', 'messageId', (ms * 4194305)::text,
                          'messageHash', h, 'flags', 0, 'finalPrompt', p, 'progressMessageId', (ms * 4194306)::text,
                          'seed', (g * 2654435761 %% 4294967295)::text),
       replace(%(buttons)s, 'HASH', h)::jsonb, 'FAST', 'mj.fast', 'MID_JOURNEY', 'sim-' || (1 + g %% 2), NULL,
       NULL, NULL, '{"images": [], "kind": "imagine"}'::jsonb, 1, 9, 'fast@bench/1',
       'sim:' || (ms * 4194304)::text || ':' || (ms + 5), 'SUBMITTED', ms + 3, ms + 45000
FROM (SELECT g, %(first_ms)s::bigint + g * %(step_ms)s::bigint AS ms, md5(g::text) AS h,
             'a red fox number ' || g || ' in a snowy forest at dawn, cinematic light --ar 16:9' AS p
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS s
"""


def fill(stack: Stack, lo: int, hi: int, first_ms: int) -> None:
    """Insert generated rows `lo`..`hi` (ids grow with the row number), then VACUUM ANALYZE."""
    conn = psycopg2.connect(stack.pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute(INSERT, {"buttons": BUTTONS, "first_ms": first_ms, "step_ms": SPAN_MS // SIZES[-1],
                                 "lo": lo, "hi": hi})
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE tasks")
            # Flush the load's dirty pages now, not in a checkpoint in the middle of the measurement.
            cur.execute("CHECKPOINT")
    finally:
        conn.close()


def timed(pairs: list[tuple[Callable[[], object], Callable[[], object]]]) -> tuple[list[float], list[float]]:
    """Run each (mjq, bare) pair once, one after the other, so both see the same moments of the
    machine; their durations in ms."""
    first: list[float] = []
    second: list[float] = []
    for a, b in pairs:
        for call, out in ((a, first), (b, second)):
            start = time.perf_counter()
            call()
            out.append((time.perf_counter() - start) * 1000.0)
    return first, second


class Client:
    """Sequential keep-alive HTTP requests to the web process; every answer must be 200."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        answer = self.conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {answer.status} {data[:200]!r}")
        return data


def measure(stack: Stack, port: int, ids: list[int], rng: random.Random) -> dict[str, list[float]]:
    """Latencies (ms) of mjq's list and fetch, and of the bare SELECTs, for the same random ids."""
    client = Client(port)
    batches = [rng.sample(ids, LIST_IDS) for _ in range(LIST_REQUESTS + WARMUP_REQUESTS)]
    singles = [rng.choice(ids) for _ in range(FETCH_REQUESTS + WARMUP_REQUESTS)]

    def list_call(batch: list[int]) -> Callable[[], object]:
        body = json.dumps({"ids": [str(i) for i in batch]}).encode()

        def call() -> None:
            found = json.loads(client.call("POST", "/mj/task/list-by-condition", body))
            if len(found) != len(batch):
                raise RuntimeError(f"list-by-condition found {len(found)} of {len(batch)}")
        return call

    def fetch_call(task_id: int) -> Callable[[], object]:
        return lambda: client.call("GET", f"/mj/task/{task_id}/fetch")

    conn = psycopg2.connect(stack.pg_url)
    conn.autocommit = True
    cur = conn.cursor()

    def select_many(batch: list[int]) -> Callable[[], object]:
        return lambda: (cur.execute("SELECT * FROM tasks WHERE id = ANY(%s)", (batch,)), cur.fetchall())

    def select_one(task_id: int) -> Callable[[], object]:
        return lambda: (cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)), cur.fetchall())

    try:
        w = WARMUP_REQUESTS
        lists, many = timed([(list_call(b), select_many(b)) for b in batches])
        fetches, one = timed([(fetch_call(i), select_one(i)) for i in singles])
        results = {"list": lists[w:], "select_many": many[w:], "fetch": fetches[w:], "select_one": one[w:]}
    finally:
        conn.close()
        client.conn.close()
    return results


def run(stack: Stack) -> Section:
    section = Section("P5", "list-by-condition and fetch on a large table")
    stack.reset()
    env = stack.env()
    rng = random.Random(5)
    first_ms = int(time.time() * 1000) - SPAN_MS
    loaded = 0
    for size in SIZES:
        t0 = time.monotonic()
        fill(stack, loaded + 1, size, first_ms)
        load_seconds = time.monotonic() - t0
        loaded = size
        with stack.engine.connect() as conn:
            ids = [row[0] for row in conn.exec_driver_sql("SELECT id FROM tasks")]
        web = stack.web(env)
        try:
            got = measure(stack, int(env["MJQ_PORT"]), ids, rng)
        finally:
            stack.stop(web)
        lp, fp = percentile(got["list"], 99), percentile(got["fetch"], 99)
        bl, bf = percentile(got["select_many"], 99), percentile(got["select_one"], 99)
        label = f"{size // 1000:,} k rows" if size < 1_000_000 else f"{size // 1_000_000} M rows"
        section.rows += [
            Row("P5", f"list-by-condition 100 ids p99, {label}", ms(lp), ms(bl), ratio(lp, bl, as_percent=False),
                f"≤ {TARGET_LIST_P99_MS:.0f} ms", lp <= TARGET_LIST_P99_MS),
            Row("P5", f"fetch p99, {label}", ms(fp), ms(bf), ratio(fp, bf, as_percent=False),
                f"≤ {TARGET_FETCH_P99_MS:.0f} ms", fp <= TARGET_FETCH_P99_MS),
        ]
        section.notes.append(
            f"{label}: loaded in {load_seconds:.0f} s; p50 list {ms(percentile(got['list'], 50))} (bare "
            f"{ms(percentile(got['select_many'], 50))}), fetch {ms(percentile(got['fetch'], 50))} (bare "
            f"{ms(percentile(got['select_one'], 50))})")
    stack.reset()
    section.notes += [
        f"{LIST_REQUESTS} list-by-condition requests of {LIST_IDS} random ids and {FETCH_REQUESTS} fetches of a "
        f"random id, after {WARMUP_REQUESTS} warm-up requests each; HTTP/1.1 keep-alive to gunicorn "
        "(config/gunicorn.py defaults), one request at a time; latency measured by the client (http.client)",
        "baseline: psycopg2 from the benchmark process, `SELECT * FROM tasks WHERE id = ANY(%s)` and "
        "`WHERE id = %s`, fetching every row; ratio = mjq p99 / bare p99",
    ]
    return section
