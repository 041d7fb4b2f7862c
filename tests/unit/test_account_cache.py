"""The API's cache of enabled accounts (AccountDirectory, app/services/accounts.py): a warm process places a job
without reading the accounts, and a change by any writer holds for every job submitted after it committed."""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event, func, select, update

from app.db import db
from app.models import ACCOUNT_VERSIONS, Account, Task


def statements_during(app, action: Callable[[], object]) -> list[str]:
    with app.app_context():
        engine = db.engine
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def submit(client, **body) -> dict:
    answer = client.post("/mj/submit/imagine", json={"prompt": "a red fox", **body}).get_json()
    assert answer["code"] in (1, 22), answer  # started, or queued behind the account's busy slots
    return answer


def placed_on(answer: dict) -> str:
    return answer["properties"]["discordInstanceId"]


def test_a_warm_api_process_places_a_job_without_reading_the_accounts(app, client):
    cold = statements_during(app, lambda: submit(client))
    warm = statements_during(app, lambda: submit(client))
    assert [s for s in cold if "FROM accounts" in s]
    assert [s for s in warm if "INSERT INTO tasks" in s] and not [s for s in warm if "FROM accounts" in s]


def test_an_account_another_writer_disabled_takes_no_job_submitted_after(client, session_factory):
    assert {placed_on(submit(client)) for _ in range(6)} <= {"sim-1", "sim-2"}  # the process's list is warm
    with session_factory() as session:  # another API process, a worker, or an operator's SQL
        session.execute(update(Account).where(Account.id == "sim-1").values(enable=False))
        session.commit()
    assert [placed_on(submit(client)) for _ in range(10)] == ["sim-2"] * 10
    with session_factory() as session:  # the placements rolled back left no row behind
        assert session.scalar(select(func.count()).select_from(Task)) == 16


def test_an_account_another_writer_added_takes_a_job_at_once(client, session_factory):
    submit(client)
    with session_factory() as session:
        template = session.get(Account, "sim-1")
        assert template is not None
        columns = {c.key: getattr(template, c.key) for c in Account.__table__.columns}
        session.add(Account(**{**columns, "id": "sim-9", "name": "Simulator 9"}))
        session.commit()
    assert placed_on(submit(client, accountFilter={"instanceId": "sim-9"})) == "sim-9"


def test_a_changed_slot_count_holds_for_the_next_submit(client, session_factory):
    """Admission reads slots and queue sizes from the same list: a queue made smaller is full at once."""
    submit(client, accountFilter={"instanceId": "sim-1"})
    with session_factory() as session:
        session.execute(update(Account).where(Account.id == "sim-1").values(fast_concurrency=1, queue_size=0))
        session.commit()
    refused = client.post("/mj/submit/imagine", json={"prompt": "a red fox", "accountFilter": {"instanceId": "sim-1"}})
    assert refused.get_json()["code"] == 23  # the queue is full: one slot, taken by the first job, no queue


def test_a_job_placed_again_keeps_only_its_own_pad_images(client, session_factory, images):
    from tests.unit.test_submit_imagine import png_data_url

    submit(client)
    with session_factory() as session:  # the next submit finds the list it was placed with outdated
        session.execute(update(Account).where(Account.id == "sim-2").values(weight=2))
        session.commit()
    task_id = submit(client, base64Array=[png_data_url()])["result"]
    stored = sorted(p.name for p in images.root.iterdir() if p.is_dir())
    assert stored == [task_id]  # the first placement's files went with its rolled-back row


def test_without_the_version_row_every_submit_reads_the_accounts_and_ops_are_told_once(app, client, session_factory,
                                                                                       caplog):
    with session_factory() as session:  # e.g. a restore that left the table empty
        session.execute(ACCOUNT_VERSIONS.delete())
        session.commit()
    with caplog.at_level("WARNING", logger="app.services.accounts"):
        reads = [statements_during(app, lambda: submit(client)) for _ in range(3)]
    assert all([s for s in statements if "FROM accounts" in s] for statements in reads)
    assert [r.getMessage() for r in caplog.records if "account_versions" in r.getMessage()] == [
        "account_versions has no row 1, so the enabled accounts are read at every submit; restore it with a version "
        "above any it held: INSERT INTO account_versions (id, version) VALUES (1, <epoch ms>)"]
