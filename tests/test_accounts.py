"""Accounts for a class: sign-in, the access table with four callers on every route, CSRF, throttling,
isolation of every resource (files and the event socket included), the facilitator's user routes, the
A1111 API as two users (the real webuiapi client), the `users` commands, and accounts-off as before."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from localdiffusion.jobs import Event
from localdiffusion.server.access import FACILITATOR, OWNER, PUBLIC, ROUTES, SIGN_IN, app_route_keys
from localdiffusion.server.accounts import LoginThrottle
from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.accounts import Accounts
from localdiffusion.store.db import Database
from localdiffusion.store.home import Home

from cli_runner import run_cli
from test_server_api import RECIPE, linked_home, png_bytes

PASSWORDS = {"ann": "ann-password-1", "bo": "bo-password-22", "fay": "fay-password-333", "cy": "cy-password-4444"}
ROLES = {"ann": "participant", "bo": "participant", "fay": "facilitator", "cy": "participant"}


def add_class(home: Home) -> None:
    with Database(home.db_path) as db:
        accounts = Accounts(db)
        for name, password in PASSWORDS.items():
            accounts.add(name, password, ROLES[name])


def basic(name: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{PASSWORDS[name]}".encode()).decode()}


@pytest.fixture()
def classroom(tmp_path, model_home):
    """A studio with the tiny models and four accounts, whose worker does not run (jobs stay queued)."""
    home = linked_home(tmp_path / "home", model_home)
    add_class(home)
    with TestClient(create_app(Studio.open(home), start_worker=False)) as client:
        yield client


def sign_in(client: TestClient, name: str) -> str:
    answer = client.post("/api/auth/login", json={"username": name, "password": PASSWORDS[name]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"] == {"name": name, "role": ROLES[name], "frozen": False}
    return answer.json()["csrf_token"]


def anns_things(client: TestClient) -> dict[str, str]:
    """One of each thing, made by ann: an upload, a job, an image (with its file), a comic and its panel."""
    studio = client.app.state.studio
    ann = basic("ann")
    ref = client.post("/api/uploads", files={"file": ("a.png", png_bytes(), "image/png")}, headers=ann).json()["ref"]
    job = client.post("/api/jobs", json=RECIPE, headers=ann).json()["id"]
    path = studio.home.outputs / "ann.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    owner = studio.accounts.get("ann").owner_id
    image = studio.db.add_image(path=path, recipe_json=json.dumps(RECIPE), width=64, height=64, prompt="a lighthouse", owner_id=owner)
    comic = client.post("/api/comics", json={"title": "Ann's"}, headers=ann).json()
    dataset = client.post("/api/datasets", json={"name": "ann's", "pictures": [{"ref": ref}, {"image_id": image}]},
                          headers=ann).json()
    return {"image_id": str(image), "job_id": str(job), "name": ref.removeprefix("inputs/"), "project_id": comic["id"],
            "panel_id": comic["pages"][0]["panels"][0]["id"], "page_id": comic["pages"][0]["id"], "ref": ref,
            "dataset_id": dataset["id"]}


# --- the access table --------------------------------------------------------------------------------


def test_every_route_of_the_app_is_in_the_access_table(tmp_path):
    app = create_app(Studio.open(Home(tmp_path / "home").ensure()), start_worker=False)
    keys = list(app_route_keys(app.routes))
    assert len(keys) == len(set(keys)) > 90
    missing = [key for key in keys if key not in ROUTES]
    assert not missing, f"Routes missing from server/access.py's ROUTES: {missing}"
    assert not [key for key in ROUTES if key not in keys], "ROUTES names routes the app does not have"


# Routes the walk below does not call as a signed-in user: they queue a generation and wait for it (the worker
# does not run here); the webuiapi test and the A1111 tests run them.
WAITS = {"POST /sdapi/v1/txt2img", "POST /sdapi/v1/img2img", "POST /sdapi/v1/extra-single-image"}
# Values for path parameters that name no thing of ann's.
OTHER_PARAMS = {"name": "x.png", "fmt": "pdf", "op": "invert", "token_id": "1", "name:path": "grid.png", "share_id": "1"}


def _url(path: str, things: dict[str, str], key: str) -> str:
    values = dict(OTHER_PARAMS, **things)
    if key.startswith(("GET /api/parameters/{name}", "POST /api/parameters/{name}")):
        values["name"] = "steps"
    if "/api/class/users/{name}" in key:
        values["name"] = "cy"  # not one of the callers: a new password or a freeze must not lock them out
    if key == "GET /api/comics/{project_id}/assets/{name}":
        values["name"] = "missing.png"

    def fill(match: re.Match) -> str:
        return values[match.group(1)] if match.group(1) in values else values[match.group(1).partition(":")[0]]

    return re.sub(r"\{([^}]+)\}", fill, path)


def _body(key: str, things: dict[str, str]) -> dict:
    """A body the route takes, so that the answer is about the thing, not the request's shape."""
    if key == "PATCH /api/images/{image_id}":
        return {"json": {"starred": True}}
    if key == "PATCH /api/datasets/{dataset_id}":
        return {"json": {"name": "renamed"}}
    if key == "POST /api/comics/{project_id}/layout":
        return {"json": {"op": "gutter-width", "page": things["page_id"], "width_mm": 4}}
    if key == "POST /api/comics/{project_id}/panels/{panel_id}/pick":
        return {"json": {"candidate": "none"}}
    if key == "POST /api/comics/{project_id}/assets":
        return {"files": {"file": ("a.png", png_bytes(), "image/png")}}
    if key == "PUT /api/comics/{project_id}":
        return {"json": {"id": things["project_id"], "title": "Ann's"}}
    if key.startswith("POST") or key.startswith("PUT"):
        return {"json": {}}
    return {}


def test_four_callers_on_every_route(classroom):
    """Anonymous: 401 except public routes. Another participant: 403 on facilitator routes, 404 on ann's things.
    The owner and a facilitator get through; a facilitator reaches ann's things as ann does."""
    things = anns_things(classroom)
    keys = [k for k in app_route_keys(classroom.app.routes) if not k.startswith(("MOUNT", "WS"))]
    keys.sort(key=lambda k: k.startswith("DELETE"))  # hiding the image and cancelling the job come last
    for key in keys:
        method, path = key.split(" ", 1)
        url, body, level = _url(path, things, key), _body(key, things), ROUTES[key]
        anonymous = classroom.request(method, url, **body)
        if level == PUBLIC:  # (GET /api/auth/me answers 401 itself, with its own sentence, to say nobody is signed in)
            assert anonymous.status_code != 401 or anonymous.json()["detail"] != SIGN_IN, key
        else:
            assert anonymous.status_code == 401 and anonymous.json()["detail"] == SIGN_IN, key
        if key in WAITS:
            continue
        other = classroom.request(method, url, headers=basic("bo"), **body)
        if level == FACILITATOR:
            assert other.status_code == 403 and "facilitator" in other.json()["detail"], key
        elif level == OWNER:
            assert other.status_code == 404, (key, other.status_code, other.text)
        else:
            assert other.status_code not in (401, 403), (key, other.text)
        facilitator = classroom.request(method, url, headers=basic("fay"), **body)
        assert facilitator.status_code not in (401, 403), (key, facilitator.text)
        owner = classroom.request(method, url, headers=basic("ann"), **body)
        if level == FACILITATOR:
            assert owner.status_code == 403, key
        else:
            assert owner.status_code not in (401, 403), (key, owner.text)
        if level == OWNER and facilitator.status_code == 404:  # only where the thing has no such part for ann either
            assert owner.status_code == 404, (key, owner.text)


def test_the_event_socket_needs_a_sign_in_and_carries_only_the_callers_jobs(classroom):
    studio = classroom.app.state.studio
    with pytest.raises(WebSocketDisconnect) as refused:
        with classroom.websocket_connect("/api/events?client=tab") as ws:
            ws.receive_json()
    assert refused.value.code == 1008 and "Sign in" in refused.value.reason
    ann, bo = (studio.accounts.get(n).owner_id for n in ("ann", "bo"))
    with classroom.websocket_connect("/api/events?client=tab", headers=basic("bo")) as ws:
        studio.events.publish(Event("queued", 1, ann, "tab", {"status": "queued"}))  # same client id, ann's job
        studio.events.publish(Event("queued", 2, bo, "tab", {"status": "queued"}))
        assert ws.receive_json()["job_id"] == 2


# --- sign-in, CSRF, tokens, throttling -------------------------------------------------------------------


def test_a_session_cookie_needs_the_csrf_token_for_changes(classroom):
    csrf = sign_in(classroom, "ann")
    cookie = classroom.cookies.get("ld_session")
    assert cookie
    me = classroom.get("/api/auth/me").json()
    assert me["user"]["name"] == "ann" and me["csrf_token"] == csrf and me["accounts"] is True
    refused = classroom.post("/api/clients")
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    assert classroom.post("/api/clients", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert classroom.post("/api/clients", headers={"X-CSRF-Token": csrf}).status_code == 201
    assert classroom.get("/api/images").status_code == 200  # reading needs no token
    classroom.post("/api/auth/logout")
    assert classroom.get("/api/images").status_code == 401


def test_the_cookie_is_httponly_lax_and_secure_over_https(classroom):
    answer = classroom.post("/api/auth/login", json={"username": "ann", "password": PASSWORDS["ann"]})
    cookie = answer.headers["set-cookie"]
    assert "ld_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    with TestClient(classroom.app, base_url="https://testserver") as secure:
        answer = secure.post("/api/auth/login", json={"username": "ann", "password": PASSWORDS["ann"]},
                             headers={"Origin": "https://testserver"})
        assert "Secure" in answer.headers["set-cookie"]


def test_personal_tokens_act_as_their_user_without_csrf(classroom):
    made = classroom.post("/api/auth/tokens", json={"label": "krita"}, headers=basic("ann"))
    assert made.status_code == 201 and made.json()["token"].startswith("ldp_")
    token = made.json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert classroom.post("/api/clients", headers=bearer).status_code == 201
    assert classroom.get("/api/auth/me", headers=bearer).json()["user"]["name"] == "ann"
    as_basic = {"Authorization": "Basic " + base64.b64encode(f"ann:{token}".encode()).decode()}
    assert classroom.get("/api/auth/me", headers=as_basic).json()["user"]["name"] == "ann"
    wrong_name = {"Authorization": "Basic " + base64.b64encode(f"bo:{token}".encode()).decode()}
    assert classroom.get("/api/auth/me", headers=wrong_name).status_code == 401
    listed = classroom.get("/api/auth/tokens", headers=bearer).json()
    assert [t["label"] for t in listed] == ["krita"] and "token" not in listed[0]
    assert classroom.delete(f"/api/auth/tokens/{made.json()['id']}", headers=basic("bo")).status_code == 404
    assert classroom.delete(f"/api/auth/tokens/{made.json()['id']}", headers=bearer).status_code == 200
    assert classroom.get("/api/images", headers=bearer).status_code == 401


def test_ten_failed_sign_ins_close_the_name_for_five_minutes(classroom):
    for _ in range(10):
        assert classroom.post("/api/auth/login", json={"username": "ann", "password": "wrong-one"}).status_code == 401
    closed = classroom.post("/api/auth/login", json={"username": "ann", "password": PASSWORDS["ann"]})
    assert closed.status_code == 429 and re.search(r"try again in \d+ seconds", closed.json()["detail"])
    assert 290 <= int(closed.headers["retry-after"]) <= 300
    assert classroom.get("/api/images", headers=basic("ann")).status_code == 429  # Basic counts for the name too
    assert classroom.post("/api/auth/login", json={"username": "bo", "password": PASSWORDS["bo"]}).status_code == 200


def test_the_throttle_opens_again_after_five_minutes():
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(9):
        throttle.failed("Ann")
    assert throttle.wait("ann") == 0
    throttle.failed("ann")
    assert throttle.wait("ANN") == 300
    now[0] = 301.0
    assert throttle.wait("ann") == 0


def test_join_with_the_class_code(tmp_path):
    home = Home(tmp_path / "home").ensure()
    add_class(home)
    with TestClient(create_app(Studio.open(home, join_code="lighthouse"), start_worker=False)) as client:
        assert client.get("/api/auth/me").json()["join"] is True
        wrong = client.post("/api/auth/join", json={"code": "nope", "username": "dan", "password": "dan-password"})
        assert wrong.status_code == 403 and "join code" in wrong.json()["detail"]
        taken = client.post("/api/auth/join", json={"code": "lighthouse", "username": "ann", "password": "dan-password"})
        assert taken.status_code == 400 and taken.json()["field"] == "username"
        made = client.post("/api/auth/join", json={"code": "lighthouse", "username": "dan", "password": "dan-password"})
        assert made.status_code == 201 and made.json()["user"]["role"] == "participant"
        assert client.get("/api/auth/me").json()["user"]["name"] == "dan"


# --- isolation --------------------------------------------------------------------------------------------


def test_a_participant_sees_only_their_own_work(classroom):
    things = anns_things(classroom)
    image, job = things["image_id"], things["job_id"]
    assert [i["id"] for i in classroom.get("/api/images", headers=basic("ann")).json()["items"]] == [int(image)]
    assert classroom.get("/api/images", headers=basic("bo")).json()["items"] == []
    for url in (f"/api/images/{image}", f"/api/images/{image}/file", f"/api/images/{image}/thumb",
                f"/api/images/{image}/explanation", f"/api/jobs/{job}", f"/api/inputs/{things['name']}",
                f"/api/comics/{things['project_id']}", f"/api/comics/{things['project_id']}/export/ldcomic"):
        mine, theirs = classroom.get(url, headers=basic("ann")), classroom.get(url, headers=basic("bo"))
        assert theirs.status_code == 404, url
        missing = classroom.get(re.sub(r"/\d+|/[0-9a-f]{24}\.png|/[0-9a-z]{8,}(?=/|$)", "/99999", url, count=1),
                                headers=basic("bo"))
        assert theirs.json()["detail"].split()[:2] == missing.json()["detail"].split()[:2], url  # as if it did not exist
        assert mine.status_code in (200, 404) and (mine.status_code == 200 or "explanation" in url), url
        assert classroom.get(url, headers=basic("fay")).status_code == mine.status_code, url
    assert classroom.get("/api/comics", headers=basic("bo")).json() == []
    # another's upload cannot be used in a recipe, as if it did not exist
    using = classroom.post("/api/jobs", json={**RECIPE, "mode": "img2img", "init_image": things["ref"]}, headers=basic("bo"))
    assert using.status_code == 422 and using.json()["field"] == "init_image"
    assert classroom.post("/api/jobs", json={**RECIPE, "mode": "img2img", "init_image": things["ref"]},
                          headers=basic("ann")).status_code == 201
    # a job's cancel: not another participant's, any for a facilitator
    assert classroom.delete(f"/api/jobs/{job}", headers=basic("bo")).status_code == 404
    assert classroom.delete(f"/api/jobs/{job}", headers=basic("fay")).json()["status"] == "cancelled"
    assert classroom.app.state.studio.db.audit_log()[0].action == "cancel"


def test_download_all_my_work_is_a_zip_of_my_images_and_comics(classroom):
    things = anns_things(classroom)
    answer = classroom.get("/api/me/work.zip", headers=basic("ann"))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(answer.content)).namelist() == [f"images/{things['image_id']}-ann.png",
                                                                  f"comics/{things['project_id']}.pdf", f"comics/{things['project_id']}.cbz"]
    assert zipfile.ZipFile(io.BytesIO(classroom.get("/api/me/work.zip", headers=basic("bo")).content)).namelist() == []


# --- the facilitator's user routes -------------------------------------------------------------------------


def test_the_facilitator_sees_the_class_freezes_and_resets(classroom):
    anns_things(classroom)
    users = {u["name"]: u for u in classroom.get("/api/class/users", headers=basic("fay")).json()}
    assert set(users) == set(PASSWORDS)
    assert users["ann"] | {"created_at": 0} == {"name": "ann", "role": "participant", "frozen": False, "online": True,
                                                "queued": 1, "running": 0, "gpu_seconds_today": 0.0, "images": 1,
                                                "created_at": 0}
    assert users["cy"]["online"] is False
    assert classroom.post("/api/class/users/bo/freeze", headers=basic("fay")).json()["frozen"] is True
    frozen = classroom.post("/api/jobs", json=RECIPE, headers=basic("bo"))
    assert frozen.status_code == 403 and "paused" in frozen.json()["detail"]
    assert classroom.get("/api/images", headers=basic("bo")).status_code == 200  # a frozen participant can look
    refused = classroom.post("/api/class/users/fay/freeze", headers=basic("fay"))
    assert refused.status_code == 400 and "facilitator" in refused.json()["detail"]
    assert classroom.post("/api/class/users/nobody/freeze", headers=basic("fay")).status_code == 404
    classroom.post("/api/class/users/bo/unfreeze", headers=basic("fay"))
    assert classroom.post("/api/jobs", json=RECIPE, headers=basic("bo")).status_code == 201
    reset = classroom.post("/api/class/users/cy/password", headers=basic("fay")).json()
    assert reset["name"] == "cy" and len(reset["password"]) >= 8
    assert classroom.get("/api/images", headers=basic("cy")).status_code == 401
    new = {"Authorization": "Basic " + base64.b64encode(f"cy:{reset['password']}".encode()).decode()}
    assert classroom.get("/api/images", headers=new).status_code == 200
    audit = classroom.get("/api/class/audit", headers=basic("fay")).json()
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        ("fay", "password", "cy"), ("fay", "unfreeze", "bo"), ("fay", "freeze", "bo")]
    assert reset["password"] not in json.dumps(audit)


# --- accounts off -------------------------------------------------------------------------------------------


def test_without_accounts_nothing_asks_for_a_sign_in(tmp_path):
    with TestClient(create_app(Studio.open(Home(tmp_path / "home").ensure()), start_worker=False)) as client:
        me = client.get("/api/auth/me").json()
        assert me == {"accounts": False, "user": {"name": "local", "role": "owner", "frozen": False}, "csrf_token": None}
        assert client.get("/api/images").status_code == 200 and client.post("/api/clients").status_code == 201
        assert client.post("/api/auth/login", json={"username": "a", "password": "b"}).status_code == 404
        assert client.get("/api/class/users").json() == []


def test_the_server_token_acts_as_the_homes_owner_once_accounts_exist(tmp_path):
    home = Home(tmp_path / "home").ensure()
    add_class(home)
    token = "a-long-operator-token-1234"
    with TestClient(create_app(Studio.open(home, token=token), start_worker=False)) as client:
        assert client.get("/api/images").status_code == 401
        assert client.get("/api/class/users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/api/images", headers=basic("ann")).status_code == 200


# --- the A1111 API as two users (the real webuiapi client) ----------------------------------------------------


def test_webuiapi_as_two_users(tmp_path, model_home):
    import requests
    import webuiapi

    from test_a1111 import serving

    home = linked_home(tmp_path / "home", model_home)
    add_class(home)
    with serving(home) as port:
        ann, bo = webuiapi.WebUIApi(host="127.0.0.1", port=port), webuiapi.WebUIApi(host="127.0.0.1", port=port)
        ann.set_auth("ann", PASSWORDS["ann"])
        bo.set_auth("bo", PASSWORDS["bo"])
        # alwayson_scripts given: webuiapi's default dict keeps the units other tests added to it
        result = ann.txt2img(prompt="a lighthouse", seed=3, steps=2, width=64, height=64, sampler_name="Euler",
                             alwayson_scripts={})
        assert result.images[0].size == (64, 64)
        bo.txt2img(prompt="a tree", seed=4, steps=2, width=64, height=64, sampler_name="Euler", alwayson_scripts={})
        ann.set_options({"CLIP_stop_at_last_layers": 2})
        assert ann.get_options()["CLIP_stop_at_last_layers"] == 2 and bo.get_options()["CLIP_stop_at_last_layers"] == 1
        base = f"http://127.0.0.1:{port}"
        prompts = {name: [i["prompt"] for i in requests.get(f"{base}/api/images", auth=(name, PASSWORDS[name]), timeout=30).json()["items"]]
                   for name in ("ann", "bo")}
        assert prompts == {"ann": ["a lighthouse"], "bo": ["a tree"]}
        refused = requests.post(f"{base}/sdapi/v1/refresh-checkpoints", auth=("bo", PASSWORDS["bo"]), timeout=30)
        assert refused.status_code == 403 and "facilitator" in refused.json()["detail"]
        assert requests.post(f"{base}/sdapi/v1/refresh-checkpoints", auth=("fay", PASSWORDS["fay"]), timeout=30).status_code == 200
        assert requests.get(f"{base}/sdapi/v1/progress", timeout=30).status_code == 401
        assert ann.get_progress()["state"]["job_count"] == 0  # nothing of ann's runs


# --- the users commands ----------------------------------------------------------------------------------------


def test_users_commands(tmp_path, capsys):
    home = tmp_path / "home"
    code, out, _ = run_cli(capsys, "users", "add", "ann", "--home", home)
    assert code == 0 and "first account" in out
    generated = re.search(r"password: (\S+)", out).group(1)
    with Database(Home(home).db_path) as db:
        accounts = Accounts(db)
        assert accounts.verify_password(accounts.get("ann"), generated)
        assert generated not in (home / "db.sqlite").read_bytes().decode("latin-1")  # hashed, never in clear
    roster = tmp_path / "roster.csv"
    roster.write_text("name,role,password\nann,,\nbo,facilitator,bo-password-22\ncy,,\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "users", "import", roster, "--cards", tmp_path / "cards.pdf",
                           "--address", "http://class.example:7860/", "--home", home)
    assert code == 0 and "Kept 'ann'" in out and "bo,facilitator,bo-password-22" in out and "Added 2 accounts" in out
    import pypdf

    cy_password = re.search(r"^cy,participant,(\S+)$", out, re.M).group(1)
    card = pypdf.PdfReader(tmp_path / "cards.pdf").pages[0]
    text = card.extract_text()
    assert all(part in text for part in ("bo", "bo-password-22", "cy", cy_password, "http://class.example:7860/"))
    assert "ann" not in text.split()  # new accounts only, each with the address's QR code (one image, drawn twice)
    assert len(card.images) == 1 and card.get_contents().get_data().count(b" Do") == 2
    code, out, _ = run_cli(capsys, "users", "list", "--json", "--home", home)
    assert [(u["name"], u["role"]) for u in json.loads(out)] == [("ann", "participant"), ("bo", "facilitator"), ("cy", "participant")]
    code, out, _ = run_cli(capsys, "users", "passwd", "cy", "--password", "cy-new-password", "--home", home)
    assert code == 0
    code, out, err = run_cli(capsys, "users", "add", "dee", "--role", "boss", "--home", home)
    assert code == 2 and "Unknown role 'boss'" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("user,pw\nx,y\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "users", "import", bad, "--home", home)
    assert code == 2 and "header" in err
    with Database(Home(home).db_path) as db:
        owner = Accounts(db).get("cy").owner_id
        picture = Home(home).outputs / "cy.png"
        picture.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(picture)
        db.add_image(path=picture, recipe_json="{}", width=8, height=8, owner_id=owner)
    code, out, _ = run_cli(capsys, "users", "remove", "cy", "--home", home)
    assert code == 0 and picture.is_file()
    code, out, _ = run_cli(capsys, "users", "remove", "bo", "--delete-work", "--home", home)
    assert code == 0 and "deleted 0 images" in out
    code, out, _ = run_cli(capsys, "users", "list", "--home", home)
    assert out.split() == ["ann", "participant"]


# --- a real serve process: sign-in on every address, and a kill -9 keeps each job and its owner ---------------


@pytest.mark.timeout(600)
def test_a_killed_server_keeps_every_job_and_its_owner(tmp_path, model_home):
    import httpx

    from test_serve import SLOW_RECIPE, free_port, server, wait_until

    home = linked_home(tmp_path / "home", model_home)
    add_class(home)
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"  # the server listens on every address; the test only connects to this machine

    def jobs_of(ids: dict[int, str]) -> list[dict]:
        return [httpx.get(f"{base}/api/jobs/{i}", headers=basic(name), timeout=5).json() for i, name in ids.items()]

    with server(home.root, port, log, "--host", "0.0.0.0", "--join-code", "lighthouse") as proc:
        banner = wait_until(lambda: "Press Ctrl+C" in log.read_text() and log.read_text(), 30, "the banner", log=log)
        assert "Everyone signs in: 4 accounts" in banner and "lighthouse" in banner and "Access token" not in banner
        assert httpx.get(f"{base}/api/status", timeout=5).status_code == 401
        ids = {}
        for i, name in enumerate(["ann", "bo", "ann", "bo"]):
            answer = httpx.post(f"{base}/api/jobs", json={**SLOW_RECIPE, "seed": 7 + i}, headers=basic(name), timeout=30)
            ids[answer.json()["id"]] = name

        def running_job() -> dict | None:
            jobs = jobs_of(ids)
            assert not all(j["status"] == "done" for j in jobs), "every job finished before the server could be killed"
            return next((j for j in jobs if j["status"] == "running"), None)

        wait_until(running_job, 120, "a job to start running", proc, log)
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait(timeout=30)

    with server(home.root, port, log) as restarted:
        def finished() -> list[dict] | None:
            jobs = jobs_of(ids)  # each owner still reaches their own jobs
            return jobs if all(j["status"] in ("done", "failed", "cancelled") for j in jobs) else None

        jobs = wait_until(finished, 300, "the jobs to finish after the restart", restarted, log)
        assert [j["status"] for j in jobs] == ["done"] * 4, [j["error"] for j in jobs]
        for name in ("ann", "bo"):
            gallery = httpx.get(f"{base}/api/images", headers=basic(name), timeout=5).json()["items"]
            mine = sorted(i for job in jobs for i in job["result"]["images"] if ids[job["id"]] == name)
            assert sorted(item["id"] for item in gallery) == mine, name


def test_a_new_account_with_a_removed_accounts_name_starts_with_nothing(tmp_path):
    """`users remove` keeps the work; a later account of the same name must not inherit it."""
    from localdiffusion.store.accounts import Accounts
    from localdiffusion.store.db import Database

    with Database(tmp_path / "db.sqlite") as db:
        accounts = Accounts(db)
        old = accounts.add("anna", "a long enough password 1")
        accounts.remove("anna")
        new = accounts.add("anna", "a long enough password 2")
        assert new.owner_id != old.owner_id
