"""Hardening against hostile or careless requests: no upload stalls the server, every size is checked
before anything is allocated, and every bad value is a 4xx sentence (issue 23)."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import pytest
from PIL import Image, PngImagePlugin

from localdiffusion.infotext import MAX_INFOTEXT
from localdiffusion.metadata.stealth import write_stealth

from web_server import running_studio


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stealth_bomb() -> bytes:
    """A 20 MB parameter line without a colon, gzip-compressed into the alpha bits of a 400x400 PNG."""
    return png_bytes(write_stealth(Image.new("RGB", (400, 400), "white"), "a" * 20_000_000))


@pytest.fixture(scope="module")
def long_line() -> bytes:
    """A PNG whose `parameters` text is one line of word characters without a colon, just under the limit:
    A1111's regex took 1.5 s for 20,000 such characters and 6.2 s for 40,000, holding the GIL."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a" * (MAX_INFOTEXT - 1))
    return png_bytes(Image.new("RGB", (8, 8)), pnginfo=info)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from localdiffusion.store.home import Home

    with running_studio(Home(tmp_path_factory.mktemp("hardening-home")).ensure()) as running:
        yield running


def post_png_info(client: httpx.Client, route: str, data: bytes) -> httpx.Response:
    if route == "/api/pnginfo":
        return client.post(route, files={"file": ("image.png", data, "image/png")})
    return client.post(route, json={"image": base64.b64encode(data).decode("ascii")})


@pytest.mark.parametrize("route", ["/api/pnginfo", "/sdapi/v1/png-info"])
@pytest.mark.parametrize("upload", ["stealth_bomb", "long_line"])
def test_a_malicious_png_info_upload_never_stalls_other_requests(server, route, upload, request):
    data = request.getfixturevalue(upload)
    answer: dict[str, object] = {}
    with httpx.Client(base_url=server.url, timeout=30) as uploading, httpx.Client(base_url=server.url, timeout=30) as other:

        def send() -> None:
            started = time.perf_counter()
            answer["response"] = post_png_info(uploading, route, data)
            answer["seconds"] = time.perf_counter() - started

        uploader = threading.Thread(target=send)
        uploader.start()
        waits = []
        while True:  # other requests, timed while the upload is in flight (at least one)
            started = time.perf_counter()
            assert other.get("/api/status").status_code == 200
            waits.append(time.perf_counter() - started)
            if not uploader.is_alive():
                break
        uploader.join()
    assert max(waits) < 0.5, waits
    assert answer["seconds"] < 1.0
    response = answer["response"]
    if upload == "stealth_bomb":
        assert response.status_code == 400
        body = response.json()
        assert body["field"] == ("file" if route == "/api/pnginfo" else "image")
        assert body["detail"].startswith("The text hidden in the image's pixels (stealth_pnginfo) is more than 262,144 bytes")
        assert "above the limit of 65,536 characters" in body["detail"]
    else:
        assert response.status_code == 200, response.text
        body = response.json()
        prompt = body["fields"]["prompt"] if route == "/api/pnginfo" else body["parameters"]["Prompt"]
        assert prompt == "a" * (MAX_INFOTEXT - 1)


# --- sizes, LoRAs and files: checked before anything is allocated, kept or queued -------------------------


@pytest.fixture(scope="module")
def model_studio(tmp_path_factory, model_home, sd1_folder):
    """The tiny models and a LoRA ('tiny-style'); no worker, so that whatever is queued stays in the queue."""
    from fastapi.testclient import TestClient

    from localdiffusion.server.app import create_app
    from localdiffusion.server.studio import Studio
    from test_a1111 import make_home

    home = make_home(tmp_path_factory.mktemp("hardening-models"), model_home, sd1_folder)
    with TestClient(create_app(Studio.open(home), start_worker=False), headers={"X-Client-Id": "tab-a"}) as client:
        yield client


def kept_inputs(client) -> set[str]:
    folder = client.app.state.studio.home.root / "inputs"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def queued(client) -> int:
    studio = client.app.state.studio
    return len(studio.queue.list(owner_id=studio.owner_id, limit=200))


def b64_png(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


@pytest.mark.parametrize("changes, status, field", [
    ({"width": 16000, "height": 16000}, 400, "width"),  # resized before the check: +0.94 GB
    ({"width": 1_000_000, "height": 64}, 400, "width"),
    ({"width": 64, "height": 0}, 422, "height"),  # a 500 before
    ({"width": -64, "height": 64}, 422, "width"),
    ({"prompt": "<lora:no-such-lora:0.8> a cat"}, 404, "prompt"),
    ({"prompt": "<lora:../../etc/passwd:1> a cat"}, 400, "prompt"),
])
def test_a_refused_a1111_img2img_leaves_no_file_and_no_job(model_studio, changes, status, field):
    before_files, before_jobs = kept_inputs(model_studio), queued(model_studio)
    body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "init_images": [b64_png(Image.new("RGB", (64, 64), "red"))],
            **changes}
    r = model_studio.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["detail"].endswith(".")
    assert kept_inputs(model_studio) == before_files and queued(model_studio) == before_jobs


def test_a1111_hires_without_a_first_pass_width_is_a_sentence(model_studio):
    # A1111 1.10 divides by the width to reach hr_resize_x (and fails with a ZeroDivisionError); so did this server.
    r = model_studio.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 0, "height": 64, "enable_hr": True, "hr_resize_x": 128})
    assert r.status_code == 422 and r.json()["field"] == "width"
    assert "first pass needs a width and a height" in r.json()["detail"]


def test_a1111_firstphase_size_is_the_first_pass(model_studio):
    # Clients of A1111 before 1.0 give the final size as width/height and the first pass as firstphase_*;
    # A1111 1.10 still takes firstphase_* as the first pass (StableDiffusionProcessingTxt2Img.__post_init__).
    from localdiffusion.server.a1111.schemas import Txt2ImgRequest
    from test_a1111 import recipe_for

    recipe = recipe_for(model_studio, Txt2ImgRequest(prompt="x", width=128, height=128, firstphase_width=64, firstphase_height=64,
                                                     enable_hr=True, hr_scale=2.0))
    assert (recipe.width, recipe.height, recipe.enable_hr, recipe.hr_scale) == (64, 64, True, 2.0)


@pytest.fixture(scope="module")
def upload_ref(model_studio) -> str:
    r = model_studio.post("/api/uploads", files={"file": ("red.png", png_bytes(Image.new("RGB", (64, 64), "red")), "image/png")})
    assert r.status_code == 201, r.text
    return r.json()["ref"]


@pytest.mark.parametrize("changes, status, field, words", [
    ({"mode": "outpaint", "outpaint": {"right": 5_000_000}}, 422, "outpaint", "canvas 5000064 pixels in width"),
    ({"mode": "outpaint", "outpaint": {"down": 4000}, "inpaint_full_res": True, "width": 64, "height": 64}, 422, "outpaint",
     "canvas 4064 pixels in height"),
    ({"mode": "img2img", "width": None, "height": 4096}, 422, "height", "above the limit of 2048"),
    ({"prompt": "<lora:no-such-lora:0.8> a cat"}, 404, "prompt", "No lora named 'no-such-lora'"),
    ({"negative_prompt": "<lora:tiny-styl:1>"}, 404, "negative_prompt", "did you mean 'tiny-style'"),
    ({"prompt": "<lora:/etc/passwd:1> a cat"}, 422, "prompt", "looks like a path"),
])
def test_the_studio_refuses_before_queueing(model_studio, upload_ref, changes, status, field, words):
    before = queued(model_studio)
    recipe = {"prompt": "a cat", "model": "tiny-sd1", "steps": 2, "width": 64, "height": 64, "init_image": upload_ref, **changes}
    if recipe.get("mode") is None:
        recipe.pop("init_image")
    r = model_studio.post("/api/jobs", json=recipe)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and words in r.json()["detail"]
    assert queued(model_studio) == before


def test_a_known_lora_is_queued(model_studio):
    before = queued(model_studio)
    r = model_studio.post("/api/jobs", json={"prompt": "<lora:tiny-style:0.5> a cat", "model": "tiny-sd1", "steps": 2, "width": 64, "height": 64})
    assert r.status_code == 201, r.text
    assert queued(model_studio) == before + 1


def test_the_engine_checks_the_outpaint_canvas_before_making_it(tmp_path, model_home):
    from localdiffusion.engine.inputs import HomeInputs
    from localdiffusion.engine.plan import make_plan
    from localdiffusion.errors import BadInput
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.recipe import Outpaint, Recipe
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Settings

    Image.new("RGB", (64, 64), "red").save(tmp_path / "in.png")
    model = ModelLibrary(model_home, Database(tmp_path / "db.sqlite")).get("tiny-sd1")
    recipe = Recipe(mode="outpaint", init_image=str(tmp_path / "in.png"), outpaint=Outpaint(right=5_000_000), inpaint_full_res=True)
    with pytest.raises(BadInput, match="canvas 5000064 pixels in width, above the limit of 2048") as refused:
        make_plan(recipe, model, Settings(), HomeInputs(tmp_path))  # the old code made a 2.2 GB canvas first
    assert refused.value.field == "outpaint"


# --- ids, paths, headers and tokens that used to answer 500 ----------------------------------------------


@pytest.fixture()
def bare_client(tmp_path):
    from fastapi.testclient import TestClient

    from localdiffusion.server.app import create_app
    from localdiffusion.server.studio import Studio
    from localdiffusion.store.home import Home

    with TestClient(create_app(Studio.open(Home(tmp_path / "home").ensure()), start_worker=False),
                    headers={"X-Client-Id": "tab-a"}) as client:
        yield client


def test_ids_beyond_sqlite_integers_are_404_sentences_on_every_route(bare_client):
    tried = 0
    for template, operations in bare_client.app.openapi()["paths"].items():
        if "{image_id}" not in template and "{job_id}" not in template:
            continue
        path = template.replace("{image_id}", str(2**63)).replace("{job_id}", str(2**63)).replace("{name}", "grid.png")
        for method in operations:
            r = bare_client.request(method.upper(), path, json={"starred": True} if method == "patch" else None)
            assert r.status_code == 404, (method, path, r.text)
            assert set(r.json()) >= {"detail", "field"} and str(2**63) in r.json()["detail"]
            tried += 1
    assert tried >= 11  # jobs: get, delete, files; images: get, file, thumb, patch, delete, explain, explanation, its files
    r = bare_client.get(f"/api/images?offset={2**63}")
    assert r.status_code == 422 and r.json()["field"] == "query.offset"


def test_a_model_path_with_a_too_long_name_is_a_sentence(bare_client, tmp_path):
    r = bare_client.post("/api/models", json={"path": str(tmp_path / ("x" * 300) / "model.safetensors")})
    assert r.status_code == 400 and r.json()["field"] == "path" and "cannot be read" in r.json()["detail"]


def test_a_safetensors_header_nested_too_deeply_is_a_sentence(bare_client, tmp_path):
    header = b"[" * 200_000 + b"]" * 200_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    r = bare_client.post("/api/models", json={"path": str(path)})
    assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]


def test_a_non_ascii_token_is_refused_like_any_wrong_token(tmp_path):
    from fastapi.testclient import TestClient

    from localdiffusion.server.app import create_app
    from localdiffusion.server.studio import Studio
    from localdiffusion.store.home import Home

    with TestClient(create_app(Studio.open(Home(tmp_path / "home").ensure(), token="right-token"), start_worker=False)) as client:
        r = client.get("/api/status", params={"token": "jeton-é"})
        assert r.status_code == 401 and set(r.json()) == {"detail", "field"}
        assert client.get("/api/status", headers={"Authorization": "Bearer right-token"}).status_code == 200


# --- A1111 options: bounded ------------------------------------------------------------------------------


def test_a1111_options_keep_other_keys_within_bounds(bare_client):
    from localdiffusion.server.a1111.options import MAX_OTHER_OPTIONS

    # Options this server does not use are kept and read back, as A1111 keeps those of its settings table.
    assert bare_client.post("/sdapi/v1/options", json={"img2img_color_correction": True, "eta_ancestral": 1.0}).status_code == 200
    assert bare_client.get("/sdapi/v1/options").json()["img2img_color_correction"] is True
    r = bare_client.post("/sdapi/v1/options", json={"filler": "x" * 2_000_000})  # 40 MB after 20 such requests before
    assert r.status_code == 422 and r.json()["field"] == "filler" and "above the limit of 1,024" in r.json()["detail"]
    r = bare_client.post("/sdapi/v1/options", json={"not an option!": 1})
    assert r.status_code == 422
    many = {f"option_{i}": i for i in range(MAX_OTHER_OPTIONS)}
    r = bare_client.post("/sdapi/v1/options", json=many)
    assert r.status_code == 422 and "at most 100 options" in r.json()["detail"]
    options = bare_client.get("/sdapi/v1/options").json()
    assert "filler" not in options and "option_0" not in options  # a refused request sets nothing


def test_an_a1111_infotext_field_beyond_the_limit_is_a_sentence(model_studio):
    r = model_studio.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "infotext": "a" * (MAX_INFOTEXT + 1)})
    assert r.status_code == 400 and r.json()["field"] == "infotext" and "above the limit of 65,536" in r.json()["detail"]
