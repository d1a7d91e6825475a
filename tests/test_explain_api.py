"""The explanation and parameter-guide API on a tiny model: explain jobs for gallery images (queued,
reused, their files served owner- and path-checked), guide cards for every field the studio shows,
the 'Try it on my prompt' comparison, and the Compare page's own X/Y/Z sweeps."""

from __future__ import annotations

import time
import xml.dom.minidom
from io import BytesIO

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from localdiffusion.explain.axes import FIELDS, parse_axis
from localdiffusion.explain.parameters import CARDS, TEXTS, try_axis
from localdiffusion.recipe import Recipe
from localdiffusion.server.app import create_app
from localdiffusion.server.explain import try_recipe
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

STEPS = 4
RECIPE = {"prompt": "a red fox, snowy forest", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": STEPS,
          "sampler_name": "Euler", "seed": 5, "cfg_scale": 7.0, "model": "tiny-sd1"}
# The Recipe fields the Generate page shows (web/js/generate.js); each needs a guide card.
UI_FIELDS = ["prompt", "negative_prompt", "model", "width", "height", "steps", "cfg_scale", "sampler_name", "scheduler",
             "seed", "subseed", "subseed_strength", "batch_size", "n_iter", "denoising_strength", "clip_skip", "enable_hr",
             "hr_scale", "hr_upscaler", "hr_second_pass_steps", "mask_blur", "inpainting_fill", "inpaint_full_res",
             "inpaint_full_res_padding", "outpaint"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, sd1_folder) -> Home:
    home = Home(tmp_path_factory.mktemp("explain-home")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def client(home):
    with TestClient(create_app(Studio.open(home)), headers={"X-Client-Id": "tab-a"}) as c:
        yield c


def wait_done(client: TestClient, job_id: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            assert job["status"] == "done", job
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def image_id(client) -> int:
    job = client.post("/api/jobs", json=RECIPE).json()
    return wait_done(client, job["id"])["result"]["images"][0]


@pytest.fixture(scope="module")
def explanation(client, image_id) -> dict:
    answer = client.post(f"/api/images/{image_id}/explain", json={"cfg_steps": [2]})
    assert answer.status_code == 202, answer.text
    job = answer.json()["job"]
    assert job["kind"] == "explain" and job["params"]["image_id"] == image_id
    done = wait_done(client, job["id"])
    assert done["result"]["reused"] is False and "explain.json" in done["result"]["files"]
    return client.get(f"/api/images/{image_id}/explanation").json()


def test_explanation_has_a_frame_per_step_and_a_heatmap_per_word(explanation, image_id):
    steps = explanation["timeline"]["steps"]
    assert len(steps) == STEPS and all(s["frame"] in explanation["files"] for s in steps)
    assert explanation["timeline"]["explanation"]
    assert [w["word"] for w in explanation["attention"]["prompt"]] == ["a", "red", "fox", "snowy", "forest"]
    assert [w["word"] for w in explanation["attention"]["negative"]] == ["blurry"]
    assert all({"file", "early", "late"} <= set(w) for w in explanation["attention"]["prompt"])
    assert [v["step"] for v in explanation["cfg"]] == [2] and "multiplied by the scale" in explanation["cfg"][0]["caption"]
    assert explanation["urls"]["image.png"] == f"/api/images/{image_id}/explanation/files/image.png"


def test_every_listed_file_is_served(client, explanation):
    for name, url in explanation["urls"].items():
        answer = client.get(url)
        assert answer.status_code == 200, name
        if name.endswith(".png"):
            assert answer.headers["content-type"] == "image/png"
            Image.open(BytesIO(answer.content)).verify()


def test_the_explained_image_is_the_gallery_image(client, explanation, image_id):
    original = Image.open(BytesIO(client.get(f"/api/images/{image_id}/file").content))
    again = Image.open(BytesIO(client.get(explanation["urls"]["image.png"]).content))
    assert original.tobytes() == again.tobytes()


def test_a_second_request_reuses_the_finished_explanation(client, explanation, image_id):
    answer = client.post(f"/api/images/{image_id}/explain", json={})
    assert answer.status_code == 200
    assert answer.json()["job"] is None and answer.json()["explanation"]["files"] == explanation["files"]


def test_files_outside_the_list_are_refused(client, explanation, image_id):
    base = f"/api/images/{image_id}/explanation/files/"
    for name in ("..%2F..%2F..%2Fdb.sqlite", "missing.png", "%2Fetc%2Fpasswd"):
        answer = client.get(base + name)
        assert answer.status_code == 404 and answer.json()["detail"].endswith(".")


def test_unknown_and_foreign_images_are_404_with_a_sentence(client, home, image_id, explanation):
    for path in ("/api/images/9999/explanation", "/api/images/9999/explanation/files/image.png"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.json()["detail"] == "There is no image 9999."
    assert client.post("/api/images/9999/explain", json={}).status_code == 404
    studio: Studio = client.app.state.studio
    other = studio.db.ensure_owner("someone-else")
    with studio.db.transaction() as conn:
        conn.execute("UPDATE images SET owner_id = ? WHERE id = ?", (other, image_id))
    try:
        assert client.get(f"/api/images/{image_id}/explanation").status_code == 404
        assert client.get(explanation["urls"]["image.png"]).status_code == 404
    finally:
        with studio.db.transaction() as conn:
            conn.execute("UPDATE images SET owner_id = ? WHERE id = ?", (studio.owner_id, image_id))


def test_no_explanation_yet_is_a_404_sentence(client):
    job = client.post("/api/jobs", json={**RECIPE, "seed": 6}).json()
    fresh = wait_done(client, job["id"])["result"]["images"][0]
    answer = client.get(f"/api/images/{fresh}/explanation")
    assert answer.status_code == 404 and "no explanation yet" in answer.json()["detail"]


def test_every_field_the_studio_shows_has_a_guide_card(client):
    table = client.get("/api/parameters").json()
    assert set(UI_FIELDS) <= set(table) and set(TEXTS) == set(CARDS)
    for name in UI_FIELDS:
        assert name in Recipe.model_fields
        card = table[name]["card"]
        assert card["sentence"].endswith(".") and card["typical"], name
        assert card["try_values"] or card["why_not"], name


def test_a_card_with_its_illustration(client):
    card = client.get("/api/parameters/cfg_scale").json()
    assert card["label"] == "CFG scale" and card["can_try"] and card["card"]["try_values"] == ["2", "7", "14"]
    svg = client.get(card["illustration_url"])
    assert svg.headers["content-type"].startswith("image/svg+xml")
    xml.dom.minidom.parseString(svg.text)
    for name in CARDS:
        xml.dom.minidom.parseString(client.get(f"/api/parameters/{name}/illustration.svg").text)
    missing = client.get("/api/parameters/nonsense")
    assert missing.status_code == 404 and "There is no parameter 'nonsense'" in missing.json()["detail"]


def test_the_mask_editors_settings_have_explanations_but_no_guide_card(client):
    table = client.get("/api/parameters").json()
    for name in ("mask_edge", "mask_tolerance", "mask_brightness_from", "mask_brightness_to"):
        entry = table[name]
        assert entry["card"] is None and entry["help"].endswith(".") and entry["max"] == (128 if name == "mask_edge" else 255)
        assert client.get(f"/api/parameters/{name}").status_code == 404
    assert table["mask_edge"]["label"] == "By how many pixels" and "Soften" in table["mask_edge"]["help"]


def test_try_it_runs_a_tiny_comparison_of_three_values(client):
    answer = client.post("/api/parameters/cfg_scale/try", json={"recipe": {**RECIPE, "steps": 2}})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["kind"] == "compare" and job["params"]["x"] == "cfg_scale=2,7,14" and job["recipe"]["steps"] == 2
    result = wait_done(client, job["id"])["result"]
    assert result["parameter"] == "cfg_scale" and "CFG scale changes" in result["axes"]["x"]["explanation"]
    grid = client.get(f"/api/jobs/{job['id']}/files/{result['grid']}")
    assert grid.status_code == 200
    assert Image.open(BytesIO(grid.content)).width > 3 * 64
    assert client.get(f"/api/jobs/{job['id']}/files/..%2F..%2Fdb.sqlite").status_code == 404


def test_try_it_makes_the_recipe_small_and_quick(client):
    studio: Studio = client.app.state.studio
    big = Recipe(**{**RECIPE, "width": 1024, "height": 768, "steps": 30, "seed": -1, "batch_size": 4, "enable_hr": True})
    small = try_recipe(studio, big, "cfg_scale")
    assert (small.width, small.height, small.steps, small.batch_size, small.enable_hr) == (256, 192, 10, 1, False)
    assert small.seed >= 0 and try_recipe(studio, big, "steps").steps == 30
    assert try_axis("width", small, 256) == "size=256x256,168x256,256x168"


def test_try_it_refuses_what_it_cannot_show(client):
    answer = client.post("/api/parameters/batch_size/try", json={"recipe": RECIPE})
    assert answer.status_code == 400 and "no quick comparison" in answer.json()["detail"]
    answer = client.post("/api/parameters/steps/try", json={"recipe": {**RECIPE, "prompt": " "}})
    assert answer.status_code == 400 and answer.json()["field"] == "prompt"


def test_an_explanation_reports_progress_is_not_queued_twice_and_can_be_cancelled(client, home, image_id, explanation):
    studio: Studio = client.app.state.studio
    long = studio.queue.submit(Recipe(**{**RECIPE, "steps": 60}), owner_id=studio.owner_id, client="tab-a", kind="explain",
                               params={"image_id": None})
    deadline = time.monotonic() + 30
    while (current := client.get(f"/api/jobs/{long.id}").json())["progress"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert current["progress"]["total"] == 60
    # Other steps than the finished explanation has: a new job, queued behind, and only once.
    queued = client.post(f"/api/images/{image_id}/explain", json={"cfg_steps": [3]}).json()["job"]
    assert client.post(f"/api/images/{image_id}/explain", json={"cfg_steps": [3]}).json()["job"]["id"] == queued["id"]
    for job in (queued, {"id": long.id}):
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
    while client.get(f"/api/jobs/{long.id}").json()["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [client.get(f"/api/jobs/{j}").json()["status"] for j in (long.id, queued["id"])] == ["cancelled", "cancelled"]
    assert not (home.outputs / "explanations" / f"job-{long.id}" / "explain.json").exists()


# --- the Compare page's sweeps ---------------------------------------------------------------

def compare_jobs(studio: Studio) -> int:
    return sum(1 for job in studio.queue.list(owner_id=studio.owner_id, limit=200) if job.kind == "compare")


def test_a_2x2_compare_runs_on_the_users_recipe(client):
    answer = client.post("/api/compare", json={"recipe": {**RECIPE, "steps": 2, "seed": -1}, "x": "cfg_scale=3,9", "y": "seed=1-2"})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["kind"] == "compare" and job["params"] == {"x": "cfg_scale=3,9", "y": "seed=1-2", "z": None}
    assert job["recipe"]["seed"] >= 0  # fixed once, so the job reproduces
    result = wait_done(client, job["id"])["result"]
    assert result["axes"]["x"]["labels"] == ["3", "9"] and "CFG scale changes" in result["axes"]["x"]["explanation"]
    assert "Seed changes" in result["axes"]["y"]["explanation"]
    grid = client.get(f"/api/jobs/{job['id']}/files/{result['grid']}")
    assert grid.status_code == 200 and Image.open(BytesIO(grid.content)).width > 2 * 64
    summary = client.get(f"/api/jobs/{job['id']}/files/compare.json").json()
    recipes = {(cell["x"], cell["y"]): cell["recipe"] for cell in summary["cells"]}
    assert sorted(recipes) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [recipes[(ix, 0)]["cfg_scale"] for ix in (0, 1)] == [3.0, 9.0]
    assert [recipes[(0, iy)]["seed"] for iy in (0, 1)] == [1, 2]
    assert all(r["prompt"] == RECIPE["prompt"] and r["steps"] == 2 for r in recipes.values())
    cell = client.get(f"/api/jobs/{job['id']}/files/{summary['cells'][0]['file']}")
    assert cell.status_code == 200 and Image.open(BytesIO(cell.content)).size == (64, 64)


@pytest.mark.parametrize(("axes", "field", "named"), [
    ({"x": "cfg_scale=3,abc", "y": "seed=1"}, "x", "'abc'"),  # not a number
    ({"x": "cfg_scale=3", "y": "width=64,65"}, "y", "'65'"),  # parses, but the engine refuses the size
    ({"x": "colour=1,2", "y": "seed=1"}, "x", "'colour'"),
    ({"x": "cfg_scale=3", "y": "seed=1", "z": "steps=2,x"}, "z", "'x'"),
    ({"x": "cfg_scale=3", "y": "lora:missing=0.5", "z": None}, "y", "missing"),
])
def test_a_bad_axis_is_refused_by_name_and_nothing_is_queued(client, axes, field, named):
    studio: Studio = client.app.state.studio
    before = compare_jobs(studio)
    answer = client.post("/api/compare", json={"recipe": {**RECIPE, "steps": 2}, **axes})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["field"] == field and f"{field.upper()} axis" in body["detail"] and named in body["detail"]
    assert compare_jobs(studio) == before


def test_too_many_cells_are_refused(client):
    studio: Studio = client.app.state.studio
    before = compare_jobs(studio)
    answer = client.post("/api/compare", json={"recipe": RECIPE, "x": "seed=1-10", "y": "cfg_scale=1-7"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == ("This comparison has 70 cells (10 X values × 7 Y values); at most 64 cells are allowed, "
                                       "so give an axis fewer values.")
    assert compare_jobs(studio) == before


def test_check_counts_the_cells_without_queueing(client):
    studio: Studio = client.app.state.studio
    before = compare_jobs(studio)
    answer = client.post("/api/compare/check", json={"x": "steps=1-10 (+4)", "y": "cfg=2,7", "z": 'sampler="Euler a",Euler'})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"cells": 12, "axes": {
        "x": {"field": "steps", "label": "Steps", "labels": ["1", "5", "9"]},
        "y": {"field": "cfg_scale", "label": "CFG scale", "labels": ["2", "7"]},
        "z": {"field": "sampler_name", "label": "Sampler", "labels": ["Euler a", "Euler"]}}}
    same = client.post("/api/compare/check", json={"x": "steps=1,2", "y": "steps=3"})
    assert same.status_code == 422 and same.json()["field"] == "x" and "another axis" in same.json()["detail"]
    assert compare_jobs(studio) == before


def test_the_axes_listing_names_every_comparable_field_with_an_example_that_parses(client):
    listing = client.get("/api/axes").json()
    fields = {f["field"]: f for f in listing["fields"]}
    assert set(fields) == {*FIELDS, "lora:NAME"} and listing["max_cells"] == 64
    assert fields["cfg_scale"]["label"] == "CFG scale" and fields["cfg_scale"]["type"] == "float"
    assert "cfg" in fields["cfg_scale"]["aliases"] and fields["model"]["example"] == "tiny-sd1"
    for name, f in fields.items():
        key = "lora:some-lora" if name == "lora:NAME" else name
        assert parse_axis(f"{key}={f['example']}").values, name
