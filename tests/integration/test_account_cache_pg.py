"""The API's cache of enabled accounts on PostgreSQL: the statement trigger of migration 0005 reaches it."""
from __future__ import annotations

from sqlalchemy import text, update

from app.models import Account


def placed_on(api, **body) -> str:
    answer = api.post("/mj/submit/imagine", json={"prompt": "a red fox", **body}).get_json()
    assert answer["code"] in (1, 22), answer
    return answer["properties"]["discordInstanceId"]


def test_an_account_disabled_in_sql_takes_no_job_submitted_after(api, session_factory):
    assert {placed_on(api) for _ in range(4)} <= {"sim-1", "sim-2"}  # the process's list is warm
    try:
        with session_factory() as session:  # an operator's SQL: no mjq code runs
            session.execute(text("UPDATE accounts SET enable = false WHERE id = 'sim-1'"))
            session.commit()
        assert [placed_on(api) for _ in range(6)] == ["sim-2"] * 6
    finally:
        with session_factory() as session:
            session.execute(update(Account).where(Account.id == "sim-1").values(enable=True))
            session.commit()
    assert placed_on(api, accountFilter={"instanceId": "sim-1"}) == "sim-1"  # and enabled again at once
