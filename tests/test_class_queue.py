"""A class on one server: limits and allowed models refused before queueing, the shared queue's order and
its view, and the facilitator's pause, resume, front, cancel, pins and demo jobs (each in the audit log).

Callers are put in each request's scope as authentication will (`CALLER_SCOPE_KEY`), named by a test header.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from localdiffusion.server.app import create_app
from localdiffusion.server.deps import CALLER_SCOPE_KEY, Caller
from localdiffusion.server.studio import Studio

from test_server_api import RECIPE, linked_home

USER_HEADER = b"x-test-user"
ROLES = {"ann": "participant", "ben": "participant", "frozen": "participant", "teacher": "facilitator"}
LIMITS = {"participant": {"max_queued": 2, "max_images_per_job": 2, "max_pixels": 96 * 96, "max_steps": 10,
                          "gpu_seconds_per_hour": None, "may_train": False, "max_train_steps": 500}, "models": None}


class AsUser:
    """The app, with the Caller that authentication would set, named by the X-Test-User header."""

    def __init__(self, app, studio: Studio) -> None:
        self.app, self.studio = app, studio

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            name = dict(scope["headers"]).get(USER_HEADER, b"").decode()
            if name:
                scope[CALLER_SCOPE_KEY] = Caller(self.studio.db.ensure_owner(name), name, ROLES[name], frozen=name == "frozen")
        await self.app(scope, receive, send)


def as_user(name: str) -> dict[str, str]:
    return {"X-Test-User": name, "X-Client-Id": f"tab-{name}"}


ANN, BEN, TEACHER = as_user("ann"), as_user("ben"), as_user("teacher")


def class_client(studio: Studio, start_worker: bool) -> TestClient:
    return TestClient(AsUser(create_app(studio, start_worker=start_worker), studio))


@pytest.fixture()
def studio(tmp_path, model_home) -> Studio:
    return Studio.open(linked_home(tmp_path / "home", model_home))


@pytest.fixture()
def idle(studio):
    """A class server whose worker does not run, so that jobs stay queued."""
    with class_client(studio, start_worker=False) as c:
        yield c


def job(client: TestClient, headers: dict, **changes):
    return client.post("/api/jobs", json={**RECIPE, **changes}, headers=headers)


def queued(studio: Studio) -> int:
    return studio.queue.counts()["queued"]


# --- limits ------------------------------------------------------------------------------------------


def test_jobs_over_a_limit_are_refused_before_they_are_queued(idle, studio):
    assert idle.put("/api/class/limits", json=LIMITS, headers=ANN).status_code == 403
    assert idle.put("/api/class/limits", json=LIMITS, headers=TEACHER).status_code == 200
    assert idle.get("/api/class/limits", headers=ANN).json() == LIMITS
    refusals = [
        (job(idle, ANN, steps=30), 422, "steps", "at most 10"),
        (job(idle, ANN, batch_size=3), 422, "batch_size", "at most 2"),
        (job(idle, ANN, width=128, height=128), 422, "width", "at most 9,216 pixels"),
        (job(idle, ANN, enable_hr=True, hr_scale=2.0), 422, "hr_scale", "128x128"),
        (job(idle, as_user("frozen")), 403, None, "frozen"),
    ]
    for response, status, field, words in refusals:
        assert response.status_code == status and response.json()["field"] == field, response.text
        assert words in response.json()["detail"]
    assert queued(studio) == 0  # nothing reached the queue
    assert job(idle, ANN).status_code == 201 and job(idle, ANN).status_code == 201
    full = job(idle, ANN)
    assert full.status_code == 429 and "2 jobs waiting or running" in full.json()["detail"]
    assert "cancel one" in full.json()["detail"]
    assert queued(studio) == 2
    assert job(idle, BEN).status_code == 201  # each participant has their own limits
    assert job(idle, TEACHER, steps=30, batch_size=3).status_code == 201  # a facilitator has none
    assert job(idle, as_user("frozen")).status_code == 403


def test_a_spent_hour_is_refused_with_when_to_try_again(idle, studio):
    limits = {**LIMITS, "participant": {**LIMITS["participant"], "max_queued": None, "gpu_seconds_per_hour": 30}}
    idle.put("/api/class/limits", json=limits, headers=TEACHER)
    first = job(idle, ANN).json()
    studio.queue.claim(timeout=0)
    studio.queue.record_run(first["id"], "cpu", 45.0)  # it took 45 of ann's 30 seconds
    studio.queue.finish(first["id"], {})
    spent = job(idle, ANN)
    assert spent.status_code == 429 and "30 GPU-seconds for this hour" in spent.json()["detail"]
    assert "try again in about 60 minutes" in spent.json()["detail"]
    assert queued(studio) == 0 and job(idle, BEN).status_code == 201


def test_limits_refuse_every_way_of_queueing(idle, studio):
    idle.put("/api/class/limits", json=LIMITS, headers=TEACHER)
    compare = idle.post("/api/compare", json={"recipe": RECIPE, "x": "seed=1,2,3", "y": "steps=2"}, headers=ANN)
    assert compare.status_code == 422 and "3 comparison cells" in compare.json()["detail"]
    a1111 = idle.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 40, "width": 64, "height": 64}, headers=ANN)
    assert a1111.status_code == 422 and "40 steps" in a1111.json()["detail"]
    assert queued(studio) == 0


# --- allowed models ------------------------------------------------------------------------------------


def test_participants_see_and_use_only_the_allowed_models(idle, studio):
    assert idle.put("/api/class/limits", json={**LIMITS, "models": ["no-such-model"]}, headers=TEACHER).status_code == 404
    assert idle.put("/api/class/limits", json={**LIMITS, "models": ["TINY-SD1"]}, headers=TEACHER).json()["models"] == ["tiny-sd1"]
    mine = [m["name"] for m in idle.get("/api/models?kind=checkpoint", headers=ANN).json()]
    assert mine == ["tiny-sd1"]
    assert len(idle.get("/api/models?kind=checkpoint", headers=TEACHER).json()) > 1
    assert [m["model_name"] for m in idle.get("/sdapi/v1/sd-models", headers=ANN).json()] == ["tiny-sd1"]
    hidden = job(idle, ANN, model="tiny-sdxl")
    missing = job(idle, ANN, model="tiny-sdxx")
    assert hidden.status_code == missing.status_code == 404 and hidden.json()["field"] == "model"
    assert "No checkpoint named 'tiny-sdxl'" in hidden.json()["detail"] and "tiny-sdxl" not in missing.json()["detail"]
    assert "sd2" not in hidden.json()["detail"]  # no other model is named
    assert queued(studio) == 0
    default = job(idle, ANN, model=None)
    assert default.status_code == 201 and default.json()["recipe"]["model"] == "tiny-sd1"
    # A comparison whose Model axis names a model outside the allowed ones: the same 404, before queueing.
    compare = {"recipe": {"prompt": "x", "steps": 2, "width": 64, "height": 64, "model": "tiny-sd1"},
               "x": "model=tiny-sd1,tiny-sdxl", "y": "seed=1,2"}
    refused = idle.post("/api/compare", json=compare, headers=ANN)
    assert refused.status_code == 422 and refused.json()["field"] == "x" and "tiny-sdxl" in refused.json()["detail"]
    # Admission itself checks the axis too (every way into the queue goes through it).
    from localdiffusion.errors import ModelNotFound
    from localdiffusion.recipe import Recipe
    from localdiffusion.server.admission import JobRequest, admit
    from localdiffusion.server.deps import Caller

    ann = Caller(studio.db.ensure_owner("ann"), "ann", "participant")
    request = JobRequest(Recipe(prompt="x", steps=2, width=64, height=64, model="tiny-sd1"), "compare",
                         {"x": compare["x"], "y": compare["y"]})
    with pytest.raises(ModelNotFound):
        admit(studio, ann, [request])
    assert job(idle, TEACHER, model="tiny-sdxl", width=None, height=None).status_code == 201


# --- the queue and the facilitator ----------------------------------------------------------------------


def test_the_queue_shows_everyone_the_order_and_only_their_own_names(idle, studio):
    mine = job(idle, ANN).json()
    job(idle, BEN)
    seen = idle.get("/api/queue", headers=ANN).json()
    assert [e["status"] for e in seen] == ["queued", "queued"] and [e["position"] for e in seen] == [0, 1]
    own, other = seen
    assert own["mine"] and own["owner"] == "ann" and own["id"] == mine["id"] and own["eta_seconds"] == 0
    assert not other["mine"] and other["owner"] is None and "eta_seconds" not in other and "id" not in other
    assert set(other) == {"position", "mine", "owner", "kind", "estimated_seconds", "status"}
    assert [e["owner"] for e in idle.get("/api/queue", headers=TEACHER).json()] == ["ann", "ben"]
    ben_view = idle.get("/api/queue", headers=BEN).json()
    assert ben_view[1]["eta_seconds"] == pytest.approx(own["estimated_seconds"], abs=0.1)
    assert idle.get(f"/api/jobs/{mine['id']}", headers=ANN).json()["eta_seconds"] == 0


def test_the_facilitator_pauses_resumes_fronts_and_cancels_with_an_audit(idle, studio):
    for path in ("/api/class/queue/pause", "/api/class/queue/resume"):
        assert idle.post(path, headers=ANN).status_code == 403
    assert idle.post("/api/class/queue/pause", headers=TEACHER).json()["paused"] is True
    assert studio.queue.paused and studio.queue.claim(timeout=0) is None
    first, second = job(idle, ANN).json(), job(idle, ANN).json()
    assert idle.get(f"/api/jobs/{first['id']}", headers=ANN).json()["queue_paused"] is True
    assert idle.post(f"/api/jobs/{second['id']}/front", headers=ANN).status_code == 403
    fronted = idle.post(f"/api/jobs/{second['id']}/front", headers=TEACHER)
    assert fronted.status_code == 200 and fronted.json()["position"] == 0
    assert idle.post("/api/jobs/424242/front", headers=TEACHER).status_code == 404
    assert idle.delete(f"/api/jobs/{first['id']}", headers=BEN).status_code == 404  # not ben's: as if it did not exist
    cancelled = idle.delete(f"/api/jobs/{first['id']}", headers=TEACHER)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert idle.post(f"/api/jobs/{first['id']}/front", headers=TEACHER).status_code == 409
    assert idle.post("/api/class/queue/resume", headers=TEACHER).json()["paused"] is False
    assert studio.queue.claim(timeout=0).id == second["id"]
    actions = [(e.actor, e.action, e.target) for e in reversed(studio.db.audit_log())]
    assert actions == [("teacher", "queue.pause", ""), ("teacher", "queue.front", f"job {second['id']}"),
                       ("teacher", "cancel", f"job {first['id']}"), ("teacher", "queue.resume", "")]


def test_demo_jobs_are_a_facilitators_and_run_first(idle, studio):
    job(idle, ANN)
    assert idle.post("/api/jobs?demo=true", json=RECIPE, headers=ANN).status_code == 403
    demo = idle.post("/api/jobs?demo=true", json=RECIPE, headers=TEACHER).json()
    assert demo["demo"] and demo["position"] == 0


def test_pinned_models_stay_in_the_engines_cache(idle, studio):
    assert idle.put("/api/class/pinned", json={"models": ["tiny-sd1"]}, headers=ANN).status_code == 403
    assert idle.put("/api/class/pinned", json={"models": ["nope"]}, headers=TEACHER).status_code == 404
    pinned = idle.put("/api/class/pinned", json={"models": ["tiny-sd1"]}, headers=TEACHER).json()
    assert pinned == {"models": ["tiny-sd1"], "loaded": []}
    info = studio.library.get("tiny-sd1")
    assert studio.engine.models.cache.pinned == {studio.engine.models.pipeline_key(info)}
    assert studio.db.audit_log()[0].action == "pin"


def test_the_paused_queue_runs_the_second_persons_job_second_at_the_latest(studio):
    """Through the API with the worker running: ann queues 4, ben 1 while paused; ben's runs first or second."""
    with class_client(studio, start_worker=True) as client:
        client.post("/api/class/queue/pause", headers=TEACHER)
        ann = [job(client, ANN, seed=i).json()["id"] for i in range(4)]
        ben = job(client, BEN).json()["id"]
        time.sleep(0.3)
        assert studio.queue.counts() == {"queued": 5, "running": 0}  # nothing starts while paused
        client.post("/api/class/queue/resume", headers=TEACHER)
        deadline = time.monotonic() + 120
        while studio.queue.counts()["queued"] + studio.queue.counts()["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        jobs = [studio.queue.get(i) for i in ann + [ben]]
    assert all(j.status == "done" for j in jobs), [j.error for j in jobs]
    order = [j.id for j in sorted(jobs, key=lambda j: j.started_at)]
    assert order.index(ben) <= 1, order
    assert all(j.device == "cpu" and j.gpu_seconds > 0 for j in jobs)
    images = [studio.db.get_image(j.result["images"][0]) for j in jobs]
    assert {i.owner_id for i in images[:4]} == {jobs[0].owner_id} and images[4].owner_id == jobs[4].owner_id != jobs[0].owner_id
