"""The /api/comics routes over FastAPI's TestClient, with the worker running on the tiny SD1 model."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pypdf
import pytest
from fastapi.testclient import TestClient

from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

FAST = {"steps": 1, "base_size": 64, "sampler": "Euler"}


@pytest.fixture(scope="module")
def client(tmp_path_factory, sd1_folder):
    from factories import build_image_encoder, build_ip_adapter_for

    home = Home(tmp_path_factory.mktemp("comic-api")).ensure()
    (home.model_dir("checkpoint") / sd1_folder.name).symlink_to(sd1_folder, target_is_directory=True)
    # A live IP-Adapter, so that characters' reference pictures take part in the panels' recipes.
    build_ip_adapter_for(sd1_folder, home.model_dir("ipadapter") / "ip-adapter_tiny_sd1.safetensors")
    build_image_encoder(home.model_dir("ipadapter") / "image_encoder")
    with TestClient(create_app(Studio.open(home)), headers={"X-Client-Id": "tab-a"}) as c:
        yield c


def wait_for_images(client: TestClient, project_id: str, panel_id: str, count: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        project = client.get(f"/api/comics/{project_id}").json()
        panel = next(p for page in project["pages"] for p in page["panels"] if p["id"] == panel_id)
        if sum(1 for c in panel["candidates"] if c["image"] or c["error"]) >= count:
            return project
        time.sleep(0.1)
    raise AssertionError("candidates did not finish")


def test_templates_and_create_list(client):
    templates = client.get("/api/comics/templates").json()
    assert {t["name"] for t in templates} >= {"grid-2x2", "three-tiers", "large-plus-three", "splash-inset", "manga-5",
                                              "grid-2x3", "grid-4x2"}
    response = client.post("/api/comics", json={"title": "API comic", "template": "large-plus-three", "page": "square"})
    assert response.status_code == 201, response.text
    project = response.json()
    assert project["page_size"]["width_mm"] == 210 and len(project["pages"][0]["panels"]) == 4
    assert all(p["owner_id"] == project["owner_id"] is not None for p in project["pages"][0]["panels"])
    assert project["id"] in [p["id"] for p in client.get("/api/comics").json()]


def test_bad_requests_get_one_sentence(client):
    response = client.post("/api/comics", json={"template": "grid-9x9"})
    assert response.status_code == 400 and response.json()["detail"].startswith("There is no layout template 'grid-9x9'")
    assert client.get("/api/comics/nothere").status_code == 404
    assert client.get("/api/comics/..%2Fetc").status_code in (400, 404)


def test_edit_generate_pick_and_export(client):
    project = client.post("/api/comics", json={"title": "Flow", "template": "grid-2x2"}).json()
    pid = project["id"]
    project["style"].update(FAST)
    project["characters"] = [{"name": "Ann", "description": "a woman in a yellow coat", "seed": 3}]
    panel = project["pages"][0]["panels"][0]
    panel.update(characters=["Ann"], action="waves", setting="a beach")
    box = panel["shape"]
    panel["balloons"] = [{"kind": "speech-oval", "text": "Hello from the API",
                          "box": {"x": box[0]["x"] + 5, "y": box[0]["y"] + 5, "w": 40, "h": 20},
                          "tail": {"x": box[0]["x"] + 30, "y": box[0]["y"] + 60}}]
    saved = client.put(f"/api/comics/{pid}", json=project)
    assert saved.status_code == 200, saved.text

    preview = client.get(f"/api/comics/{pid}/panels/{panel['id']}/prompt").json()
    assert "a woman in a yellow coat" in preview["composed"] and preview["recipe"]["seed"] == 3
    assert any("seed" in note for note in preview["consistency"])

    made = client.post(f"/api/comics/{pid}/panels/{panel['id']}/generate", json={"candidates": 2})
    assert made.status_code == 201, made.text
    assert all(c["job_id"] for c in made.json())
    project = wait_for_images(client, pid, panel["id"], 2)
    candidates = next(p for p in project["pages"][0]["panels"] if p["id"] == panel["id"])["candidates"]
    assert all(c["image"] for c in candidates), candidates
    picked = client.post(f"/api/comics/{pid}/panels/{panel['id']}/pick", json={"candidate": candidates[1]["id"]})
    assert picked.status_code == 200 and picked.json()["chosen"] == candidates[1]["id"]
    name = candidates[1]["image"].split("/")[-1]
    assert client.get(f"/api/comics/{pid}/assets/{name}").headers["content-type"] == "image/png"

    pdf = client.get(f"/api/comics/{pid}/export/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert "Hello from the API" in pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text().replace("\n", " ")
    screen = client.get(f"/api/comics/{pid}/export/pdf?quality=screen")
    assert screen.status_code == 200 and int(screen.headers["content-length"]) == len(screen.content) < len(pdf.content)
    assert client.get(f"/api/comics/{pid}/export/pdf?quality=web").status_code == 422
    cbz = client.get(f"/api/comics/{pid}/export/cbz")
    assert "ComicInfo.xml" in zipfile.ZipFile(io.BytesIO(cbz.content)).namelist()
    assert client.get(f"/api/comics/{pid}/export/png?page=1").headers["content-type"] == "image/png"
    assert client.get(f"/api/comics/{pid}/export/png?page=3").status_code == 400
    archive = client.get(f"/api/comics/{pid}/export/ldcomic")
    assert "project.json" in zipfile.ZipFile(io.BytesIO(archive.content)).namelist()


def test_render_together_fills_every_empty_panel_from_one_shared_attention_job(client):
    project = client.post("/api/comics", json={"title": "Together", "template": "three-tiers"}).json()
    pid = project["id"]
    project["style"].update(FAST)
    project["characters"] = [{"name": "Ann", "description": "a woman in a yellow coat", "seed": 3}]
    panels = project["pages"][0]["panels"]
    for i, panel in enumerate(panels):
        panel.update(characters=["Ann"], action=f"step {i}")
    assert client.put(f"/api/comics/{pid}", json=project).status_code == 200

    estimate = client.get(f"/api/comics/{pid}/render?shared_attention=0.5").json()
    assert estimate["panels"] == len(panels) and estimate["kept_bytes"] > 0
    made = client.post(f"/api/comics/{pid}/render", json={"shared_attention": 0.5})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["job"]["kind"] == "panels" and body["kept_bytes"] == estimate["kept_bytes"]
    assert [c["job_index"] for c in body["candidates"].values()] == list(range(len(panels)))
    for panel in panels:
        project = wait_for_images(client, pid, panel["id"], 1)
    shown = {p["id"]: p for p in project["pages"][0]["panels"]}
    images = [shown[p["id"]]["candidates"][0]["image"] for p in panels]
    assert all(images) and len(set(images)) == len(panels)
    assert all(shown[p["id"]]["chosen"] for p in panels)
    assert client.get(f"/api/comics/{pid}/render").json() == {"panels": 0, "kept_bytes": 0}
    again = client.post(f"/api/comics/{pid}/render", json={"shared_attention": 0.5})
    assert again.status_code == 400 and "at least two panels without an image" in again.json()["detail"]
    assert client.post(f"/api/comics/{pid}/render", json={"shared_attention": 0}).status_code == 422


def test_save_refuses_nine_panels_and_escaping_assets(client):
    project = client.post("/api/comics", json={"template": "grid-4x2"}).json()
    nine = {**project, "pages": [{**project["pages"][0], "panels": project["pages"][0]["panels"] * 2}]}
    response = client.put(f"/api/comics/{project['id']}", json=nine)
    assert response.status_code == 400 and "at most 8" in response.json()["detail"]
    panel = project["pages"][0]["panels"][0]
    panel["candidates"] = [{"image": "../../../etc/passwd", "recipe": {}}]
    response = client.put(f"/api/comics/{project['id']}", json=project)
    assert response.status_code == 400 and "not a picture in the project's assets/ folder" in response.json()["detail"]


def png_bytes(colour: str = "red") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("ref", ["/etc/hostname", "../../../../etc/hostname.png", "assets/../../other/project.json",
                                 "assets/../../../x.png", "C:/x.png", "assets/notes.txt", "inputs/abc.png"])
def test_reference_images_must_be_project_assets(client, ref):
    project = client.post("/api/comics", json={"title": "Refs"}).json()
    project["characters"] = [{"name": "Ann", "reference_image": ref}]
    response = client.put(f"/api/comics/{project['id']}", json=project)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": f"The asset '{ref}' is not a picture in the project's assets/ folder; give a PNG, "
                                         "JPEG or WEBP under assets/ (a picture uploaded to the project).",
                               "field": "reference_image"}


def test_prompt_preview_reads_and_writes_nothing(client):
    project = client.post("/api/comics", json={"title": "Preview"}).json()
    pid = project["id"]
    ref = client.post(f"/api/comics/{pid}/assets", files={"file": ("ann.png", png_bytes(), "image/png")}).json()["ref"]
    project["characters"] = [{"name": "Ann", "reference_image": ref}]
    panel = project["pages"][0]["panels"][0]
    panel["characters"] = ["Ann"]
    assert client.put(f"/api/comics/{pid}", json=project).status_code == 200
    inputs = client.app.state.studio.home.root / "inputs"
    before = sorted(inputs.iterdir()) if inputs.is_dir() else []
    preview = client.get(f"/api/comics/{pid}/panels/{panel['id']}/prompt")
    assert preview.status_code == 200, preview.text
    assert [r["image"] for r in preview.json()["recipe"]["references"]] == [ref]
    assert (sorted(inputs.iterdir()) if inputs.is_dir() else []) == before
    assert client.get(f"/api/comics/{pid}/render").status_code == 200
    assert (sorted(inputs.iterdir()) if inputs.is_dir() else []) == before


def test_unknown_ids_answer_404(client):
    project = client.post("/api/comics", json={"title": "Ids"}).json()
    pid, page = project["id"], project["pages"][0]["id"]
    assert client.get("/api/comics/..%2Fetc").status_code == 404
    for response in (client.get("/api/comics/nothere"), client.get("/api/comics/not-an-id"),
                     client.get("/api/comics/a.b"), client.put("/api/comics/not-an-id", json=project),
                     client.get("/api/comics/nothere/export/pdf")):
        assert response.status_code == 404, response.text
        assert set(response.json()) == {"detail", "field"} and "There is no comic project" in response.json()["detail"]
    for response in (client.get(f"/api/comics/{pid}/panels/nope/prompt"),
                     client.post(f"/api/comics/{pid}/panels/nope/generate", json={"candidates": 1}),
                     client.post(f"/api/comics/{pid}/panels/nope/pick", json={"candidate": "x"})):
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": "There is no panel 'nope' in the comic 'Ids'.", "field": None}
    assert client.post(f"/api/comics/{pid}/layout", json={"op": "add-page", "page": page}).status_code == 200


NAN = float("nan")


def send(client: TestClient, method: str, url: str, body: dict):
    """A JSON request as a careless client sends it: NaN and Infinity written as Python's json writes them."""
    return client.request(method, url, content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_non_finite_numbers_are_refused_and_the_project_stays_whole(client):
    project = client.post("/api/comics", json={"title": "Finite"}).json()
    pid, page = project["id"], project["pages"][0]
    panel = page["panels"][0]
    for value in (NAN, float("inf"), -float("inf")):
        edit = send(client, "POST", f"/api/comics/{pid}/layout", {"op": "gutter", "page": page["id"], "panel": panel["id"],
                                                                 "side": "right", "delta_mm": value})
        assert edit.status_code == 422 and edit.json()["field"] == "delta_mm", edit.text
        changed = json.loads(json.dumps(project))
        changed["pages"][0]["panels"][0]["shape"][0]["x"] = value
        response = send(client, "PUT", f"/api/comics/{pid}", changed)
        assert response.status_code == 422 and response.json()["field"] == "pages.0.panels.0.shape.0.x", response.text
        changed = json.loads(json.dumps(project))
        changed["style"]["cfg"] = value
        assert send(client, "PUT", f"/api/comics/{pid}", changed).status_code == 422
    assert client.get(f"/api/comics/{pid}").status_code == 200
    assert pid in [p["id"] for p in client.get("/api/comics").json()]


STALE = "This comic was changed in another tab or by another person since you opened it; reload it to see the changes."


def test_a_change_from_a_stale_version_answers_409_and_overwrites_nothing(client):
    project = client.post("/api/comics", json={"title": "Versions"}).json()
    pid, page, panel = project["id"], project["pages"][0]["id"], project["pages"][0]["panels"][0]["id"]
    assert project["version"] == 1
    first, second = dict(project, title="First tab"), dict(project, title="Second tab")
    saved = client.put(f"/api/comics/{pid}", json=first)
    assert saved.status_code == 200 and saved.json()["version"] == 2
    stale = client.put(f"/api/comics/{pid}", json=second)
    assert stale.status_code == 409 and stale.json() == {"detail": STALE, "field": None}
    jobs_before = len(client.get("/api/jobs").json())
    for response in (client.post(f"/api/comics/{pid}/layout", json={"op": "add-page", "page": page, "version": 1}),
                     client.post(f"/api/comics/{pid}/panels/{panel}/generate", json={"candidates": 1, "version": 1}),
                     client.post(f"/api/comics/{pid}/render", json={"shared_attention": 0.5, "version": 1}),
                     client.post(f"/api/comics/{pid}/panels/{panel}/pick", json={"candidate": "x", "version": 1})):
        assert response.status_code == 409 and response.json()["detail"] == STALE, response.text
    assert len(client.get("/api/jobs").json()) == jobs_before  # nothing was queued
    now = client.get(f"/api/comics/{pid}").json()
    assert (now["title"], len(now["pages"]), now["version"]) == ("First tab", 1, 2)

    edited = client.post(f"/api/comics/{pid}/layout", json={"op": "add-page", "page": page, "version": 2})
    assert edited.status_code == 200 and edited.json()["version"] == 3  # a layout edit moves the version on
    assert client.put(f"/api/comics/{pid}", json=dict(now, title="Late")).status_code == 409
    assert client.put(f"/api/comics/{pid}", json=dict(edited.json(), title="Up to date")).json()["version"] == 4


def test_queued_candidates_move_the_version_on_and_finished_ones_do_not(client):
    """A job finishing is not an edit: the tab that queued it can go on editing (or generate the next
    panel) at the version it has, while the image is brought in."""
    project = client.post("/api/comics", json={"title": "Merges"}).json()
    project["style"].update(FAST)
    pid, panel = project["id"], project["pages"][0]["panels"][0]["id"]
    version = client.put(f"/api/comics/{pid}", json=project).json()["version"]
    made = client.post(f"/api/comics/{pid}/panels/{panel}/generate", json={"candidates": 1, "version": version})
    assert made.status_code == 201, made.text
    queued = client.get(f"/api/comics/{pid}").json()
    assert queued["version"] == version + 1 or queued["pages"][0]["panels"][0]["candidates"][0]["image"]
    done = wait_for_images(client, pid, panel, 1)
    assert done["version"] == version + 1  # bringing the image in is no edit
    assert client.put(f"/api/comics/{pid}", json=dict(project, version=version)).status_code == 409
    # The tab's copy (with the queued candidates, as the editor keeps them) at the version generate left it is
    # still current; saving it loses no image.
    tab = json.loads(json.dumps(dict(project, version=version + 1, title="Still mine")))
    tab["pages"][0]["panels"][0]["candidates"] += made.json()
    assert client.put(f"/api/comics/{pid}", json=tab).json()["version"] == version + 2
    again = client.get(f"/api/comics/{pid}").json()
    assert again["title"] == "Still mine" and again["pages"][0]["panels"][0]["candidates"][0]["image"]


def test_another_owners_comic_answers_404_and_is_not_listed(client):
    from localdiffusion.comic import Project
    from localdiffusion.server.comic import home_comics

    studio = client.app.state.studio
    theirs = Project(title="Not yours", owner_id=studio.db.ensure_owner("someone else"))
    home_comics(studio).save(theirs)
    assert theirs.id not in [c["id"] for c in client.get("/api/comics").json()]
    for response in (client.get(f"/api/comics/{theirs.id}"), client.put(f"/api/comics/{theirs.id}", json=theirs.model_dump()),
                     client.get(f"/api/comics/{theirs.id}/export/ldcomic")):
        assert response.status_code == 404 and "There is no comic project" in response.json()["detail"]


def test_project_folders_from_before_the_database_open_in_the_studio(tmp_path):
    from localdiffusion.comic import Project, new_page, save_project
    from localdiffusion.comic.storage import comics_dir
    from localdiffusion.store.db import Database

    home = Home(tmp_path / "home").ensure()
    with Database(home.db_path) as db:
        owner = db.local_owner_id
    old = Project(title="From last year", owner_id=owner)
    old.pages.append(new_page(old, "grid-2x2"))
    save_project(old, comics_dir(home.root) / old.id)
    (comics_dir(home.root) / old.id / "assets" / "upload-a.png").write_bytes(png_bytes())
    with TestClient(create_app(Studio.open(home))) as c:
        assert [p["title"] for p in c.get("/api/comics").json()] == ["From last year"]
        opened = c.get(f"/api/comics/{old.id}").json()
        assert opened["version"] == 1 and opened["pages"] == old.model_dump(mode="json")["pages"]
        assert c.get(f"/api/comics/{old.id}/assets/upload-a.png").content == png_bytes()
        archive = zipfile.ZipFile(io.BytesIO(c.get(f"/api/comics/{old.id}/export/ldcomic").content))
        assert archive.namelist() == ["project.json", "assets/upload-a.png"]
        assert json.loads(archive.read("project.json"))["title"] == "From last year"
