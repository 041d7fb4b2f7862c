"""The action walk against the `make run` stack: every step under /mj, and under /mj-relax/mj
every job stays on the normal (RELAX) queue."""
from __future__ import annotations

import re

import pytest

from tests.e2e.action_walk import STEPS, walk_in_parallel
from tests.processes import make_run_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with make_run_stack("make-run-walk", tmp_path_factory.mktemp("walk"), {
            "MJQ_API_SECRET": "S", "MJQ_SIM_JOB_SECONDS": "1", "MJQ_WORKER_CONCURRENCY": "20"}) as stack:
        yield stack


def test_the_walk_passes_under_mj_and_under_mj_relax_on_the_normal_queue_only(stack):
    base, proc = stack
    walkers, errors = walk_in_parallel(base, "S")
    assert errors == {}
    assert all(sorted(w.names) == sorted(STEPS) for w in walkers.values())
    output = proc.output()
    relax_ids = set(walkers["/mj-relax/mj"].task_ids)
    ran = {m[1]: m[2] for m in re.finditer(r"task (\d+) \w+ ran on queue (\S+)", output)}
    assert relax_ids and {ran.get(i) for i in relax_ids} == {"mj.normal"}
    assert {ran.get(i) for i in set(walkers["/mj"].task_ids)} == {"mj.fast"}
