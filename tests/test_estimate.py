"""Before a job: how long it will take on this machine (jobs/estimate.py, POST /api/estimate), and the decoder a
studio job asks for (full or fast: TAESD), recorded with its job and shown with its images."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from localdiffusion.jobs.estimate import estimate, run_facts, work
from localdiffusion.jobs.queue import SQLiteJobQueue
from localdiffusion.recipe import Recipe
from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.db import Database
from localdiffusion.store.home import Home

from test_fast_cpu import build_taesd
from test_server_api import wait_done

FACTS = run_facts("abcdef0123", "torch", "cpu")


def finished(queue: SQLiteJobQueue, owner: int, recipe: Recipe, seconds: float, facts=FACTS) -> None:
    job = queue.submit(recipe, owner)
    claimed = queue.claim(timeout=0)
    assert claimed is not None and claimed.id == job.id
    queue.finish(job.id, {"images": [], "timings": {"load": 5.0, "generate": seconds, "total": seconds + 5}, "run": facts})


def test_work_counts_steps_pixels_images_and_guidance():
    base = Recipe(prompt="x", steps=10, width=512, height=512, cfg_scale=7)
    assert work(base) == 20  # CFG runs the negative prompt too
    assert work(base.model_copy(update={"cfg_scale": 1.0})) == 10
    assert work(base.model_copy(update={"width": 1024, "height": 1024, "batch_size": 2})) == 160


def test_estimate_fits_overhead_and_per_step_from_this_machines_runs(tmp_path):
    db = Database(tmp_path / "db.sqlite")
    queue, owner = SQLiteJobQueue(db), db.local_owner_id
    recipe = Recipe(prompt="x", steps=10, width=512, height=512, cfg_scale=1)
    assert estimate(db, recipe, FACTS).seconds is None  # no history: no guess

    finished(queue, owner, recipe.model_copy(update={"steps": 2}), 3.0)  # work 2 -> 1 s + 2 x 1 s
    finished(queue, owner, recipe.model_copy(update={"steps": 4}), 5.0)  # work 4
    finished(queue, owner, recipe.model_copy(update={"steps": 4}), 50.0, facts=run_facts("other", "torch", "cpu"))
    found = estimate(db, recipe, FACTS)
    assert (found.runs, found.basis) == (2, "same size")
    assert found.overhead == pytest.approx(1.0) and found.per_step == pytest.approx(1.0)
    assert found.seconds == pytest.approx(11.0)
    assert estimate(db, recipe.model_copy(update={"cfg_scale": 7}), FACTS).seconds == pytest.approx(21.0)

    big = estimate(db, recipe.model_copy(update={"width": 1024, "height": 1024}), FACTS)
    assert big.basis == "other sizes" and big.seconds == pytest.approx(41.0)
    assert estimate(db, recipe, run_facts("abcdef0123", "openvino", "cpu")).seconds is None  # another backend: its own history


@pytest.fixture(scope="module")
def speed_home(tmp_path_factory, sd1_folder) -> Home:
    """A tiny SD1 model, a copy of it named as SD-Turbo, and TAESD for SD1 in models/VAE-approx."""
    import shutil

    home = Home(tmp_path_factory.mktemp("speed-home")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    shutil.copytree(sd1_folder, home.model_dir("checkpoint") / "sd_turbo_tiny")
    build_taesd(1).save_pretrained(home.model_dir("vae-approx") / "taesd")
    return home


@pytest.fixture(scope="module")
def client(speed_home):
    with TestClient(create_app(Studio.open(speed_home)), headers={"X-Client-Id": "tab-a"}) as c:
        yield c


RECIPE = {"prompt": "a red lighthouse", "model": "tiny-sd1", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 5}


def test_models_report_the_fast_preset(client):
    models = {m["name"]: m for m in client.get("/api/models?kind=checkpoint").json()}
    assert models["tiny-sd1"]["preset"] is None
    preset = models["sd_turbo_tiny"]["preset"]
    assert preset["kind"] == "SD-Turbo" and preset["values"] == {"steps": 1, "cfg_scale": 1.0, "sampler_name": "Euler a",
                                                                "scheduler": "SGM Uniform"}


def test_the_estimate_comes_from_finished_jobs_and_names_the_preset(client):
    first = client.post("/api/estimate", json={**RECIPE, "model": "sd_turbo_tiny"})
    assert first.status_code == 200, first.text
    assert first.json()["seconds"] is None and first.json()["preset"]["kind"] == "SD-Turbo"

    for steps in (2, 4):
        job = client.post("/api/jobs", json={**RECIPE, "steps": steps}).json()
        assert wait_done(client, job["id"])["status"] == "done"
    found = client.post("/api/estimate", json={**RECIPE, "steps": 8}).json()
    assert found["seconds"] is not None and found["seconds"] > 0 and found["runs"] == 2 and found["basis"] == "same size"
    assert found["preset"] is None
    fewer = client.post("/api/estimate", json={**RECIPE, "steps": 1}).json()
    assert fewer["seconds"] <= found["seconds"]


def test_a_job_asks_for_the_fast_decoder_and_its_image_says_so(client):
    job = client.post("/api/jobs?vae_decode=fast", json=RECIPE).json()
    done = wait_done(client, job["id"])
    assert done["status"] == "done" and done["params"] == {"vae_decode": "fast"} and done["result"]["decoder"] == "fast"
    image = client.get(f"/api/images/{done['result']['images'][0]}").json()
    assert image["decoder"] == "fast"
    assert "TAESD" not in image["infotext"] and "decoder" not in image["recipe"]  # a run option, not the recipe

    plain = wait_done(client, client.post("/api/jobs", json=RECIPE).json()["id"])
    assert plain["result"]["decoder"] == "full"
    assert client.get(f"/api/images/{plain['result']['images'][0]}").json()["decoder"] == "full"


def test_a_bad_or_unavailable_decoder_is_refused_naming_the_field(client, tmp_path, sd1_folder):
    bad = client.post("/api/jobs?vae_decode=tiny", json=RECIPE)
    assert bad.status_code == 422 and bad.json()["field"] == "vae_decode" and "full" in bad.json()["detail"]

    home = Home(tmp_path / "bare").ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    with TestClient(create_app(Studio.open(home), start_worker=False), headers={"X-Client-Id": "tab-a"}) as bare:
        refused = bare.post("/api/jobs?vae_decode=fast", json=RECIPE)
        assert refused.status_code == 422 and refused.json()["field"] == "vae_decode" and "TAESD" in refused.json()["detail"]
