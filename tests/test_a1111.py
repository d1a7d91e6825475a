"""The A1111-compatible API (/sdapi/v1): httpx against the app, and the real `webuiapi` client
against a running server, on the tiny models."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

TINY = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "cfg_scale": 5}
INFO_KEYS = {
    "prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed", "all_subseeds", "width", "height",
    "sampler_name", "cfg_scale", "steps", "batch_size", "infotexts", "sd_model_name", "sd_model_hash", "job_timestamp",
    "clip_skip", "denoising_strength", "seed_resize_from_w", "seed_resize_from_h", "styles", "restore_faces",
    "is_using_inpainting_conditioning", "extra_generation_params", "index_of_first_image", "version",
}


def make_home(root, model_home, sd1_folder=None) -> Home:
    """A home of our own (so the database is ours) whose checkpoints link the session's tiny models."""
    home = Home(root).ensure()
    for model in model_home.model_dir("checkpoint").iterdir():
        (home.model_dir("checkpoint") / model.name).symlink_to(model.resolve(), target_is_directory=True)
    if sd1_folder is not None:
        from factories import build_embedding, build_lora

        build_lora(sd1_folder, home.model_dir("lora") / "tiny-style.safetensors")
        build_embedding(home.model_dir("embedding") / "tiny-concept.safetensors")
    return home


@pytest.fixture(scope="module")
def home(tmp_path_factory, model_home, sd1_folder) -> Home:
    return make_home(tmp_path_factory.mktemp("a1111-home"), model_home, sd1_folder)


@pytest.fixture(scope="module")
def client(home):
    with TestClient(create_app(Studio.open(home))) as c:
        yield c


def b64_png(image: Image.Image, prefix: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return "data:image/png;base64," + text if prefix else text


def decoded(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def test_txt2img_answers_like_a1111(client):
    extensions = {"alwayson_scripts": {"ControlNet": {"args": []}}, "script_name": None, "script_args": [],
                  "save_images": True, "styles": [], "some_extension_field": 1, "override_settings_restore_afterwards": True}
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a red cube", "seed": 5, "batch_size": 2, **TINY, **extensions})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert isinstance(body["info"], str)
    info = json.loads(body["info"])
    assert INFO_KEYS <= set(info)
    assert info["all_seeds"] == [5, 6] and info["seed"] == 5 and info["width"] == 64 and info["steps"] == 2
    assert info["sampler_name"] == "Euler" and info["sd_model_name"] == "tiny-sd1" and len(info["sd_model_hash"]) == 10
    assert json.loads(body["info"])["all_prompts"] == ["a red cube", "a red cube"]
    # A1111's defaults are filled in and echoed back.
    assert body["parameters"]["n_iter"] == 1 and body["parameters"]["prompt"] == "a red cube"
    assert len(body["images"]) == 2
    for image, infotext in zip(body["images"], info["infotexts"]):
        assert not image.startswith("data:")
        png = decoded(image)
        assert png.format == "PNG" and png.size == (64, 64)
        assert png.info["parameters"] == infotext and "Steps: 2, Sampler: Euler" in infotext
    studio = client.app.state.studio
    job = studio.queue.list(client="a1111:testclient", limit=1)[0]  # the same queue as every other client
    assert job.status == "done" and job.owner_id == studio.owner_id and job.recipe.prompt == "a red cube"


def recipe_for(client, request) -> "object":
    from localdiffusion.server.a1111.recipes import build_recipe
    from localdiffusion.server.a1111.state import a1111_state

    class Asking:  # what a1111_state() needs of a request
        app = client.app

    return build_recipe(request, client.app.state.studio, a1111_state(Asking()))


def test_requests_map_to_recipes(client):
    from localdiffusion.server.a1111.schemas import Img2ImgRequest, Txt2ImgRequest

    recipe = recipe_for(client, Txt2ImgRequest(prompt="x", steps=3, width=64, height=64, sampler_index="DPM++ 2M Karras", scheduler="automatic"))
    assert (recipe.sampler_name, recipe.scheduler, recipe.model, recipe.clip_skip) == ("DPM++ 2M", "Karras", "tiny-sd1", 1)
    recipe = recipe_for(client, Txt2ImgRequest(sampler_name="Euler", scheduler="sgm_uniform", seed=None, steps=None,
                                               override_settings={"sd_model_checkpoint": "tiny-sd2-v [0123456789]",
                                                                  "CLIP_stop_at_last_layers": 2}))
    assert (recipe.scheduler, recipe.model, recipe.clip_skip, recipe.seed, recipe.steps) == ("SGM Uniform", "tiny-sd2-v", 2, -1, 50)
    recipe = recipe_for(client, Txt2ImgRequest(prompt="kept", infotext="other\nSteps: 9, Sampler: Heun, CFG scale: 3, Seed: 4, Size: 64x64"))
    assert (recipe.prompt, recipe.steps, recipe.sampler_name, recipe.cfg_scale, recipe.seed) == ("kept", 9, "Heun", 3.0, 4)
    recipe = recipe_for(client, Txt2ImgRequest(width=64, height=64, enable_hr=True, hr_resize_x=128, hr_resize_y=96))
    assert recipe.enable_hr and recipe.hr_scale == 2.0 and recipe.hr_upscaler == "Latent"
    image = b64_png(Image.new("RGB", (64, 64)))
    recipe = recipe_for(client, Img2ImgRequest(init_images=[image], width=64, height=64))
    assert recipe.mode == "img2img" and recipe.mask is None and recipe.denoising_strength == 0.75


def test_names_from_a_request_are_never_paths(client, home, tmp_path):
    from localdiffusion.server.a1111.schemas import Txt2ImgRequest

    elsewhere = tmp_path / "tiny-sd1"  # a folder outside the library with a library model's name
    elsewhere.mkdir()
    recipe = recipe_for(client, Txt2ImgRequest(override_settings={"sd_model_checkpoint": str(elsewhere)}, width=64, height=64))
    assert recipe.model == "tiny-sd1"  # only the name counts: the library's own tiny-sd1
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "<lora:/etc/passwd:1> x", **TINY})
    assert r.status_code == 400 and "path" in r.json()["detail"]


def test_a1111_requests_are_checked_by_the_engines_validator(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "<lora:no-such-lora:1> x", **TINY})
    assert r.status_code == 404 and r.json()["field"] == "prompt" and "no-such-lora" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "width": 100})
    assert r.status_code == 400 and r.json()["field"] == "width" and "96" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "enable_hr": True, "hr_upscaler": "Warp"})
    assert r.status_code == 400 and r.json()["field"] == "hr_upscaler"


def test_resize_modes_fit_the_asked_size():
    from localdiffusion.server.a1111.images import fit_image

    wide = Image.new("RGB", (128, 64), (200, 50, 50))
    wide.paste((0, 0, 255), (0, 0, 8, 64))  # a blue left edge
    for mode in (0, 1, 2, 3):
        assert fit_image(wide, mode, 64, 64).size == (64, 64)
    assert fit_image(wide, 1, 64, 64).getpixel((0, 32)) == (200, 50, 50)  # cropped away
    filled = fit_image(wide, 2, 64, 64)
    assert filled.getpixel((32, 2)) == filled.getpixel((32, 20))  # the margin repeats the edge row


def test_bad_fields_get_422_naming_the_field(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": "many"})
    assert r.status_code == 422 and "steps" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "steps": 0})
    assert r.status_code == 422 and "steps" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "width": 32})
    assert r.status_code == 422 and "width" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "width": 100})
    assert r.status_code == 400 and "multiple of 8" in r.json()["detail"]


def test_unknown_sampler_model_or_upscaler_lists_what_exists(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "sampler_name": "Euler z"})
    assert 400 <= r.status_code < 500 and "Euler" in r.json()["detail"] and "DDIM" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "override_settings": {"sd_model_checkpoint": "nope"}})
    assert r.status_code == 404 and "tiny-sd1" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"})
    assert r.status_code == 400 and "Latent" in r.json()["detail"]


def test_img2img_with_a_mask_inpaints_and_keeps_the_rest(client):
    source = Image.new("RGB", (64, 64), (30, 120, 200))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {"prompt": "a hole", "seed": 7, **TINY, "init_images": [b64_png(source, prefix=True)], "mask": b64_png(mask, prefix=True),
            "denoising_strength": 0.9, "mask_blur": 0, "inpaint_full_res": False, "inpainting_fill": 1}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    info = json.loads(result["info"])
    image = decoded(result["images"][0]).convert("RGB")
    assert image.size == (64, 64) and info["denoising_strength"] == 0.9
    assert image.getpixel((2, 2)) == (30, 120, 200)  # outside the mask: untouched
    assert "Denoising strength: 0.9" in info["infotexts"][0] and "Mask blur" not in info["infotexts"][0]
    assert result["parameters"]["init_images"] is None and result["parameters"]["mask"] is None
    studio = client.app.state.studio
    job = studio.queue.list(client="a1111:testclient", limit=1)[0]
    assert job.recipe.mode == "inpaint" and job.recipe.init_image.startswith("inputs/") and job.recipe.mask.startswith("inputs/")


def test_img2img_without_a_mask(client):
    wide = Image.new("RGB", (128, 64), (200, 50, 50))
    body = {"prompt": "z", "seed": 1, **TINY, "init_images": [b64_png(wide)], "resize_mode": 1, "denoising_strength": 0.5}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    assert decoded(r.json()["images"][0]).size == (64, 64) and json.loads(r.json()["info"])["denoising_strength"] == 0.5
    assert client.post("/sdapi/v1/img2img", json={"prompt": "z", **TINY}).status_code == 400


def test_bad_uploads_are_refused(client):
    base = {"prompt": "x", **TINY}
    r = client.post("/sdapi/v1/img2img", json={**base, "init_images": ["%%% not base64 %%%"]})
    assert r.status_code == 400 and r.json()["field"] == "init_images"
    r = client.post("/sdapi/v1/img2img", json={**base, "init_images": [base64.b64encode(b"plain text, not an image").decode()]})
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")
    r = client.post("/sdapi/v1/img2img", json={**base, "init_images": [base64.b64encode(bomb.getvalue()).decode()]})
    assert r.status_code == 400 and "megapixels" in r.json()["detail"]
    r = client.post("/sdapi/v1/img2img", json={**base, "init_images": ["http://example.com/a.png"]})
    assert r.status_code == 400
    blank = Image.new("L", (64, 64), 0)
    r = client.post("/sdapi/v1/img2img", json={**base, "init_images": [b64_png(blank)], "mask": b64_png(blank)})
    assert r.status_code == 400 and r.json()["field"] == "mask"


def test_png_info_reads_the_infotext_back(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "<lora:tiny-style:0.8> a blue ball", "negative_prompt": "ugly", "seed": 11, **TINY})
    assert r.status_code == 200, r.text
    assert "Lora hashes" in json.loads(r.json()["info"])["extra_generation_params"]  # a LoRA from /loras works
    image = r.json()["images"][0]
    info = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + image}).json()
    assert info["info"] == json.loads(r.json()["info"])["infotexts"][0]
    params = info["parameters"]
    assert params["Prompt"] == "<lora:tiny-style:0.8> a blue ball" and params["Negative prompt"] == "ugly"
    assert params["Steps"] == "2" and params["Seed"] == "11" and params["Size-1"] == "64" and params["Size-2"] == "64"
    assert "localdiffusion" in info["items"]  # our recipe chunk, beside A1111's parameters
    plain = client.post("/sdapi/v1/png-info", json={"image": b64_png(Image.new("RGB", (8, 8)))}).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}
    assert client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(b"nope").decode()}).status_code == 400


def test_options_switch_the_model_for_later_requests(client):
    from localdiffusion.server.a1111.schemas import Txt2ImgRequest

    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"].startswith("tiny-sd1 [") and len(options["sd_checkpoint_hash"]) == 64
    assert options["samples_format"] == "png" and options["CLIP_stop_at_last_layers"] == 1 and options["sd_vae"] == "Automatic"
    titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
    assert options["sd_model_checkpoint"] in titles
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
    assert r.status_code == 404 and "tiny-sd2-v" in r.json()["detail"]
    assert client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 99}).status_code == 422
    assert client.post("/sdapi/v1/options", json={"samples_format": "jpg"}).status_code == 400
    try:
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd2-v"}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-sd2-v [")
        assert recipe_for(client, Txt2ImgRequest(width=64, height=64)).model == "tiny-sd2-v"  # later requests use it
    finally:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"})


def test_lists(client):
    models = client.get("/sdapi/v1/sd-models").json()
    assert {m["model_name"] for m in models} >= {"tiny-sd1", "tiny-sd2-v", "tiny-sdxl"}
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    samplers = client.get("/sdapi/v1/samplers").json()
    euler_a = next(s for s in samplers if s["name"] == "Euler a")
    assert "k_euler_a" in euler_a["aliases"] and set(euler_a) == {"name", "aliases", "options"}
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert {s["label"] for s in schedulers} >= {"Automatic", "Karras"} and "need_inner_model" in schedulers[0]
    upscalers = {u["name"] for u in client.get("/sdapi/v1/upscalers").json()}
    assert {"Latent", "Latent (nearest)", "Lanczos", "Nearest", "None"} <= upscalers
    loras = client.get("/sdapi/v1/loras").json()
    assert [(l["name"], l["alias"]) for l in loras] == [("tiny-style", "tiny-style")] and loras[0]["path"].endswith(".safetensors")
    emb = client.get("/sdapi/v1/embeddings").json()
    assert emb["loaded"]["tiny-concept"]["vectors"] == 2 and emb["loaded"]["tiny-concept"]["shape"] == 64 and emb["skipped"] == {}
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    assert client.get("/sdapi/v1/cmd-flags").json()["api"] is True
    assert "ram" in client.get("/sdapi/v1/memory").json()
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    idle = client.get("/sdapi/v1/progress?skip_current_image=false").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None


def test_progress_says_loading_model_while_a_job_loads_its_model(client):
    from localdiffusion.jobs.queue import Job, JobProgress
    from localdiffusion.recipe import Recipe
    from localdiffusion.server.a1111.state import A1111State

    studio = client.app.state.studio
    job = Job(10_001, studio.owner_id, "a1111:testclient", Recipe(prompt="a cat", steps=20), "running", time.time())
    client.app.state.a1111 = state = A1111State(pending={job.id})
    running = JobProgress(job, total=20, started=time.time(), phase="load")
    studio.queue.report(running)
    try:
        for (loading, loaded, parts), text in [(("model 'tiny-sd1'", 0, 1), "Loading model (model 'tiny-sd1')"),
                                               (("ControlNet 'canny'", 1, 2), "Loading model (ControlNet 'canny', 2 of 2)"),
                                               (("", 2, 2), "Model loaded; starting")]:
            running.loading, running.loaded, running.parts = loading, loaded, parts
            report = client.get("/sdapi/v1/progress").json()
            assert report["textinfo"] == text
            assert report["state"]["job"] == "scripts_txt2img" and report["state"]["sampling_step"] == 0
            assert 0 < report["progress"] < 0.05
    finally:
        studio.queue.mark_cancelled(job.id)  # a made-up job: this forgets its progress
        state.pending.clear()


# --- the real webuiapi client against a running server ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(home: Home):
    """A real uvicorn server for `home` on a free port, stopped afterwards."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(create_app(Studio.open(home)), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield port
    running.should_exit = True
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_home):
    with serving(make_home(tmp_path_factory.mktemp("a1111-server"), model_home)) as port:
        yield port


@pytest.fixture(scope="module")
def api(server):
    import webuiapi

    return webuiapi.WebUIApi(host="127.0.0.1", port=server)


def test_webuiapi_txt2img_img2img_and_png_info(api):
    result = api.txt2img(prompt="a lighthouse", negative_prompt="fog", seed=3, steps=2, width=64, height=64,
                         sampler_name="Euler", cfg_scale=5)
    assert result.info["all_seeds"] == [3] and result.info["sd_model_name"] == "tiny-sd1"
    image = result.images[0]
    assert image.size == (64, 64) and image.info["parameters"] == result.info["infotexts"][0]
    assert "Negative prompt: fog" in image.info["parameters"]

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 44, 44))
    inpainted = api.img2img(images=[image], mask_image=mask, prompt="a window", seed=4, steps=2, width=64, height=64,
                            sampler_name="Euler", denoising_strength=0.6)
    infotext = inpainted.images[0].info["parameters"]
    assert inpainted.images[0].size == (64, 64) and inpainted.info["seed"] == 4
    assert "Denoising strength: 0.6" in infotext and "Inpaint area: Only masked" in infotext and "Masked content: fill" in infotext

    read = api.png_info(inpainted.images[0])
    assert read.info == infotext and read.parameters["Prompt"] == "a window" and read.parameters["Steps"] == "2"


def test_webuiapi_options_and_model_switch(api, server):
    import requests

    assert api.util_get_current_model().startswith("tiny-sd1 [")
    assert "tiny-sd2-v" in [m.split(" [")[0] for m in api.util_get_model_names()]
    api.util_set_model("tiny-sd2-v")
    assert api.util_get_current_model().startswith("tiny-sd2-v [")
    result = api.txt2img(prompt="a tree", seed=1, steps=2, width=64, height=64, sampler_name="Euler")
    assert result.info["sd_model_name"] == "tiny-sd2-v" and "Model: tiny-sd2-v" in result.images[0].info["parameters"]
    api.set_options({"sd_model_checkpoint": api.util_get_model_names()[0], "CLIP_stop_at_last_layers": 2})
    assert api.get_options()["CLIP_stop_at_last_layers"] == 2
    refused = requests.post(f"http://127.0.0.1:{server}/sdapi/v1/options", json={"sd_model_checkpoint": "missing"}, timeout=30)
    assert refused.status_code == 404 and "tiny-sd1" in refused.json()["detail"]
    api.set_options({"sd_model_checkpoint": "tiny-sd1", "CLIP_stop_at_last_layers": 1})
    assert [s["name"] for s in api.get_samplers()][:1] and api.get_scripts() == {"txt2img": [], "img2img": []}


def test_webuiapi_progress_and_interrupt(api):
    answer: dict = {}

    def long_job() -> None:
        answer["result"] = api.txt2img(prompt="slow", seed=1, steps=100, n_iter=20, width=64, height=64, sampler_name="Euler")

    worker = threading.Thread(target=long_job)
    worker.start()
    deadline = time.monotonic() + 60
    progress = api.get_progress()
    while progress["state"]["sampling_step"] < 2 or progress["current_image"] is None:
        assert time.monotonic() < deadline, f"no progress seen: {progress}"
        time.sleep(0.05)
        progress = api.get_progress()
    assert 0 < progress["progress"] < 1 and progress["state"]["job_count"] == 20 and progress["state"]["sampling_steps"] == 100
    assert decoded(progress["current_image"]).format == "PNG"
    assert api.interrupt() == {}
    worker.join(60)
    assert not worker.is_alive()
    result = answer["result"]
    assert result.images == [] and result.info["all_seeds"] == [] and result.info["extra_generation_params"]["Interrupted"] is True
    assert api.get_progress()["state"]["job_count"] == 0


# --- the ControlNet extension's API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def control_port(tmp_path_factory, control_home):
    """A server whose home links the tiny checkpoints and ControlNets of `control_home`."""
    home = Home(tmp_path_factory.mktemp("a1111-control")).ensure()
    for kind in ("checkpoint", "controlnet"):
        for model in control_home.model_dir(kind).iterdir():
            (home.model_dir(kind) / model.name).symlink_to(model.resolve(), target_is_directory=model.is_dir())
    with serving(home) as port:
        yield port


@pytest.fixture(scope="module")
def control_api(control_port):
    import webuiapi

    return webuiapi.WebUIApi(host="127.0.0.1", port=control_port)


def outline_picture() -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(240, 230, 210))
    return image


def test_webuiapi_controlnet_lists(control_api):
    models = control_api.controlnet_model_list()
    assert [m.split(" [")[0] for m in models] == ["control_tiny_sd15_scribble", "control_tiny_sdxl_depth", "tiny-sd1-canny", "tiny-sdxl-canny"]
    assert all(len(m.split(" [")[1]) == 9 for m in models)  # the extension's 8-digit hash and "]"
    assert control_api.controlnet_module_list() == ["none", "canny", "scribble", "lineart", "openpose", "depth", "ip-adapter_clip_sd15",
                                                    "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith", "ip-adapter-auto"]


def test_webuiapi_controlnet_units_steer_txt2img(control_api):
    import webuiapi

    fields = dict(prompt="a moon", seed=3, steps=2, width=64, height=64, sampler_name="Euler", cfg_scale=5)
    plain = control_api.txt2img(**fields).image
    unit = webuiapi.ControlNetUnit(image=outline_picture(), module="canny", model="None", weight=1.0,
                                   resize_mode="Crop and Resize", threshold_a=100, threshold_b=200)
    result = control_api.txt2img(**fields, controlnet_units=[unit])
    infotext = result.images[0].info["parameters"]
    assert 'ControlNet 0: "Module: canny, Model: tiny-sd1-canny [' in infotext
    assert "Threshold A: 100.0, Threshold B: 200.0" in infotext
    difference = np.abs(np.asarray(result.image, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).mean()
    assert difference > 0.5
    disabled = webuiapi.ControlNetUnit(image=outline_picture(), module="canny", enabled=False)
    again = control_api.txt2img(**fields, controlnet_units=[disabled]).image
    assert np.array_equal(np.asarray(again), np.asarray(plain))


def test_controlnet_requests_are_checked(control_port):
    import httpx

    base = f"http://127.0.0.1:{control_port}"
    picture = b64_png(outline_picture())

    def post(unit: dict, **extra) -> httpx.Response:
        body = {"prompt": "x", **TINY, **extra, "alwayson_scripts": {"controlnet": {"args": [{"image": picture, **unit}]}}}
        return httpx.post(f"{base}/sdapi/v1/txt2img", json=body, timeout=60)

    r = post({"module": "canny", "model": "tiny-sd1-canny"}, override_settings={"sd_model_checkpoint": "tiny-sdxl"})
    assert r.status_code == 400
    assert r.json()["detail"] == "The ControlNet 'tiny-sd1-canny' is for SD 1.x but the model 'tiny-sdxl' is SDXL; choose an SDXL ControlNet."
    r = post({"module": "hed_safe"})
    assert r.status_code == 400 and r.json()["field"] == "alwayson_scripts.controlnet.args.0.module"
    r = post({"module": "canny", "model": "../../etc/passwd"})
    assert r.status_code == 400 and "looks like a path" in r.json()["detail"]
    r = post({"module": "canny", "weight": 5})
    assert r.status_code == 400 and r.json()["field"] == "alwayson_scripts.controlnet.args.0.weight"


# --- IP-Adapters as the extension's units ----------------------------------------------------------


@pytest.fixture(scope="module")
def ip_port(tmp_path_factory, ip_home):
    """A server whose home links the tiny checkpoints, ControlNets and IP-Adapters (with their image encoder) of `ip_home`."""
    home = Home(tmp_path_factory.mktemp("a1111-ip")).ensure()
    for kind in ("checkpoint", "controlnet", "ipadapter"):
        for model in ip_home.model_dir(kind).iterdir():
            (home.model_dir(kind) / model.name).symlink_to(model.resolve(), target_is_directory=model.is_dir())
    with serving(home) as port:
        yield port


def test_webuiapi_ip_adapter_units_become_references(ip_port):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=ip_port)
    title = next(m for m in api.controlnet_model_list() if m.startswith("ip-adapter_tiny_sd1 ["))
    fields = dict(prompt="a moon", seed=3, steps=2, width=64, height=64, sampler_name="Euler", cfg_scale=5,
                  override_settings={"sd_model_checkpoint": "tiny-sd1"})
    plain = api.txt2img(**fields).image
    adapter = webuiapi.ControlNetUnit(image=outline_picture(), module="ip-adapter_clip_sd15", model=title, weight=0.8)
    result = api.txt2img(**fields, controlnet_units=[adapter])
    infotext = result.images[0].info["parameters"]
    assert f'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: {title}, Weight: 0.8,' in infotext
    recipe = json.loads(result.images[0].info["localdiffusion"])
    assert [(r["model"], r["scale"]) for r in recipe["references"]] == [(title, 0.8)] and recipe["controls"] == []
    difference = np.abs(np.asarray(result.image, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).mean()
    assert difference > 0.5

    canny = webuiapi.ControlNetUnit(image=outline_picture(), module="canny", threshold_a=100, threshold_b=200)
    auto = webuiapi.ControlNetUnit(image=outline_picture(), module="ip-adapter-auto", weight=0.5)
    both = api.txt2img(**fields, controlnet_units=[auto, canny]).images[0].info["parameters"]
    assert 'ControlNet 0: "Module: canny, Model: tiny-sd1-canny [' in both
    assert 'ControlNet 1: "Module: ip-adapter_clip_sd15, Model: ip-adapter_tiny_sd1 [' in both and "Weight: 0.5," in both


@pytest.mark.parametrize("unit, status, field, words", [
    ({"model": "ip-adapter_sdxl [00000000]"}, 400, "model", "is for SDXL but the model 'tiny-sd1' is SD 1.x"),
    ({"model": "ip-adapter_nope [12345678]"}, 404, "model", "No ipadapter named 'ip-adapter_nope"),
    ({"weight": 3}, 400, "weight", "has weight 3"),
    ({"module": "ip-adapter_face_id_plus"}, 400, "module", "needs face embeddings"),
])
def test_ip_adapter_units_are_checked_naming_the_unit(ip_port, unit, status, field, words):
    import httpx

    canny = {"image": b64_png(outline_picture()), "module": "canny"}
    adapter = {"image": b64_png(outline_picture()), "module": "ip-adapter_clip_sd15", "model": "ip-adapter_tiny_sd1", **unit}
    body = {"prompt": "x", **TINY, "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
            "alwayson_scripts": {"controlnet": {"args": [canny, adapter]}}}
    r = httpx.post(f"http://127.0.0.1:{ip_port}/sdapi/v1/txt2img", json=body, timeout=60)
    assert r.status_code == status and r.json()["field"] == f"alwayson_scripts.controlnet.args.1.{field}", r.text
    assert words in r.json()["detail"]
