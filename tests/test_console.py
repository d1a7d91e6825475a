"""The facilitator's console API (server/console.py): the join code on and off with its QR code, the class's
usage, and the exports (exactly the right files, metadata kept, streamed without holding the zip in memory)."""

from __future__ import annotations

import base64
import io
import json
import tracemalloc
import zipfile

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from localdiffusion.metadata import read_image_metadata
from localdiffusion.recipe import Recipe
from localdiffusion.server.access import FACILITATOR, ROUTES
from localdiffusion.server.app import create_app
from localdiffusion.server.console import unique_folders, zip_stream
from localdiffusion.server.studio import Studio
from localdiffusion.server.usage import NOMINAL_WATTS
from localdiffusion.store.accounts import Accounts
from localdiffusion.store.db import Database
from localdiffusion.store.home import Home
from localdiffusion.store.png import png_with_metadata

from web_server import running_studio

PASSWORDS = {"ann": "ann-password-1", "bo": "bo-password-22", "fay": "fay-password-333"}
ROLES = {"ann": "participant", "bo": "participant", "fay": "facilitator"}
RECIPE = {"prompt": "a red lighthouse", "model": "tiny-sd1", "steps": 2, "width": 64, "height": 64, "seed": 5}


def basic(name: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{PASSWORDS[name]}".encode()).decode()}


def class_home(root) -> Home:
    home = Home(root).ensure()
    with Database(home.db_path) as db:
        for name, password in PASSWORDS.items():
            Accounts(db).add(name, password, ROLES[name])
    return home


@pytest.fixture()
def client(tmp_path):
    with TestClient(create_app(Studio.open(class_home(tmp_path / "home")), start_worker=False)) as client:
        yield client


def add_image(studio: Studio, name: str, prompt: str, size: int = 32, noise: bool = False) -> int:
    """An image of `name`'s with our metadata (infotext and recipe), as a job would save it."""
    owner = studio.accounts.get(name).owner_id
    picture = Image.frombytes("RGB", (size, size), __import__("os").urandom(size * size * 3)) if noise \
        else Image.new("RGB", (size, size), (10, 20, 30))
    recipe = Recipe.model_validate({**RECIPE, "prompt": prompt})
    data = png_with_metadata(picture, f"{prompt}\nSteps: 2, Seed: 5", recipe.model_dump_json())
    folder = studio.home.outputs / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prompt.replace(' ', '-')}.png"
    path.write_bytes(data)
    return studio.db.add_image(path=path, recipe_json=recipe.model_dump_json(), width=size, height=size, prompt=prompt,
                               owner_id=owner)


def test_the_console_routes_are_for_facilitators(client):
    for key in ("GET /api/class/join", "PUT /api/class/join", "GET /api/class/join/qr.svg", "GET /api/class/usage",
                "GET /api/class/export"):
        assert ROUTES[key] == FACILITATOR
    for path in ("/api/class/join", "/api/class/join/qr.svg", "/api/class/usage", "/api/class/export"):
        answer = client.get(path, headers=basic("ann"))
        assert answer.status_code == 403 and "facilitator" in answer.json()["detail"], path
        assert client.get(path).status_code == 401
    assert client.put("/api/class/join", json={"enabled": True}, headers=basic("ann")).status_code == 403
    assert client.get("/api/me/export", headers=basic("ann")).status_code == 200


def test_join_on_and_off_with_its_qr_code_and_kept_over_a_restart(tmp_path):
    home = class_home(tmp_path / "home")
    with TestClient(create_app(Studio.open(home), start_worker=False)) as client:
        fay = basic("fay")
        assert client.get("/api/class/join", headers=fay).json() == {
            "enabled": False, "code": None, "address": "http://testserver/", "url": None}
        assert client.get("/api/class/join/qr.svg", headers=fay).status_code == 404
        assert client.get("/api/auth/me").json()["join"] is False
        short = client.put("/api/class/join", json={"enabled": True, "code": "ab"}, headers=fay)
        assert short.status_code == 422 and short.json()["field"] == "code"
        bad = client.put("/api/class/join", json={"enabled": True, "address": "studio.local"}, headers=fay)
        assert bad.status_code == 400 and bad.json()["field"] == "address"
        on = client.put("/api/class/join", json={"enabled": True, "code": "lighthouse", "address": "http://10.0.0.5:7860"},
                        headers=fay).json()
        assert on == {"enabled": True, "code": "lighthouse", "address": "http://10.0.0.5:7860/",
                      "url": "http://10.0.0.5:7860/#join=lighthouse"}
        assert client.get("/api/auth/me").json()["join"] is True
        qr = client.get("/api/class/join/qr.svg", headers=fay)
        assert qr.status_code == 200 and qr.headers["content-type"] == "image/svg+xml"
        assert qr.text.lstrip().startswith("<svg") and "<path" in qr.text
        made = client.post("/api/auth/join", json={"code": "lighthouse", "username": "dan", "password": "dan-password"})
        assert made.status_code == 201
    with TestClient(create_app(Studio.open(home), start_worker=False)) as client:  # a restart keeps the code
        assert client.get("/api/class/join", headers=basic("fay")).json()["code"] == "lighthouse"
        off = client.put("/api/class/join", json={"enabled": False}, headers=basic("fay")).json()
        assert off["enabled"] is False and off["url"] is None
        refused = client.post("/api/auth/join", json={"code": "lighthouse", "username": "eve", "password": "eve-password"})
        assert refused.status_code == 404
        actions = [a["action"] for a in client.get("/api/class/audit", headers=basic("fay")).json()]
        assert actions == ["join off", "join on"]
    with TestClient(create_app(Studio.open(home), start_worker=False)) as client:
        assert client.get("/api/class/join", headers=basic("fay")).json()["enabled"] is False


def test_usage_totals_per_device_with_a_labelled_estimate_and_each_jobs_own(client):
    studio = client.app.state.studio
    recipe = Recipe.model_validate(RECIPE)
    ann, bo = studio.accounts.get("ann").owner_id, studio.accounts.get("bo").owner_id
    ran = []
    for owner, device, seconds in ((ann, "cpu", 36.0), (bo, "cpu", 72.0), (ann, "cuda:0 (Test GPU)", 18.0)):
        job = studio.queue.submit(recipe, owner)
        claimed = studio.queue.claim(0.1)
        assert claimed.id == job.id
        studio.queue.record_run(job.id, device, seconds)
        studio.queue.finish(job.id, {"images": []})
        ran.append(job.id)
    studio.queue.submit(recipe, ann)  # still queued: no usage yet
    usage = client.get("/api/class/usage", headers=basic("fay")).json()
    assert usage["jobs"] == 3 and usage["gpu_seconds"] == 126.0 and usage["estimate"] is True
    devices = {d["device"]: d for d in usage["devices"]}
    assert set(devices) == {"cpu", "cuda:0 (Test GPU)"}
    assert devices["cpu"]["jobs"] == 2 and devices["cpu"]["gpu_seconds"] == 108.0
    assert devices["cpu"]["energy_wh"] == pytest.approx(108 * NOMINAL_WATTS["cpu"] / 3600, abs=1e-3)
    assert devices["cpu"]["measured"] is False and devices["cpu"]["note"].startswith("Estimate:")
    gpu = devices["cuda:0 (Test GPU)"]
    assert gpu["gpu_seconds"] == 18.0 and (gpu["measured"] or gpu["watts"] == NOMINAL_WATTS["cuda"])
    assert usage["energy_wh"] == pytest.approx(sum(d["energy_wh"] for d in usage["devices"]), abs=1e-3)
    # the class list's GPU-seconds today agree
    users = {u["name"]: u for u in client.get("/api/class/users", headers=basic("fay")).json()}
    assert users["ann"]["gpu_seconds_today"] == 54.0 and users["bo"]["gpu_seconds_today"] == 72.0
    # each participant sees their own job's usage on it
    job = client.get(f"/api/jobs/{ran[0]}", headers=basic("ann")).json()
    assert job["device"] == "cpu" and job["gpu_seconds"] == 36.0
    assert job["usage"] == {"device": "cpu", "gpu_seconds": 36.0, "energy_wh": round(36 * NOMINAL_WATTS["cpu"] / 3600, 3),
                            "watts": NOMINAL_WATTS["cpu"], "estimate": True, "note": job["usage"]["note"]}
    assert "nominal" in job["usage"]["note"]


def test_exports_hold_exactly_each_persons_images_and_comics_with_metadata(client):
    studio = client.app.state.studio
    images = {name: [add_image(studio, name, f"{name} {n}") for n in range(2)] for name in ("ann", "bo")}
    fays = add_image(studio, "fay", "fay demo")
    comic = client.post("/api/comics", json={"title": "Ann's comic"}, headers=basic("ann")).json()
    assert client.delete(f"/api/images/{images['bo'][1]}", headers=basic("bo")).status_code in (200, 204)

    ann_zip = client.get("/api/me/export", headers=basic("ann"))
    assert ann_zip.status_code == 200 and ann_zip.headers["content-type"] == "application/zip"
    assert "attachment" in ann_zip.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(ann_zip.content))
    assert sorted(archive.namelist()) == sorted(
        [f"images/{i}-ann-{n}.png" for n, i in enumerate(images["ann"])] + [f"comics/{comic['id']}.pdf", f"comics/{comic['id']}.cbz"])
    assert archive.read(f"comics/{comic['id']}.pdf").startswith(b"%PDF")
    assert zipfile.ZipFile(io.BytesIO(archive.read(f"comics/{comic['id']}.cbz"))).namelist()  # a CBZ is a zip of pages
    assert archive.testzip() is None

    bo_zip = zipfile.ZipFile(io.BytesIO(client.get("/api/me/export", headers=basic("bo")).content))
    assert bo_zip.namelist() == [f"images/{images['bo'][0]}-bo-0.png"]  # the deleted one is not in it

    whole = zipfile.ZipFile(io.BytesIO(client.get("/api/class/export", headers=basic("fay")).content))
    assert sorted(whole.namelist()) == sorted(
        [f"ann/images/{i}-ann-{n}.png" for n, i in enumerate(images["ann"])]
        + [f"ann/comics/{comic['id']}.pdf", f"ann/comics/{comic['id']}.cbz",
           f"bo/images/{images['bo'][0]}-bo-0.png", f"fay/images/{fays}-fay-demo.png"])
    # each PNG is the stored file, its metadata (infotext and recipe) kept
    stored = studio.db.get_image(images["ann"][1])
    data = whole.read(f"ann/images/{images['ann'][1]}-ann-1.png")
    assert data == open(stored.path, "rb").read()
    copy = studio.home.root / "copy.png"
    copy.write_bytes(data)
    meta = read_image_metadata(copy)
    assert meta.fields["prompt"] == "ann 1" and meta.fields["steps"] == 2
    assert json.loads(Image.open(io.BytesIO(data)).text["localdiffusion"])["prompt"] == "ann 1"
    assert client.get("/api/class/audit", headers=basic("fay")).json()[0]["action"] == "export"


def test_zip_stream_hands_on_each_piece_as_it_is_written(tmp_path):
    files = []
    for n in range(3):
        path = tmp_path / f"{n}.bin"
        path.write_bytes(bytes([n]) * 300_000)
        files.append(path)
    pieces = list(zip_stream([(p.name, p) for p in files] + [("made.txt", lambda: b"made late")]))
    assert len(pieces) >= 4 and max(len(p) for p in pieces) < 400_000
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.namelist() == ["0.bin", "1.bin", "2.bin", "made.txt"]
    assert archive.read("2.bin") == bytes([2]) * 300_000 and archive.read("made.txt") == b"made late"


def test_the_class_export_streams_without_holding_the_zip_in_memory(tmp_path):
    home = class_home(tmp_path / "home")
    with running_studio(home) as server:
        studio = server.studio
        for n in range(60):  # about 190 KB each (noise does not compress): some 11 MB of PNG
            add_image(studio, "ann" if n % 2 else "bo", f"picture {n}", size=256, noise=True)
        total = sum(p.stat().st_size for p in (studio.home.outputs).rglob("*.png"))
        auth = ("fay", PASSWORDS["fay"])
        with httpx.Client(base_url=server.url, auth=auth, timeout=60) as http:
            http.get("/api/me/export").read()  # first use: imports and caches, not the export's own memory
            received = 0
            tracemalloc.start()
            try:
                with http.stream("GET", "/api/class/export") as answer:
                    assert answer.status_code == 200
                    listing = io.BytesIO()
                    for piece in answer.iter_bytes():
                        received += len(piece)
                        listing.write(piece[-4096:])  # keep only tails: the test itself holds little
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert received > total > 10_000_000
    assert peak < total / 3, f"peak {peak} bytes while streaming {total} bytes"


def test_the_schema_names_the_consoles_files_with_their_media_types(client):
    from fastapi.routing import APIRoute

    from localdiffusion.server import console
    from localdiffusion.server.openapi import answers_bytes, binary_answers

    files = {route.path_format for route in console.router.routes if isinstance(route, APIRoute) and answers_bytes(route)}
    assert files == {"/api/class/join/qr.svg", "/api/class/export", "/api/me/export", "/api/me/work.zip"} and files <= set(binary_answers())
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/class/export", "/api/me/export", "/api/me/work.zip"):
        assert set(paths[path]["get"]["responses"]["200"]["content"]) == {"application/zip"}
    assert set(paths["/api/class/join/qr.svg"]["get"]["responses"]["200"]["content"]) == {"image/svg+xml"}


def test_a_gpu_that_reports_its_power_is_measured_not_estimated(client, monkeypatch):
    import types

    calls = []
    fake = types.SimpleNamespace(nvmlInit=lambda: calls.append("init"), nvmlShutdown=lambda: calls.append("shutdown"),
                                 nvmlDeviceGetHandleByIndex=lambda index: ("gpu", index),
                                 nvmlDeviceGetPowerUsage=lambda handle: 123_000 if handle == ("gpu", 1) else 0)  # milliwatts
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    studio = client.app.state.studio
    job = studio.queue.submit(Recipe.model_validate(RECIPE), studio.accounts.get("ann").owner_id)
    studio.queue.claim(0.1)
    studio.queue.record_run(job.id, "cuda:1 (Test GPU)", 36.0)
    studio.queue.finish(job.id, {"images": []})
    usage = client.get("/api/class/usage", headers=basic("fay")).json()
    assert usage["estimate"] is False and calls == ["init", "shutdown"]
    assert usage["devices"] == [{"device": "cuda:1 (Test GPU)", "jobs": 1, "gpu_seconds": 36.0, "watts": 123.0, "measured": True,
                                 "note": usage["devices"][0]["note"], "energy_wh": 1.23}]
    assert "reported power draw" in usage["devices"][0]["note"]


def test_without_accounts_the_owner_exports_the_homes_work(tmp_path):
    home = Home(tmp_path / "home").ensure()
    with TestClient(create_app(Studio.open(home), start_worker=False)) as client:
        studio = client.app.state.studio
        path = home.outputs / "mine.png"
        path.write_bytes(png_with_metadata(Image.new("RGB", (8, 8)), "mine", None))
        image = studio.db.add_image(path=path, recipe_json="{}", width=8, height=8, prompt="mine", owner_id=studio.owner_id)
        assert zipfile.ZipFile(io.BytesIO(client.get("/api/class/export").content)).namelist() == [f"owner/images/{image}-mine.png"]
        assert zipfile.ZipFile(io.BytesIO(client.get("/api/me/export").content)).namelist() == [f"images/{image}-mine.png"]


def test_class_export_folders_stay_distinct_where_names_differ_only_in_case():
    assert unique_folders(["ann", "Ann", "bo", "owner", "OWNER", "ann"]) == ["ann", "Ann-2", "bo", "owner", "OWNER-2", "ann-3"]
