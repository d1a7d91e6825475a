"""The `ray` executor on a real local Ray cluster: two CPU worker actors (a third added later) running tiny
models, the server's scheduler, store and event bus in this process. The cluster and the server start once for
the module (Ray is slow to start on two cores); the tests run in order and the kill comes near the end.
Select them alone with `-m ray`."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from test_jobs import wait_until

ray = pytest.importorskip("ray")

from fastapi.testclient import TestClient  # noqa: E402

from localdiffusion.jobs.executor import Scheduler  # noqa: E402
from localdiffusion.jobs.ray_executor import HomeEngine, RayExecutor  # noqa: E402
from localdiffusion.jobs.results import ResultStore  # noqa: E402
from localdiffusion.jobs.worker import cancel_job  # noqa: E402
from localdiffusion.recipe import Recipe  # noqa: E402
from localdiffusion.server.app import create_app  # noqa: E402
from localdiffusion.server.studio import Studio, checkpoint_of  # noqa: E402
from localdiffusion.store.home import Home  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

RECIPE = Recipe(prompt="a cat", seed=1, steps=3, width=64, height=64, sampler_name="Euler", model="tiny-sd1")


def models_home(root, sd1_folder, names) -> Home:
    """A home whose checkpoints are `names`: tiny-sd1, and tiny-sd1-b, a copy of it (a second model of its own)."""
    home = Home(root).ensure()
    copy = sd1_folder.parent / "tiny-sd1-b"
    if "tiny-sd1-b" in names and not copy.exists():
        shutil.copytree(sd1_folder, copy)
    for name in names:
        (home.model_dir("checkpoint") / name).symlink_to(sd1_folder if name == "tiny-sd1" else copy, target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd1_folder):
    """The studio with a Ray executor of two CPU workers whose homes hold tiny-sd1 and tiny-sd1-b."""
    root = tmp_path_factory.mktemp("ray")
    home = models_home(root / "server", sd1_folder, ["tiny-sd1", "tiny-sd1-b"])
    workers_home = models_home(root / "workers", sd1_folder, ["tiny-sd1", "tiny-sd1-b"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    studio = Studio.open(home)
    executor = RayExecutor(cpu_workers=2, make_engine=HomeEngine(str(workers_home.root)), cpu_worker_cpus=0, gpu_workers=False)
    studio.scheduler = Scheduler(studio.queue, studio.events, ResultStore(home.outputs, studio.db), executor,
                                 home_root=home.root, model_of=lambda job: checkpoint_of(studio.library, job))
    try:
        with TestClient(create_app(studio)) as client:
            wait_until(lambda: len(client.get("/api/workers").json()) == 2, "two workers did not join", 180)
            yield studio, executor, client, root, sd1_folder
    finally:
        ray.shutdown()


def finished(studio, job_id, timeout=120.0):
    return wait_until(lambda: (j := studio.queue.get(job_id)).finished and j, f"job {job_id} did not finish", timeout)


def started_on(events, job_id) -> list[str]:
    return [e.data["worker"] for e in list(events.queue) if e.job_id == job_id and e.type == "started"]


def test_two_users_jobs_run_on_both_workers_and_each_image_is_stored_once_with_its_owner(server):
    studio, _, client, _, _ = server
    ann, ben = studio.db.ensure_owner("ann"), studio.db.ensure_owner("ben")
    _, events = studio.events.subscribe_queue()
    jobs = [studio.queue.submit(RECIPE.model_copy(update={"seed": i}), owner_id=owner) for i, owner in enumerate([ann, ben] * 3)]
    both_busy = []

    def all_done():
        listed = client.get("/api/workers").json()
        if all(w["job"] is not None for w in listed):
            both_busy.append(True)
        return all(studio.queue.get(j.id).finished for j in jobs)

    wait_until(all_done, "the jobs did not finish", 180)
    done = [studio.queue.get(j.id) for j in jobs]
    assert all(j.status == "done" for j in done), [j.error for j in done]
    assert both_busy, "the two workers never ran jobs at the same time"
    assert len({w for j in jobs for w in started_on(events, j.id)}) == 2
    for owner in (ann, ben):
        rows = studio.db.list_images(owner, limit=100)
        mine = [i for j in done if j.owner_id == owner for i in j.result["images"]]
        assert sorted(r.id for r in rows) == sorted(mine) and len(mine) == 3
        assert all(os.path.exists(r.path) for r in rows)
    assert len({r.path for o in (ann, ben) for r in studio.db.list_images(o, limit=100)}) == 6
    listed = client.get("/api/workers").json()
    assert {tuple(sorted(w)) for w in listed} == {("device", "gpu_seconds", "id", "job", "jobs_done", "last_seen", "models", "node", "pid")}
    assert sum(w["jobs_done"] for w in listed) == 6 and all(w["models"] == ["tiny-sd1"] for w in listed)


def test_a1111_clients_and_other_job_kinds_work_unchanged_on_ray_workers(server):
    """What works with the local worker works with Ray's: an A1111 client's txt2img, and a compare grid (a job
    kind with files of its own), each stored by the server."""
    import base64
    import io

    from PIL import Image

    _, _, client, _, _ = server
    a1111 = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 2, "width": 64, "height": 64,
                                                   "sampler_name": "Euler", "seed": 5})
    assert a1111.status_code == 200, a1111.text
    picture = Image.open(io.BytesIO(base64.b64decode(a1111.json()["images"][0])))
    assert picture.size == (64, 64) and "Seed: 5" in picture.text["parameters"]
    answer = client.post("/api/compare", json={"recipe": RECIPE.model_dump(mode="json") | {"steps": 2}, "x": "cfg_scale=3,9", "y": "seed=1,2"})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    done = wait_until(lambda: (j := client.get(f"/api/jobs/{job['id']}").json())["status"] in ("done", "failed") and j,
                      "the compare job did not finish", 180)
    assert done["status"] == "done", done.get("error")
    assert "grid" in done["result"], done["result"]
    grid = client.get(f"/api/jobs/{job['id']}/files/{done['result']['grid']}")
    assert grid.status_code == 200 and Image.open(io.BytesIO(grid.content)).width > 2 * 64


def test_cancel_of_a_job_running_on_a_remote_worker(server):
    studio, _, _, _, _ = server
    _, events = studio.events.subscribe_queue()
    job = studio.queue.submit(RECIPE.model_copy(update={"steps": 150, "n_iter": 4}), owner_id=studio.owner_id)
    wait_until(lambda: any(e.type == "step" and e.job_id == job.id for e in list(events.queue)), "no step came", 120)
    assert cancel_job(studio.queue, studio.events, job.id)
    ended = finished(studio, job.id)
    assert ended.status == "cancelled" and not ended.result.get("images")
    progress = [(e.data["iteration"], e.data["step"]) for e in list(events.queue) if e.type == "step" and e.job_id == job.id]
    assert max(progress) < (3, 150)  # it stopped long before its last step


def test_affinity_keeps_each_model_on_one_worker(server):
    """With two models and two workers, alternating jobs do not load a model on every job."""
    studio, executor, _, _, _ = server
    before = {w.id: studio.scheduler.slot(w.id).loads for w in executor.workers.values()}
    for model in ["tiny-sd1-b", "tiny-sd1"] * 3:
        job = studio.queue.submit(RECIPE.model_copy(update={"model": model}), owner_id=studio.owner_id)
        assert finished(studio, job.id).status == "done", finished(studio, job.id).error
    loads = sum(studio.scheduler.slot(w).loads - n for w, n in before.items())
    assert loads <= 1  # tiny-sd1-b loads once, on one worker; every other job finds its model loaded


def test_the_fair_order_holds_with_two_workers(server):
    studio, _, _, _, _ = server
    ann, ben = studio.db.ensure_owner("ann"), studio.db.ensure_owner("ben")
    _, events = studio.events.subscribe_queue()
    studio.queue.pause()
    jobs = [studio.queue.submit(RECIPE, owner_id=ann) for _ in range(4)] + [studio.queue.submit(RECIPE, owner_id=ben)]
    studio.queue.resume()
    for job in jobs:
        assert finished(studio, job.id).status == "done"
    dispatched = [e.job_id for e in list(events.queue) if e.type == "started"]
    assert jobs[-1].id in dispatched[:2]  # ben's one job starts with the first two, not after ann's four


def test_a_worker_added_while_jobs_wait_takes_jobs_and_one_without_a_model_is_not_given_it(server):
    studio, executor, client, root, sd1_folder = server
    only_sd1 = models_home(root / "third", sd1_folder, ["tiny-sd1"])
    _, events = studio.events.subscribe_queue()
    studio.queue.pause()
    jobs = [studio.queue.submit(RECIPE.model_copy(update={"model": model, "steps": 10}), owner_id=studio.owner_id)
            for model in ["tiny-sd1", "tiny-sd1-b"] * 3]
    studio.queue.resume()
    added = executor.add_worker(make_engine=HomeEngine(str(only_sd1.root)))
    assert added.available == {"tiny-sd1"}
    for job in jobs:
        assert finished(studio, job.id).status == "done"
    ran = {job.id: started_on(events, job.id) for job in jobs}
    assert len(client.get("/api/workers").json()) == 3
    assert all(added.id not in ran[j.id] for j in jobs if j.recipe.model == "tiny-sd1-b")
    more = [studio.queue.submit(RECIPE.model_copy(update={"steps": 10}), owner_id=studio.owner_id) for _ in range(6)]
    for job in more:
        finished(studio, job.id)
    assert any(added.id in started_on(events, j.id) for j in [*jobs, *more]), "the added worker never took a job"


def test_a_killed_worker_loses_its_job_to_another_which_completes_it_once(server):
    studio, executor, client, _, _ = server
    _, events = studio.events.subscribe_queue()
    job = studio.queue.submit(RECIPE.model_copy(update={"steps": 150, "seed": 77}), owner_id=studio.owner_id)
    wait_until(lambda: any(e.type == "step" and e.job_id == job.id for e in list(events.queue)), "no step came", 120)
    [victim] = [w for w in client.get("/api/workers").json() if w["job"] == job.id]
    os.kill(victim["pid"], signal.SIGKILL)
    done = finished(studio, job.id, 240)
    assert done.status == "done" and done.attempts == 2, (done.status, done.error)
    workers = started_on(events, job.id)
    assert len(workers) == 2 and workers[0] == victim["id"] and workers[1] != victim["id"]
    assert len(done.result["images"]) == 1
    assert [r.id for r in studio.db.list_images(studio.owner_id, limit=1000) if json.loads(r.recipe_json)["seed"] == 77] \
        == done.result["images"]  # one image: the dead worker's made none
    assert victim["id"] not in [w["id"] for w in client.get("/api/workers").json()]  # the console shows it gone
    assert [e.type for e in list(events.queue) if e.job_id == job.id].count("done") == 1
