"""Working together, over the API: the class wall (share, unshare, the wall's own picture routes, a
facilitator's hide with its audit) and a class comic (assigned panels, a participant changes only their own,
their candidates come back into the project, every change is announced on everyone's event socket)."""

from __future__ import annotations

import io
import json
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

from test_accounts import add_class, basic

FAST = {"steps": 1, "base_size": 64, "sampler": "Euler"}
ANN, BO, FAY = basic("ann"), basic("bo"), basic("fay")


@pytest.fixture(scope="module")
def classroom(tmp_path_factory, sd1_folder):
    """A studio with the tiny SD1 model, four accounts and its worker running."""
    home = Home(tmp_path_factory.mktemp("wall")).ensure()
    (home.model_dir("checkpoint") / sd1_folder.name).symlink_to(sd1_folder, target_is_directory=True)
    add_class(home)
    with TestClient(create_app(Studio.open(home))) as client:
        yield client


def an_image(client: TestClient, name: str, prompt: str = "a lighthouse at dusk") -> int:
    studio = client.app.state.studio
    path = studio.home.outputs / f"{name}-{time.monotonic_ns()}.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    recipe = {"prompt": prompt, "steps": 12, "seed": 4242, "cfg_scale": 5.5}
    return studio.db.add_image(path=path, recipe_json=json.dumps(recipe), width=64, height=64, prompt=prompt,
                               owner_id=studio.accounts.get(name).owner_id)


def wall(client: TestClient, headers: dict) -> list[dict]:
    answer = client.get("/api/wall", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


# --- the class wall ---------------------------------------------------------------------------------------


def test_a_shared_image_is_on_everyones_wall_with_its_recipe_and_the_owner_routes_stay_closed(classroom):
    image = an_image(classroom, "ann")
    assert classroom.post(f"/api/images/{image}/share", headers=BO).status_code == 404  # not bo's image
    shared = classroom.post(f"/api/images/{image}/share", headers=ANN)
    assert shared.status_code == 201 and shared.json()["shared"] is True
    share_id = shared.json()["share_id"]
    assert classroom.post(f"/api/images/{image}/share", headers=ANN).json()["share_id"] == share_id  # once only
    assert classroom.get(f"/api/images/{image}/share", headers=ANN).json()["shared"] is True

    item = next(i for i in wall(classroom, BO) if i["id"] == share_id)
    assert item["kind"] == "image" and item["owner"] == "ann" and item["image_id"] == image
    assert item["recipe"]["seed"] == 4242 and item["recipe"]["prompt"] == "a lighthouse at dusk"
    assert "hidden_by" not in item  # what a facilitator did is theirs to see
    # bo reads the picture through the wall, never through ann's own image routes
    assert classroom.get(f"/api/images/{image}/file", headers=BO).status_code == 404
    assert classroom.get(f"/api/images/{image}/thumb", headers=BO).status_code == 404
    assert classroom.get(f"/api/images/{image}", headers=BO).status_code == 404
    picture = classroom.get(item["url"], headers=BO)
    assert picture.status_code == 200 and Image.open(io.BytesIO(picture.content)).size == (64, 64)
    thumb = classroom.get(item["thumb"], headers=BO)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert classroom.get(item["url"]).status_code == 401  # signed-in users only

    assert classroom.delete(f"/api/images/{image}/share", headers=BO).status_code == 404
    assert classroom.delete(f"/api/images/{image}/share", headers=ANN).json()["shared"] is False
    assert share_id not in [i["id"] for i in wall(classroom, BO)]
    assert classroom.get(item["url"], headers=BO).status_code == 404


def test_a_deleted_image_leaves_the_wall(classroom):
    image = an_image(classroom, "ann")
    share_id = classroom.post(f"/api/images/{image}/share", headers=ANN).json()["share_id"]
    classroom.delete(f"/api/images/{image}", headers=ANN)
    assert share_id not in [i["id"] for i in wall(classroom, BO)]
    assert classroom.get(f"/api/wall/{share_id}/file", headers=BO).status_code == 404


def test_a_facilitator_hides_an_item_and_the_audit_log_says_so(classroom):
    image = an_image(classroom, "bo", "something unkind")
    share_id = classroom.post(f"/api/images/{image}/share", headers=BO).json()["share_id"]
    refused = classroom.post(f"/api/wall/{share_id}/hide", headers=ANN)
    assert refused.status_code == 403 and "facilitator" in refused.json()["detail"]

    hidden = classroom.post(f"/api/wall/{share_id}/hide", headers=FAY)
    assert hidden.status_code == 200 and hidden.json()["hidden"] is True
    assert share_id not in [i["id"] for i in wall(classroom, ANN)]
    assert share_id not in [i["id"] for i in wall(classroom, BO)]  # the owner too
    assert classroom.get(f"/api/wall/{share_id}/file", headers=ANN).status_code == 404
    marked = next(i for i in wall(classroom, FAY) if i["id"] == share_id)
    assert marked["hidden"] is True and marked["hidden_by"] == "fay"
    assert classroom.get(f"/api/wall/{share_id}/file", headers=FAY).status_code == 200
    entries = classroom.get("/api/class/audit", headers=FAY).json()
    assert any(e["actor"] == "fay" and e["action"] == "hide" and e["target"] == f"wall {share_id}" for e in entries), entries
    # Unsharing and sharing again does not bring a hidden item back.
    assert classroom.delete(f"/api/images/{image}/share", headers=BO).status_code == 200
    classroom.post(f"/api/images/{image}/share", headers=BO)
    assert share_id not in [i["id"] for i in wall(classroom, ANN)]

    assert classroom.post(f"/api/wall/{share_id}/unhide", headers=FAY).json()["hidden"] is False
    assert share_id in [i["id"] for i in wall(classroom, ANN)]
    entries = classroom.get("/api/class/audit", headers=FAY).json()
    assert entries[0]["action"] == "unhide" and entries[0]["actor"] == "fay"


def test_a_shared_comic_shows_its_first_page(classroom):
    comic = classroom.post("/api/comics", json={"title": "Ann's strip"}, headers=ANN).json()
    assert classroom.post(f"/api/comics/{comic['id']}/share", headers=BO).status_code == 404
    share_id = classroom.post(f"/api/comics/{comic['id']}/share", headers=ANN).json()["share_id"]
    item = next(i for i in wall(classroom, BO) if i["id"] == share_id)
    assert item["kind"] == "comic" and item["title"] == "Ann's strip" and item["owner"] == "ann"
    page = classroom.get(item["url"], headers=BO)
    assert page.status_code == 200 and page.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(page.content)).width == 1240  # A4 at 150 dpi: for the screen, not a print render
    assert classroom.get(f"/api/comics/{comic['id']}", headers=BO).status_code == 404  # still ann's comic
    assert classroom.delete(f"/api/comics/{comic['id']}/share", headers=ANN).json()["shared"] is False


# --- a class comic ---------------------------------------------------------------------------------------


def class_comic(client: TestClient) -> tuple[dict, str, str]:
    """A class comic by fay, with its first panel assigned to ann and its second to bo."""
    made = client.post("/api/comics", json={"title": "Our class", "class": True}, headers=FAY)
    assert made.status_code == 201, made.text
    project = made.json()
    project["style"].update(FAST)
    assert client.put(f"/api/comics/{project['id']}", json=project, headers=FAY).status_code == 200
    first, second = (p["id"] for p in project["pages"][0]["panels"][:2])
    for panel, user in ((first, "ann"), (second, "bo")):
        assigned = client.put(f"/api/comics/{project['id']}/panels/{panel}/assignee", json={"user": user}, headers=FAY)
        assert assigned.status_code == 200, assigned.text
    return assigned.json(), first, second


def test_only_a_facilitator_starts_a_class_comic_and_assigns_its_panels(classroom):
    refused = classroom.post("/api/comics", json={"title": "Mine for all", "class": True}, headers=ANN)
    assert refused.status_code == 403 and "facilitator" in refused.json()["detail"]
    project, first, second = class_comic(classroom)
    assert project["class_comic"] is True and project["assignees"] == {first: "ann", second: "bo"}
    listed = {p["id"]: p for p in classroom.get("/api/comics", headers=BO).json()}
    assert listed[project["id"]]["class_comic"] is True
    assert classroom.put(f"/api/comics/{project['id']}/panels/{first}/assignee", json={"user": "bo"},
                         headers=ANN).status_code == 403
    nobody = classroom.put(f"/api/comics/{project['id']}/panels/{first}/assignee", json={"user": "zed"}, headers=FAY)
    assert nobody.status_code == 400 and "There is no user 'zed'" in nobody.json()["detail"]
    own = classroom.post("/api/comics", json={"title": "Not a class one"}, headers=FAY).json()
    panel = own["pages"][0]["panels"][0]["id"]
    answer = classroom.put(f"/api/comics/{own['id']}/panels/{panel}/assignee", json={"user": "ann"}, headers=FAY)
    assert answer.status_code == 400 and "not a class comic" in answer.json()["detail"]


def test_a_participant_changes_only_their_own_panel(classroom):
    project, first, second = class_comic(classroom)
    pid = project["id"]
    seen = classroom.get(f"/api/comics/{pid}", headers=BO)
    assert seen.status_code == 200 and seen.json()["title"] == "Our class"

    edited = classroom.put(f"/api/comics/{pid}/panels/{first}", json={"action": "waves from a boat", "shape": []},
                           headers=ANN)
    assert edited.status_code == 200, edited.text
    panels = {p["id"]: p for p in edited.json()["pages"][0]["panels"]}
    assert panels[first]["action"] == "waves from a boat" and len(panels[first]["shape"]) == 4  # the shape stays
    assert edited.json()["version"] > project["version"]

    for method, url, body in (
        ("PUT", f"/api/comics/{pid}/panels/{second}", {"action": "not mine"}),
        ("POST", f"/api/comics/{pid}/panels/{second}/generate", {"candidates": 1}),
        ("POST", f"/api/comics/{pid}/panels/{second}/pick", {"candidate": "x"}),
    ):
        refused = classroom.request(method, url, json=body, headers=ANN)
        assert refused.status_code == 403, (url, refused.text)
        assert refused.json()["detail"] == f"Panel '{second}' of the class comic is not assigned to you; you may change only your own panels."
    whole = seen.json()
    whole["title"] = "Ann's now"
    for method, url, body in (
        ("PUT", f"/api/comics/{pid}", whole),
        ("POST", f"/api/comics/{pid}/layout", {"op": "gutter-width", "page": whole["pages"][0]["id"], "width_mm": 2}),
        ("POST", f"/api/comics/{pid}/render", {}),
    ):
        refused = classroom.request(method, url, json=body, headers=ANN)
        assert refused.status_code == 403 and "class comic" in refused.json()["detail"], (url, refused.text)
    after = classroom.get(f"/api/comics/{pid}", headers=FAY).json()
    panels = {p["id"]: p for p in after["pages"][0]["panels"]}
    assert after["title"] == "Our class" and panels[second]["action"] == "" and after["pages"][0]["gutter_mm"] == 4.0
    # the facilitator may do everything, and a project-level save keeps the assignments
    after["title"] = "Our class, edited"
    for panel in after["pages"][0]["panels"]:
        panel["owner_id"] = 999
    saved = classroom.put(f"/api/comics/{pid}", json=after, headers=FAY)
    assert saved.status_code == 200 and saved.json()["assignees"] == {first: "ann", second: "bo"}


def receive_until(ws, wanted, limit: int = 50) -> dict:
    for _ in range(limit):
        message = ws.receive_json()
        if wanted(message):
            return message
    raise AssertionError("the event did not come")


def test_a_participants_candidates_are_their_jobs_come_back_into_the_comic_and_everyone_hears_of_it(classroom):
    project, first, second = class_comic(classroom)
    pid = project["id"]
    changed = lambda m: m["type"] == "comic-changed" and m["data"]["project_id"] == pid  # noqa: E731
    with classroom.websocket_connect("/api/events?client=bo-tab", headers=BO) as bo_socket:
        saved = classroom.put(f"/api/comics/{pid}/panels/{first}", json={"setting": "a harbour"}, headers=ANN).json()
        heard = receive_until(bo_socket, changed)
        assert heard["data"]["version"] == saved["version"] and heard["job_id"] is None

        made = classroom.post(f"/api/comics/{pid}/panels/{first}/generate", json={"candidates": 1},
                              headers={**ANN, "X-Client-Id": "ann-tab"})
        assert made.status_code == 201, made.text
        job_id = made.json()[0]["job_id"]
        assert classroom.get(f"/api/jobs/{job_id}", headers=ANN).status_code == 200  # ann's job
        assert classroom.get(f"/api/jobs/{job_id}", headers=BO).status_code == 404
        # the queued candidate, then the finished one: bo hears both without asking
        receive_until(bo_socket, changed)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            receive_until(bo_socket, changed)
            # bo's page reads the project again on each announcement; the event came after the picture was in
            panel = next(p for p in classroom.get(f"/api/comics/{pid}", headers=BO).json()["pages"][0]["panels"]
                         if p["id"] == first)
            if panel["candidates"][0]["image"] or panel["candidates"][0]["error"]:
                break
    candidate = panel["candidates"][0]
    assert candidate["image"] and candidate["error"] is None, candidate
    name = candidate["image"].split("/")[-1]
    assert classroom.get(f"/api/comics/{pid}/assets/{name}", headers=BO).status_code == 200
    picked = classroom.post(f"/api/comics/{pid}/panels/{first}/pick", json={"candidate": candidate["id"]}, headers=ANN)
    assert picked.status_code == 200 and picked.json()["chosen"] == candidate["id"]
    # the class comic exports as any comic
    assert classroom.get(f"/api/comics/{pid}/export/cbz", headers=BO).status_code == 200


def test_a_participants_panel_cannot_use_another_participants_upload(classroom):
    project, first, _ = class_comic(classroom)
    pid = project["id"]

    def upload(headers: dict, colour: tuple[int, int, int]) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
        answer = classroom.post("/api/uploads", files={"file": ("pose.png", buffer.getvalue(), "image/png")}, headers=headers)
        assert answer.status_code == 201, answer.text
        return answer.json()["ref"]

    def generate_with(ref: str):
        unit = {"model": "any", "image": ref, "module": "none", "weight": 1}
        saved = classroom.put(f"/api/comics/{pid}/panels/{first}", json={"controls": [unit]}, headers=ANN)
        assert saved.status_code == 200, saved.text
        return classroom.post(f"/api/comics/{pid}/panels/{first}/generate", json={"candidates": 1}, headers=ANN)

    bos = upload(BO, (200, 10, 10))
    refused = generate_with(bos)
    assert refused.status_code == 422 and refused.json()["field"] == "controls.0.image", refused.text
    assert bos[:20] in refused.json()["detail"]
    # the facilitator's (the class comic's owner) and ann's own pictures pass this check (and go on to the model check)
    for ref in (upload(FAY, (10, 200, 10)), upload(ANN, (10, 10, 200))):
        answer = generate_with(ref)
        assert answer.json().get("field") != "controls.0.image", answer.text
