"""The studio's JSON API (/api) and its live events, over httpx (FastAPI's TestClient) on tiny models."""

from __future__ import annotations

import base64
import io
import re
import shutil
import struct
import time
import warnings
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from localdiffusion.metadata import read_image_metadata
from localdiffusion.server import api
from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home
from localdiffusion.store.thumbnails import thumbnail_path

from test_metadata import FIXTURES, needs_fixtures

RECIPE = {"prompt": "a red lighthouse", "model": "tiny-sd1", "steps": 2, "width": 64, "height": 64,
          "sampler_name": "Euler", "seed": 5}
SHOWN_FIELDS = [
    "prompt", "negative_prompt", "model", "width", "height", "steps", "cfg_scale", "sampler_name", "scheduler", "seed",
    "subseed", "subseed_strength", "batch_size", "n_iter", "denoising_strength", "clip_skip", "enable_hr", "hr_scale",
    "hr_upscaler", "hr_second_pass_steps", "mask_blur", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
    "outpaint",
]


def linked_home(root: Path, model_home: Home) -> Home:
    """A fresh home (its own database) whose checkpoint folder links the session's tiny models."""
    home = Home(root).ensure()
    for entry in model_home.model_dir("checkpoint").iterdir():
        (home.model_dir("checkpoint") / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def api_home(tmp_path_factory, model_home) -> Home:
    return linked_home(tmp_path_factory.mktemp("api-home"), model_home)


@pytest.fixture(scope="module")
def client(api_home):
    """A running studio (worker on); requests come from the tab 'tab-a'."""
    with TestClient(create_app(Studio.open(api_home)), headers={"X-Client-Id": "tab-a"}) as c:
        yield c


@pytest.fixture()
def idle_client(tmp_path, model_home):
    """A studio whose worker does not run, so that jobs stay queued."""
    with TestClient(create_app(Studio.open(linked_home(tmp_path / "home", model_home)), start_worker=False),
                    headers={"X-Client-Id": "tab-a"}) as c:
        yield c


def wait_done(client: TestClient, job_id: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def submit(client: TestClient, **changes) -> dict:
    response = client.post("/api/jobs", json={**RECIPE, **changes})
    assert response.status_code == 201, response.text
    return response.json()


def png_bytes(size=(32, 24), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 9000, height: int = 9000) -> bytes:
    """A small PNG whose header claims a huge image (81 megapixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def gallery(client) -> dict[str, int]:
    """Three finished images with different prompts: prompt word -> image id."""
    ids = {}
    for i, word in enumerate(["lighthouse", "volcano", "meadow"]):
        job = wait_done(client, submit(client, prompt=f"a {word} at dusk", seed=10 + i)["id"])
        assert job["status"] == "done", job["error"]
        ids[word] = job["result"]["images"][0]
    return ids


# --- status and models ---------------------------------------------------------------------


def test_status_without_models_explains_how_to_add_one(tmp_path):
    with TestClient(create_app(Studio.open(Home(tmp_path / "empty").ensure()), start_worker=False)) as c:
        status = c.get("/api/status").json()
        assert status["has_models"] is False and status["queue"] == {"queued": 0, "running": 0}
        for hint in ("models add PATH", "models pull REPO_ID", "extra_roots"):
            assert hint in status["add_models_help"]
        response = c.post("/api/jobs", json={"prompt": "a cat"})
        assert response.status_code == 404 and "models add" in response.json()["detail"]


def test_status_with_models(client):
    status = client.get("/api/status").json()
    assert status["has_models"] is True and status["device"] == "cpu" and status["dtype"] == "float32"
    assert status["version"] and set(status["queue"]) == {"queued", "running"}


def test_models_list_add_and_rescan(client, tmp_path, sd1_folder):
    models = client.get("/api/models", params={"kind": "checkpoint"}).json()
    by_name = {m["name"]: m for m in models}
    assert {"tiny-sd1", "tiny-sdxl", "tiny-sd2-v"} <= set(by_name)
    sd1 = by_name["tiny-sd1"]
    assert sd1["kind"] == "checkpoint" and sd1["family"] == "sd1" and sd1["format"] == "diffusers"
    assert re.fullmatch(r"[0-9a-f]{10}", sd1["short_hash"]) and sd1["size"] > 0 and sd1["native_size"] == 512
    assert by_name["tiny-sdxl"]["native_size"] == 1024

    copy = shutil.copytree(sd1_folder, tmp_path / "copied-sd1")
    added = client.post("/api/models", json={"path": str(copy)})
    assert added.status_code == 201 and added.json()["name"] == "copied-sd1" and added.json()["family"] == "sd1"
    assert "copied-sd1" in {m["name"] for m in client.post("/api/models/rescan").json()}

    missing = client.post("/api/models", json={"path": str(tmp_path / "nothing-here")})
    assert missing.status_code == 400 and missing.json()["field"] == "path"
    assert client.get("/api/models", params={"kind": "nonsense"}).status_code == 400


def test_samplers_schedulers_upscalers_and_presets(client):
    samplers = {s["name"]: s for s in client.get("/api/samplers").json()}
    assert samplers["DPM++ 2M"]["automatic"] == "Karras" and "Karras" in samplers["DPM++ 2M"]["schedule_types"]
    assert samplers["DPM++ 2M"]["contract"] == "A1111" and samplers["DEIS"]["contract"] == "diffusers"
    assert samplers["DDIM"]["schedule_types"] == ["Automatic"]
    assert client.get("/api/schedulers").json() == ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
                                                    "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
    assert {"Latent", "Lanczos"} <= set(client.get("/api/upscalers").json())
    presets = client.get("/api/presets").json()
    assert [1024, 1024] in presets["sdxl"] and [512, 512] in presets["sd1"] and [768, 768] in presets["sd2-v"]
    assert all(w % 64 == 0 and h % 64 == 0 for sizes in presets.values() for w, h in sizes)


def test_every_parameter_has_a_plain_explanation(client):
    params = client.get("/api/parameters").json()
    assert set(SHOWN_FIELDS) <= set(params)
    for name, entry in params.items():
        assert entry["label"] and entry["help"].endswith("."), name
        assert 1 <= len(re.findall(r"[.!?](\s|$)", entry["help"])) <= 2, f"{name}: one or two sentences"
        assert {"min", "max", "step", "default"} <= set(entry)
    assert params["steps"]["min"] == 1 and params["steps"]["max"] == 150 and params["steps"]["default"] == 20
    assert params["width"]["max"] == 2048 and params["cfg_scale"]["default"] == 7.0


# --- uploads and metadata --------------------------------------------------------------------


def test_upload_keeps_an_image_by_content(client, api_home):
    first = client.post("/api/uploads", files={"file": ("../../etc/passwd.png", png_bytes(), "image/png")})
    assert first.status_code == 201, first.text
    body = first.json()
    assert re.fullmatch(r"inputs/[0-9a-f]{24}\.png", body["ref"]) and (body["width"], body["height"]) == (32, 24)
    assert (api_home.root / body["ref"]).is_file()
    again = client.post("/api/uploads", files={"file": ("other-name.png", png_bytes(), "image/png")})
    assert again.json()["ref"] == body["ref"]


def test_upload_refuses_oversize_files(client, monkeypatch):
    monkeypatch.setattr(api, "upload_limit", lambda studio: 1024)
    response = client.post("/api/uploads", files={"file": ("big.png", png_bytes((256, 256)) + b"\0" * 4096, "image/png")})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_upload_refuses_non_images_and_decompression_bombs(client):
    text = client.post("/api/uploads", files={"file": ("notes.png", b"just some text, not pixels", "image/png")})
    assert text.status_code == 400 and "not a readable image" in text.json()["detail"]
    bomb = client.post("/api/uploads", files={"file": ("bomb.png", bomb_png(), "image/png")})
    assert bomb.status_code == 400 and "9000x9000" in bomb.json()["detail"]


def test_upload_far_above_pillows_limit_is_refused_as_too_large(client):
    # 900 megapixels: Pillow itself refuses to open it, before our own size check reads the header.
    bomb = client.post("/api/uploads", files={"file": ("huge.png", bomb_png(30000, 30000), "image/png")})
    assert bomb.status_code == 400, bomb.text
    assert bomb.json()["detail"] == ("The upload is too large: 858 megapixels, above the limit of 64 megapixels; "
                                     "use a smaller image.")


def test_upload_in_pillows_warning_range_is_refused_as_too_large_when_warnings_are_errors(client):
    # 100 megapixels: Pillow only warns; where warnings are raised (python -W error), it is still "too large".
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        bomb = client.post("/api/uploads", files={"file": ("big.png", bomb_png(10000, 10000), "image/png")})
    assert bomb.status_code == 400 and "too large: 95 megapixels, above the limit of 64" in bomb.json()["detail"]


@needs_fixtures
def test_pnginfo_reads_other_tools_images(client):
    a1111 = client.post("/api/pnginfo", files={"file": ("x.png", (FIXTURES / "AUTOMATIC1111__automatic1111_cropped.png").read_bytes())})
    assert a1111.status_code == 200, a1111.text
    body = a1111.json()
    assert body["source"] == "a1111" and body["fields"]["prompt"] == "photo of a duck"
    assert body["model_hash"] == "c0d1994c73" and body["recipe"]["steps"] == 15
    assert body["infotext"].startswith("photo of a duck\nNegative prompt: monochrome")
    comfy = client.post("/api/pnginfo", files={"file": ("y.png", (FIXTURES / "ComfyUI__img2img_cropped.png").read_bytes())}).json()
    assert comfy["source"] == "comfyui" and comfy["fields"]
    plain = client.post("/api/pnginfo", files={"file": ("z.png", png_bytes())}).json()
    assert plain["source"] is None and plain["recipe"] is None
    assert client.post("/api/pnginfo", files={"file": ("z.png", b"not an image")}).status_code == 400


# --- jobs ------------------------------------------------------------------------------------


def test_a_job_runs_and_its_image_can_be_fetched(client):
    job = submit(client)
    assert {"id", "status", "position", "created_at", "recipe"} <= set(job)
    assert "tab-a" not in str(job) and job["recipe"]["prompt"] == "a red lighthouse"  # the client id is its secret
    done = wait_done(client, job["id"])
    assert done["status"] == "done" and done["result"]["seeds"] == [5] and done["error"] is None
    assert "Steps: 2" in done["result"]["infotexts"][0]
    image_id = done["result"]["images"][0]
    file = client.get(f"/api/images/{image_id}/file")
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert f'filename="{image_id}-5.png"' in file.headers["content-disposition"]
    assert Image.open(io.BytesIO(file.content)).size == (64, 64)
    assert read_image_metadata(file.content).fields["prompt"] == "a red lighthouse"
    detail = client.get(f"/api/images/{image_id}").json()
    assert detail["recipe"]["seed"] == 5 and detail["infotext"].startswith("a red lighthouse")
    assert any(j["id"] == job["id"] for j in client.get("/api/jobs").json())
    assert not any(j["id"] == job["id"] for j in client.get("/api/jobs", headers={"X-Client-Id": "tab-b"}).json())


def test_a_thumbnail_is_made_once(client, api_home, gallery):
    image_id = gallery["volcano"]
    first = client.get(f"/api/images/{image_id}/thumb")
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    assert max(Image.open(io.BytesIO(first.content)).size) <= 256
    cached = thumbnail_path(api_home.cache, image_id)
    made = cached.stat().st_mtime_ns
    time.sleep(0.05)
    second = client.get(f"/api/images/{image_id}/thumb")
    assert second.content == first.content and cached.stat().st_mtime_ns == made


def test_gallery_search_paging_star_and_delete(client, gallery):
    found = client.get("/api/images", params={"q": "volcano"}).json()["items"]
    assert [i["id"] for i in found] == [gallery["volcano"]]
    assert found[0]["url"] == f"/api/images/{gallery['volcano']}/file" and found[0]["thumb"].endswith("/thumb")

    everything = client.get("/api/images", params={"limit": 200}).json()["items"]
    ids = [i["id"] for i in everything]
    assert ids == sorted(ids, reverse=True)  # newest first
    page = client.get("/api/images", params={"offset": 1, "limit": 2}).json()
    assert [i["id"] for i in page["items"]] == ids[1:3] and page["has_more"] == (len(ids) > 3)
    last = client.get("/api/images", params={"offset": len(ids) - 1, "limit": 2}).json()
    assert len(last["items"]) == 1 and last["has_more"] is False

    starred = client.patch(f"/api/images/{gallery['meadow']}", json={"starred": True})
    assert starred.status_code == 200 and starred.json()["starred"] is True
    assert [i["id"] for i in client.get("/api/images", params={"starred": "true"}).json()["items"]] == [gallery["meadow"]]

    assert client.delete(f"/api/images/{gallery['lighthouse']}").status_code == 200
    assert gallery["lighthouse"] not in [i["id"] for i in client.get("/api/images", params={"limit": 200}).json()["items"]]
    assert client.get(f"/api/images/{gallery['lighthouse']}").status_code == 404
    assert client.get("/api/images/999999/thumb").status_code == 404


@pytest.mark.parametrize("field, value, words", [
    ("steps", 0, ["steps"]),
    ("width", 100, ["width", "96", "104"]),
    ("cfg_scale", "lots", ["cfg_scale"]),
    ("colour", "red", ["colour"]),
])
def test_a_bad_field_gets_422_naming_it(idle_client, field, value, words):
    response = idle_client.post("/api/jobs", json={**RECIPE, field: value})
    assert response.status_code == 422
    body = response.json()
    assert all(w in body["detail"] for w in words)
    assert body.get("field") == field or body["errors"][0]["field"] == field


def test_unknown_model_or_sampler_lists_what_exists(idle_client):
    model = idle_client.post("/api/jobs", json={**RECIPE, "model": "dreamshaper-9000"})
    assert model.status_code == 404 and model.json()["field"] == "model" and "tiny-sd1" in model.json()["detail"]
    sampler = idle_client.post("/api/jobs", json={**RECIPE, "sampler_name": "Warp Drive"})
    assert sampler.status_code == 422 and sampler.json()["field"] == "sampler_name"
    assert "Euler a" in sampler.json()["detail"] and "DPM++ 2M" in sampler.json()["detail"]


def test_input_images_must_be_uploads_never_paths(idle_client):
    response = idle_client.post("/api/jobs", json={**RECIPE, "mode": "img2img", "init_image": "/etc/hostname"})
    assert response.status_code == 422 and response.json()["field"] == "init_image"
    ref = idle_client.post("/api/uploads", files={"file": ("a.png", png_bytes((64, 64)))}).json()["ref"]
    no_mask = idle_client.post("/api/jobs", json={**RECIPE, "mode": "inpaint", "init_image": ref})
    assert no_mask.status_code == 422 and no_mask.json()["field"] == "mask"
    no_sides = idle_client.post("/api/jobs", json={**RECIPE, "mode": "outpaint", "init_image": ref})
    assert no_sides.status_code == 422 and no_sides.json()["field"] == "outpaint"
    assert idle_client.post("/api/jobs", json={**RECIPE, "mode": "img2img", "init_image": ref}).status_code == 201
    assert idle_client.post("/api/jobs", json={**RECIPE, "model": "../tiny-sd1"}).status_code == 422


def test_the_studio_checks_by_the_engines_validator_before_queueing(idle_client):
    """LoRAs, the outpaint canvas and the inputs' own sizes are checked by Engine.prepare at submit, not when the job runs."""
    lora = idle_client.post("/api/jobs", json={**RECIPE, "prompt": "x <lora:no-such-lora:1>"})
    assert lora.status_code == 404 and lora.json()["field"] == "prompt" and "no-such-lora" in lora.json()["detail"]
    path = idle_client.post("/api/jobs", json={**RECIPE, "negative_prompt": "<lora:../x:1>"})
    assert path.status_code == 422 and path.json()["field"] == "negative_prompt" and "looks like a path" in path.json()["detail"]
    ref = idle_client.post("/api/uploads", files={"file": ("a.png", png_bytes((64, 64)))}).json()["ref"]
    wide = idle_client.post("/api/jobs", json={**RECIPE, "mode": "outpaint", "init_image": ref, "inpaint_full_res": True,
                                               "outpaint": {"left": 100000}})
    assert wide.status_code == 422 and wide.json()["field"] == "outpaint" and "makes a canvas" in wide.json()["detail"]
    odd = idle_client.post("/api/uploads", files={"file": ("b.png", png_bytes((100, 60)))}).json()["ref"]
    mask = idle_client.post("/api/uploads", files={"file": ("m.png", png_bytes((64, 64), (255, 255, 255)))}).json()["ref"]
    mismatch = idle_client.post("/api/jobs", json={**RECIPE, "mode": "inpaint", "init_image": odd, "mask": mask})
    assert mismatch.status_code == 422 and mismatch.json()["field"] == "mask" and "same size" in mismatch.json()["detail"]
    assert idle_client.get("/api/jobs").json() == []  # nothing was queued


def test_only_the_submitting_client_can_cancel(idle_client):
    first = submit(idle_client)
    second = submit(idle_client)
    assert first["status"] == "queued" and second["position"] == 1
    other = idle_client.delete(f"/api/jobs/{first['id']}", headers={"X-Client-Id": "tab-b"})
    assert other.status_code == 403 and "another client" in other.json()["detail"]
    mine = idle_client.delete(f"/api/jobs/{first['id']}")
    assert mine.status_code == 200 and mine.json()["status"] == "cancelled"
    assert idle_client.get(f"/api/jobs/{second['id']}").json()["position"] == 0
    assert idle_client.delete(f"/api/jobs/{first['id']}").status_code == 409
    assert idle_client.delete("/api/jobs/424242").status_code == 404


# --- live events ---------------------------------------------------------------------------------


def receive_until(ws, job_id: int, last: str, limit: int = 200) -> list[dict]:
    """Messages for `job_id` up to and including the `last` type (bounded by a message count)."""
    messages = []
    for _ in range(limit):
        message = ws.receive_json()
        assert message["job_id"] == job_id, f"an event of another job reached this client: {message}"
        messages.append(message)
        if message["type"] == last:
            return messages
    raise AssertionError(f"no '{last}' event for job {job_id}")


@pytest.mark.timeout(120)
def test_each_client_sees_only_its_own_job_events(client):
    with client.websocket_connect("/api/events?client=tab-a") as ws_a, client.websocket_connect("/api/events?client=tab-b") as ws_b:
        job_a = submit(client, steps=3)
        events = receive_until(ws_a, job_a["id"], "done")
        types = [m["type"] for m in events]
        # "queued" comes first unless the worker started the job before the API announced it.
        assert types[0] in ("queued", "started") and "queued" not in types[types.index("started"):]
        assert types.count("step") == 3 and types[-1] == "done"
        steps = [m for m in events if m["type"] == "step"]
        assert steps[-1]["data"]["step"] == 3 and steps[-1]["data"]["total"] == 3
        preview = steps[-1]["preview"]
        assert preview.startswith("data:image/webp;base64,")
        Image.open(io.BytesIO(base64.b64decode(preview.split(",", 1)[1]))).verify()
        assert events[-1]["data"]["result"]["images"]

        # tab-b's socket got nothing of tab-a's job: the first thing it hears is its own job.
        job_b = client.post("/api/jobs", json=RECIPE, headers={"X-Client-Id": "tab-b"}).json()
        assert receive_until(ws_b, job_b["id"], "done")[-1]["type"] == "done"


# --- access token ------------------------------------------------------------------------------


def test_the_access_token_is_required_when_set(tmp_path):
    studio = Studio.open(Home(tmp_path / "home").ensure(), token="t")
    app = create_app(studio, start_worker=False)
    with TestClient(app) as anonymous:
        assert anonymous.get("/api/status").status_code == 401
        assert anonymous.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with pytest.raises(WebSocketDisconnect):
            with anonymous.websocket_connect("/api/events?client=x") as ws:
                ws.receive_json()
    basic = "Basic " + base64.b64encode(b"user:t").decode()
    for headers in ({"Authorization": "Bearer t"}, {"Authorization": basic}, {"Cookie": "ld_token=t"}):
        with TestClient(app) as c:
            assert c.get("/api/status", headers=headers).status_code == 200, headers
    with TestClient(app) as browser:
        opened = browser.get("/?token=t", follow_redirects=False)
        assert opened.status_code in (200, 303) and "ld_token=t" in opened.headers["set-cookie"]
        assert browser.get("/api/status").status_code == 200  # the cookie now carries the token
        with browser.websocket_connect("/api/events?client=x") as ws:
            ws.close()


def test_errors_carry_a_stable_code_and_values_beside_the_english_detail(idle_client):
    bad = idle_client.post("/api/jobs", json={**RECIPE, "cfg_scale": "lots"}).json()
    assert bad["code"] == "invalid_field"
    assert bad["values"]["field"] == "cfg_scale" and bad["values"]["message"] in bad["detail"]
    assert bad["detail"].startswith("The field 'cfg_scale' is not valid")  # A1111 clients keep the English sentence
