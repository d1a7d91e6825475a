"""Schemathesis over both APIs (/api and /sdapi/v1): no request may get a 5xx or an answer the schema does not describe.

The studio has the tiny models (so requests get past the model lookup) and a worker that never runs:
studio jobs stay queued, and A1111 generation requests, which wait for their job, are released by a
thread that cancels the queued jobs of the A1111 API. Each operation gets a bounded number of examples, so that the
whole run takes a few minutes on two cores.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the schema fuzz needs schemathesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, settings  # noqa: E402  (hypothesis comes with schemathesis)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from localdiffusion.jobs.worker import cancel_job  # noqa: E402
from localdiffusion.server.a1111.jobs import CLIENT_PREFIX  # noqa: E402
from localdiffusion.server.app import create_app  # noqa: E402
from localdiffusion.server.studio import Studio  # noqa: E402
from localdiffusion.store.home import Home  # noqa: E402

from test_server_api import linked_home  # noqa: E402

EXAMPLES_PER_OPERATION = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _cancel_a1111_jobs(studio: Studio, stop: threading.Event) -> None:
    """Release the A1111 requests that wait for their job; the studio's own jobs stay queued (no race with its routes)."""
    while not stop.wait(0.05):
        for job in studio.queue.list(owner_id=studio.owner_id, limit=200):
            if job.status == "queued" and job.client.startswith(CLIENT_PREFIX):
                cancel_job(studio.queue, studio.events, job.id)


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, model_home) -> Iterator:
    studio = Studio.open(linked_home(tmp_path_factory.mktemp("fuzz-home"), model_home))
    app = create_app(studio, start_worker=False)
    stop = threading.Event()
    canceller = threading.Thread(target=_cancel_a1111_jobs, args=(studio, stop), name="fuzz-canceller", daemon=True)
    canceller.start()
    yield app
    stop.set()
    canceller.join(5)


def described_schema() -> dict:
    """The schema the server publishes (it does not depend on the home's content)."""
    with tempfile.TemporaryDirectory() as folder:
        return create_app(Studio.open(Home(folder).ensure()), start_worker=False).openapi()


schema = schemathesis.openapi.from_dict(described_schema())


@pytest.mark.timeout(900)
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_schema(case, fuzzed_app):
    case.call_and_validate(app=fuzzed_app, checks=CHECKS)
