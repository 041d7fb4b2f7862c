"""schemathesis over a Flask app's /openapi.json, shared by the unit (SQLite) and integration (PostgreSQL) runs."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from app import spec

IMAGE_PREFIXES = ("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/gif;base64,")

# Image fields get a real image often (so handlers past validation run) and near-misses otherwise.
schemathesis.openapi.format(spec.DATA_URL_FORMAT, st.one_of(
    st.just(spec.EXAMPLE_DATA_URL),
    st.builds(lambda prefix, data: prefix + data, st.sampled_from(IMAGE_PREFIXES),
              st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=", max_size=40)),
))


@dataclass
class FuzzReport:
    operations: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"schemathesis: {self.operations} operations, {sum(self.statuses.values())} requests, "
                f"statuses {dict(sorted(self.statuses.items()))}, {len(self.server_errors)} server errors, "
                f"{len(self.mismatches)} answers unlike the spec")


def existing_ids(app: Flask, headers: dict[str, str]) -> dict[str, str]:
    """Path parameter -> the id of a real object (a task, an API key, an account), made here."""
    client = app.test_client()
    task = client.post("/mj/submit/imagine", json={"prompt": "fuzz"}, headers=headers).get_json()
    key = client.post("/mj/admin/keys", json={"name": "fuzz"}, headers=headers).get_json()
    accounts = client.get("/mj/account/list", headers=headers).get_json()
    assert task["code"] == 1 and key["code"] == 1 and accounts["result"], (task, key, accounts)
    return {"taskId": task["result"], "keyId": key["result"]["id"], "accountId": accounts["result"][0]["id"]}


def fuzz(app: Flask, secret: str, examples_per_mode: int, derandomize: bool = True) -> FuzzReport:
    """Call every operation of the app's /openapi.json with `examples_per_mode` valid and as many invalid
    inputs, sending `secret` as mj-api-secret; record server errors and answers unlike the document.

    Half the cases name existing objects in their path (a task, a key, an account), so the handlers
    run past the lookup rather than answering 404.
    """
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    headers = {"mj-api-secret": secret}
    known = existing_ids(app, headers)
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises here: the document is broken
        report.operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), existing=st.booleans())
            @hypothesis_settings(max_examples=examples_per_mode, deadline=None, database=None,
                                 derandomize=derandomize, suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case, existing: bool) -> None:
                if existing and case.path_parameters:
                    case.path_parameters = {k: known.get(k, v) for k, v in case.path_parameters.items()}
                response = case.call(headers=headers)
                report.statuses[response.status_code] += 1
                where = f"{case.method} {case.formatted_path} {case.query or ''} {case.body!r:.300}"
                if response.status_code >= 500:
                    report.server_errors.append(f"{where} -> {response.status_code} {response.text[:300]}")
                    return
                try:
                    case.validate_response(response, checks=[response_schema_conformance, status_code_conformance],
                                           headers=headers)
                except FailureGroup as exc:  # the answer is not what the document says
                    report.mismatches.append(f"{where} -> {response.status_code}: {exc}"[:800])

            try:
                run()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid input to make.
                assert mode == GenerationMode.NEGATIVE, operation.label
    return report
