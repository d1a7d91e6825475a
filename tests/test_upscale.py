"""Upscalers: resamplers and spandrel models from models/ESRGAN, tiled, with the pickle policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from localdiffusion.errors import BadInput, Cancelled, ModelNotFound, UnsupportedModel
from localdiffusion.models import upscalers as up
from localdiffusion.models.library import ModelLibrary
from localdiffusion.store.db import Database
from localdiffusion.store.home import Settings


def esrgan_state_dict(scale: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight RRDBNet (the ESRGAN architecture), tiny: 8 filters, one block."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(num_filters=8, num_blocks=1, scale=scale)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def write_esrgan(folder, name: str = "4x-tiny.safetensors", scale: int = 4):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".safetensors":
        save_file(esrgan_state_dict(scale), str(path))
    else:
        torch.save(esrgan_state_dict(scale), path)
    return path


@pytest.fixture
def library(home):
    write_esrgan(home.model_dir("upscaler"))
    with Database(home.db_path) as db:
        yield ModelLibrary(home, db)


def picture(w: int = 40, h: int = 28) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")


def test_the_list_has_resamplers_then_library_models(library):
    names = [(u.name, u.scale, u.is_model) for u in up.list_upscalers(library)]
    assert names == [("None", 4, False), ("Lanczos", 4, False), ("Nearest", 4, False), ("4x-tiny", 4, True)]
    assert up.find_upscaler("lanczos", library).name == "Lanczos"


def test_an_unknown_upscaler_is_one_sentence_naming_close_ones(library):
    with pytest.raises(ModelNotFound, match=r"No upscaler named '4x-tiyn'; did you mean '4x-tiny'\?"):
        up.find_upscaler("4x-tiyn", library)


def test_spandrel_loads_the_written_esrgan_and_upscales_4x_through_the_library(library):
    image = picture()
    big = up.upscale(image, "4x-tiny", 4, library, device="cpu")
    assert big.size == (160, 112) and big.mode == "RGB"
    model = up.load_upscaler(library.get("4x-tiny", kind="upscaler"), False, torch.device("cpu"))
    assert model.architecture.name == "ESRGAN" and model.scale == 4
    # Tiling is invisible: the same pass on one tile covering everything gives the same pixels (up to rounding).
    whole = up.run_model(model, image, tile=1024)
    tiled = up.run_model(model, image, tile=16, overlap=6)
    diff = np.abs(np.asarray(whole, dtype=int) - np.asarray(tiled, dtype=int))
    assert diff.max() <= 2


def test_the_model_is_cached(library):
    info = library.get("4x-tiny", kind="upscaler")
    first = up.load_upscaler(info, False, torch.device("cpu"))
    assert up.load_upscaler(info, False, torch.device("cpu")) is first


def test_any_scale_reaches_the_exact_size(library):
    image = picture(33, 21)
    assert up.upscale(image, "4x-tiny", 2.5, library).size == (82, 52)  # one 4x pass, then Lanczos down
    assert up.upscale(image, "Lanczos", 1.5, library).size == (50, 32)
    assert up.resize(image, "Nearest", (66, 42), library).size == (66, 42)


def test_bad_scale_is_refused(library):
    with pytest.raises(BadInput, match="upscale factor 0 is out of range"):
        up.upscale(picture(), "Lanczos", 0, library)


def test_tiles_report_progress_and_cancel(library):
    seen = []
    up.run_model(up.load_upscaler(library.get("4x-tiny", kind="upscaler"), False, torch.device("cpu")), picture(),
                 on_tile=lambda done, total: seen.append((done, total)), tile=16, overlap=4)
    assert seen[-1][0] == seen[-1][1] == len(seen) > 1
    with pytest.raises(Cancelled):
        up.upscale(picture(), "4x-tiny", 4, library, cancel=lambda: True)


def test_pth_is_refused_unless_pickles_are_allowed_and_then_loads_weights_only(home):
    write_esrgan(home.model_dir("upscaler"), "2x-pickled.pth", scale=2)
    with Database(home.db_path) as db:
        library = ModelLibrary(home, db)
        assert [u.name for u in up.list_upscalers(library)][-1] == "2x-pickled"  # listed, not opened
        with pytest.raises(UnsupportedModel, match=r"^The upscaler '2x-pickled.pth' is a pickled file.*allow_pickle"):
            up.upscale(picture(), "2x-pickled", 2, library)
        home.save_settings(Settings(allow_pickle=True))
        library = ModelLibrary(home, db)
        assert up.upscale(picture(), "2x-pickled", 2, library).size == (80, 56)


def test_a_pickle_with_code_is_refused_even_when_pickles_are_allowed(home, tmp_path):
    class Sneaky:
        def __reduce__(self):
            return (print, ("ran code",))

    path = home.model_dir("upscaler") / "4x-sneaky.pth"
    torch.save({"model.0.weight": Sneaky()}, path)
    home.save_settings(Settings(allow_pickle=True))
    with Database(home.db_path) as db:
        with pytest.raises(UnsupportedModel, match="holds more than plain weights"):
            up.upscale(picture(), "4x-sneaky", 4, ModelLibrary(home, db))


def test_a_file_that_is_not_an_upscaler_is_refused(home):
    path = home.model_dir("upscaler") / "notes.safetensors"
    save_file({"foo.weight": torch.zeros(2, 2)}, str(path))
    with Database(home.db_path) as db:
        with pytest.raises(UnsupportedModel, match="not an upscaler architecture that spandrel knows"):
            up.upscale(picture(), "notes", 2, ModelLibrary(home, db))


@pytest.mark.parametrize("name,scale", [("4x-UltraSharp", 4), ("RealESRGAN_x2plus", 2), ("ESRGAN", 4), ("SwinIR_x8", 8)])
def test_scale_is_guessed_from_the_name_for_listing(name, scale):
    assert up._scale_from_name(name) == scale


def test_feather_weights_blend_only_where_neighbours_are():
    w = up.feather(8, 8, 4, (True, False, False, False))
    assert w[:, -1].eq(1).all() and w[0, 0] < 0.2 and w[:, 4:].eq(1).all()
    assert up.tile_boxes(100, 40, 48, 8) == [(0, 0, 48, 40), (40, 0, 88, 40), (52, 0, 100, 40)]


# --- the studio API, the A1111 API (the real webuiapi client) and the job kind -----------------------


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("finish-home")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    write_esrgan(home.model_dir("upscaler"))
    return home


@pytest.fixture(scope="module")
def server(studio_home):
    from web_server import running_studio

    with running_studio(studio_home) as running:
        yield running


def wait_done(http, job_id: int) -> dict:
    import time

    for _ in range(600):
        job = http.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60, headers={"X-Client-Id": "finish-tests"}) as client:
        yield client


def upload(http, image: Image.Image) -> str:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    r = http.post("/api/uploads", files={"file": ("in.png", buffer.getvalue(), "image/png")})
    assert r.status_code == 201, r.text
    return r.json()["ref"]


def test_studio_api_lists_upscalers_and_queues_a_plain_upscale_into_the_gallery(http):
    names = [u["name"] for u in http.get("/api/upscale/upscalers").json()]
    assert names == ["None", "Lanczos", "Nearest", "4x-tiny"]
    r = http.post("/api/upscale", json={"image": upload(http, picture()), "upscaler": "4x-tiny", "scale": 2})
    assert r.status_code == 201 and r.json()["kind"] == "upscale", r.text
    job = wait_done(http, r.json()["id"])
    assert job["status"] == "done", job["error"]
    image = http.get(f"/api/images/{job['result']['images'][0]}").json()
    assert (image["width"], image["height"]) == (80, 56)
    assert image["infotext"] == "Postprocess upscale by: 2, Postprocess upscaler: 4x-tiny"


def test_studio_api_sd_upscales_a_gallery_image_with_its_own_recipe(http):
    r = http.post("/api/jobs", json={"prompt": "a red cube", "seed": 3, "steps": 2, "width": 64, "height": 64,
                                     "sampler_name": "Euler"})
    source_id = wait_done(http, r.json()["id"])["result"]["images"][0]
    r = http.post("/api/upscale", json={"image_id": source_id, "upscaler": "Lanczos", "scale": 1.5, "sd": True,
                                        "denoise": 0.5, "steps": 4, "tile": 64, "overlap": 16})
    assert r.status_code == 201, r.text
    job = wait_done(http, r.json()["id"])
    assert job["status"] == "done", job["error"]
    image = http.get(f"/api/images/{job['result']['images'][0]}").json()
    assert (image["width"], image["height"]) == (96, 96) and image["recipe"]["prompt"] == "a red cube"
    assert "Denoising strength: 0.5" in image["infotext"] and "SD upscale upscaler: Lanczos" in image["infotext"]


@pytest.mark.parametrize("body,field,message", [
    ({"image": "inputs/../../etc/passwd.png"}, "image", "is not an uploaded image"),
    ({"image_id": 99999}, None, "There is no image 99999."),
    ({}, "image_id", "Give either image_id"),
])
def test_studio_api_refuses_bad_sources_in_one_sentence(http, body, field, message):
    r = http.post("/api/upscale", json=body)
    assert r.status_code in (404, 422) and message in r.json()["detail"]


def test_studio_api_refuses_an_unknown_upscaler_before_queueing(http):
    r = http.post("/api/upscale", json={"image": upload(http, picture()), "upscaler": "4x-tiyn"})
    assert r.status_code in (404, 422) and "did you mean '4x-tiny'" in r.json()["detail"]


def test_studio_api_mask_operations_return_png_masks(http):
    import io

    buffer = io.BytesIO()
    Image.new("L", (32, 32), 0).save(buffer, format="PNG")
    r = http.post("/api/masks/invert", files={"file": ("m.png", buffer.getvalue(), "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).getextrema() == (255, 255)
    r = http.post("/api/masks/grow", files={"file": ("m.png", buffer.getvalue(), "image/png")}, data={"px": "999"})
    assert r.status_code == 422


def test_webuiapi_lists_upscalers_and_upscales_an_image(server):
    import webuiapi

    port = int(server.url.rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    listed = {u["name"]: u for u in api.get_upscalers()}
    assert {"Latent", "None", "Lanczos", "Nearest", "4x-tiny"} <= set(listed)
    assert listed["4x-tiny"]["scale"] == 4 and listed["4x-tiny"]["model_path"].endswith("4x-tiny.safetensors")
    result = api.extra_single_image(picture(), upscaler_1="4x-tiny", upscaling_resize=4, upscaler_2="Lanczos",
                                    extras_upscaler_2_visibility=0.5)
    assert result.image.size == (160, 112)
    assert "Postprocess upscaler: 4x-tiny, Postprocess upscaler 2: Lanczos" in result.info
    sized = api.extra_single_image(picture(), resize_mode=1, upscaling_resize_w=50, upscaling_resize_h=50, upscaler_1="Lanczos")
    assert sized.image.size == (50, 50)
    unchanged = api.extra_single_image(picture(), upscaler_1="None")
    assert unchanged.image.size == (40, 28)


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_upscales_with_a_model_and_records_what_was_done(capsys, studio_home, tmp_path):
    from cli_runner import run_cli
    from localdiffusion.store.png import save_png

    source = tmp_path / "in.png"
    save_png(picture(), source, "a cat\nSteps: 2, Seed: 5", None)
    code, stdout, stderr = run_cli(capsys, "upscale", source, "--upscaler", "4x-tiny", "--scale", "2", "-o", tmp_path / "big.png",
                                   "--home", studio_home.root)
    assert code == 0, stderr
    with Image.open(tmp_path / "big.png") as big:
        assert big.size == (80, 56)
        assert big.info["parameters"] == "a cat\nSteps: 2, Seed: 5, Postprocess upscale by: 2, Postprocess upscaler: 4x-tiny"


def test_cli_sd_upscale_writes_the_recipe(capsys, studio_home, tmp_path):
    import json

    from cli_runner import run_cli

    picture(48, 48).save(tmp_path / "in.png")
    code, _, stderr = run_cli(capsys, "upscale", tmp_path / "in.png", "--sd-tiles", "--denoise", "0.5", "--steps", "4",
                              "--prompt", "a boat", "--tile", "64", "--overlap", "16", "--seed", "9", "-o", tmp_path / "sd.png",
                              "--home", studio_home.root)
    assert code == 0, stderr
    with Image.open(tmp_path / "sd.png") as big:
        recipe = json.loads(big.info["localdiffusion"])
        assert big.size == (96, 96) and recipe["prompt"] == "a boat" and recipe["seed"] == 9
        assert "SD upscale overlap: 16" in big.info["parameters"]


@pytest.mark.parametrize("args,message", [
    (["--upscaler", "4x-tiyn"], "Error: No upscaler named '4x-tiyn'; did you mean '4x-tiny'?"),
    (["--scale", "20"], "Error: The upscale factor 20 is out of range"),
])
def test_cli_errors_are_one_sentence_and_nothing_is_written(capsys, studio_home, tmp_path, args, message):
    from cli_runner import run_cli

    picture().save(tmp_path / "in.png")
    code, _, stderr = run_cli(capsys, "upscale", tmp_path / "in.png", *args, "-o", tmp_path / "out.png", "--home", studio_home.root)
    assert code == 2 and stderr.strip().startswith(message) and "Traceback" not in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["in.png"]


# --- hires fix with an upscaler model ---------------------------------------------------------------


def test_hires_fix_can_upscale_with_a_library_model(studio_home):
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.recipe import Recipe
    from localdiffusion.store.db import Database

    engine = Engine(ModelLibrary(studio_home, Database(studio_home.db_path)))
    base = dict(prompt="a lighthouse", seed=5, steps=2, width=64, height=64, sampler_name="Euler", model="tiny-sd1",
                enable_hr=True, hr_scale=2.0, hr_second_pass_steps=1, denoising_strength=0.3)
    by_model = engine.generate(Recipe(**base, hr_upscaler="4x-tiny"))
    by_lanczos = engine.generate(Recipe(**base, hr_upscaler="Lanczos"))
    assert by_model.images[0].size == (128, 128) and "Hires upscaler: 4x-tiny" in by_model.infotexts[0]
    assert (np.asarray(by_model.images[0]) != np.asarray(by_lanczos.images[0])).any()
    with pytest.raises(BadInput) as e:
        engine.generate(Recipe(**base, hr_upscaler="4x-tinny"))
    assert e.value.field == "hr_upscaler" and "'4x-tiny'" in e.value.message and "'Latent'" in e.value.message


def test_the_apis_offer_upscaler_models_for_hires_fix(http, server):
    assert http.get("/api/upscalers").json()[-1] == "4x-tiny"
    job = {"prompt": "a lighthouse", "steps": 1, "width": 64, "height": 64, "model": "tiny-sd1", "enable_hr": True,
           "hr_upscaler": "4x-tinny", "hr_second_pass_steps": 1}
    r = http.post("/api/jobs", json=job)
    assert r.status_code == 422 and "4x-tiny" in r.text, r.text
    r = http.post("/api/jobs", json={**job, "hr_upscaler": "4x-tiny"})
    assert r.status_code == 201, r.text
    assert wait_done(http, r.json()["id"])["status"] == "done"
    import webuiapi

    port = int(server.url.rsplit(":", 1)[1])
    result = webuiapi.WebUIApi(host="127.0.0.1", port=port).txt2img(
        prompt="a lighthouse", steps=1, width=64, height=64, enable_hr=True, hr_scale=2, hr_upscaler="4x-tiny",
        hr_second_pass_steps=1, sampler_name="Euler", alwayson_scripts={})  # webuiapi's default dict keeps other tests' units
    assert result.image.size == (128, 128) and "Hires upscaler: 4x-tiny" in result.info["infotexts"][0]
