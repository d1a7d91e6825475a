"""IP-Adapter reference images: detection, the engine (parity with diffusers, scale 0, nothing left behind),
fit and encoder checks, recording, the CLI, the studio API and the comic's notes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import remembered
from localdiffusion.errors import BadInput, LocalDiffusionError
from localdiffusion.recipe import ControlUnit, Recipe, Reference

SD1 = dict(prompt="a red cube", seed=3, steps=3, width=64, height=64, cfg_scale=5.0, sampler_name="Euler", model="tiny-sd1")
SDXL = {**SD1, "model": "tiny-sdxl"}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def differs(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def draw_picture(path, colour: tuple[int, int, int], shape: str) -> str:
    image = Image.new("RGB", (80, 64), (240, 235, 220))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "ellipse" else draw.rectangle)((12, 8, 60, 56), fill=colour)
    image.save(path)
    return str(path)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[str, str]:
    """Two different reference pictures (characters' looks)."""
    folder = tmp_path_factory.mktemp("references")
    return draw_picture(folder / "red.png", (200, 30, 30), "ellipse"), draw_picture(folder / "blue.png", (20, 60, 210), "square")


@pytest.fixture(scope="module")
def generate(ip_engine):
    return remembered(ip_engine)


def with_refs(fields: dict, *references: Reference, **more) -> Recipe:
    return Recipe(**fields, references=list(references), **more)


# --- the library ------------------------------------------------------------------------------


def test_adapters_are_detected_with_their_family(ip_engine):
    library = ip_engine.library
    found = {m.name: (m.kind, m.family) for m in library.list("ipadapter")}
    assert found == {
        "ip-adapter_sd15": ("ipadapter", "sd1"), "ip-adapter_sdxl": ("ipadapter", "sdxl"),  # 768 and 2048 wide
        "ip-adapter_tiny_sd1": ("ipadapter", "unknown"), "ip-adapter_tiny_sdxl": ("ipadapter", "unknown"),  # tiny widths
    }
    assert library.problems == []  # the image_encoder folder is not taken for a model
    assert len(library.ensure_hash(library.get("ip-adapter_sd15", kind="ipadapter")).short_hash) == 8  # as the ControlNet extension


def test_pickles_follow_the_pickle_policy_and_comfyui_folders_are_read(tmp_path):
    from factories import build_ip_adapter

    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home, Settings

    home = Home(tmp_path / "home").ensure()
    build_ip_adapter(home.model_dir("ipadapter") / "ip-adapter_sd15.bin", [32], cross_width=768)
    build_ip_adapter(tmp_path / "comfy" / "models" / "ipadapter" / "ip-adapter_sdxl.safetensors", [32], cross_width=2048)
    home.save_settings(Settings(extra_roots=[str(tmp_path / "comfy")]))
    refused = {m.name: (m.format, m.family) for m in ModelLibrary(home, Database(home.db_path)).list("ipadapter")}
    assert refused == {"ip-adapter_sd15": ("ckpt", "unknown"), "ip-adapter_sdxl": ("safetensors", "sdxl")}  # the pickle is not opened
    home.save_settings(Settings(extra_roots=[str(tmp_path / "comfy")], allow_pickle=True))
    allowed = ModelLibrary(home, Database(home.db_path)).get("ip-adapter_sd15", kind="ipadapter")
    assert allowed.family == "sd1"


# --- the engine -------------------------------------------------------------------------------


def test_a_reference_is_bit_identical_to_diffusers_own_ip_adapter_pipeline(generate, ip_home, sd1_folder, pictures):
    from diffusers import DEISMultistepScheduler, StableDiffusionPipeline

    diffusers_sampler = {**SD1, "sampler_name": "DEIS"}  # a diffusers sampler keeps raw diffusers' contract
    result = generate(with_refs(diffusers_sampler, Reference(image=pictures[0], model="ip-adapter_tiny_sd1")))
    raw = StableDiffusionPipeline.from_pretrained(str(sd1_folder), local_files_only=True)
    raw.scheduler = DEISMultistepScheduler.from_config(raw.scheduler.config)
    raw.set_progress_bar_config(disable=True)
    raw.load_ip_adapter(str(ip_home.model_dir("ipadapter")), subfolder="", weight_name="ip-adapter_tiny_sd1.safetensors",
                        image_encoder_folder="image_encoder", local_files_only=True)
    raw.set_ip_adapter_scale(0.5)
    expected = raw(SD1["prompt"], num_inference_steps=3, height=64, width=64, guidance_scale=5.0,
                   ip_adapter_image=Image.open(pictures[0]), generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert differs(result.images[0], expected) == 0
    assert differs(result.images[0], generate(Recipe(**diffusers_sampler)).images[0]) > 1  # and the reference did change the image


def test_the_picture_matters_and_scale_zero_is_exactly_the_plain_image(generate, pictures):
    red, blue = (generate(with_refs(SD1, Reference(image=p))).images[0] for p in pictures)
    assert differs(red, blue) > 1
    zero = generate(with_refs(SD1, Reference(image=pictures[0], scale=0.0))).images[0]
    assert differs(zero, generate(Recipe(**SD1)).images[0]) == 0


def test_no_reference_after_a_reference_run_is_bit_identical(ip_engine, pictures):
    before = ip_engine.generate(Recipe(**{**SD1, "seed": 11})).images[0]
    pipe = ip_engine.pipeline(ip_engine.library.get("tiny-sd1"))
    plain_processors = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    during = []
    ip_engine.generate(with_refs({**SD1, "seed": 11}, Reference(image=pictures[1], scale=1.0)),
                       on_step=lambda *_: during.append(pipe.unet.encoder_hid_proj is not None))
    assert during and all(during)  # the adapter is on the UNet while the run is bound...
    assert pipe.unet.encoder_hid_proj is None  # ...and taken off when it ends
    assert {n: type(p) for n, p in pipe.unet.attn_processors.items()} == plain_processors
    after = ip_engine.generate(Recipe(**{**SD1, "seed": 11})).images[0]
    assert differs(before, after) == 0
    assert pipe.unet.encoder_hid_proj is None and {n: type(p) for n, p in pipe.unet.attn_processors.items()} == plain_processors


def test_references_share_a_slot_per_adapter_and_scale(ip_engine, generate, pictures):
    pipe = ip_engine.pipeline(ip_engine.library.get("tiny-sd1"))

    def slots(*references: Reference) -> set[int]:
        seen = set()
        ip_engine.generate(with_refs({**SD1, "steps": 1}, *references),
                           on_step=lambda *_: seen.add(len(pipe.unet.encoder_hid_proj.image_projection_layers)))
        return seen

    both = generate(with_refs(SD1, Reference(image=pictures[0]), Reference(image=pictures[1]))).images[0]
    assert slots(Reference(image=pictures[0]), Reference(image=pictures[1])) == {1}
    assert differs(both, generate(with_refs(SD1, Reference(image=pictures[0]))).images[0]) > 0
    assert slots(Reference(image=pictures[0]), Reference(image=pictures[1], scale=0.8)) == {2}


def test_sdxl_with_a_controlnet_and_a_reference(generate, pictures, tmp_path):
    from localdiffusion.infotext import recipe_from_infotext

    edges = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(edges).rectangle((12, 12, 50, 50), outline="white", width=2)
    edges.save(tmp_path / "edges.png")
    control = ControlUnit(model="tiny-sdxl-canny", image=str(tmp_path / "edges.png"), module="none")
    both = generate(Recipe(**SDXL, controls=[control], references=[Reference(image=pictures[0])]))
    control_only = generate(Recipe(**SDXL, controls=[control])).images[0]
    reference_only = generate(with_refs(SDXL, Reference(image=pictures[0]))).images[0]
    assert differs(both.images[0], control_only) > 1 and differs(both.images[0], reference_only) > 1
    assert 'ControlNet 1: "Module: ip-adapter_clip_sdxl_plus_vith, Model: ip-adapter_tiny_sdxl [' in both.infotexts[0]
    parsed = recipe_from_infotext(both.infotexts[0])
    assert [u.model for u in parsed.controls] == [both.recipes[0].controls[0].model]
    assert parsed.references == [Reference(model=both.recipes[0].references[0].model, scale=0.5)]


def test_attention_is_recorded_with_a_reference(ip_engine, pictures):
    from localdiffusion.engine.attention import AttentionRecorder

    recorder = AttentionRecorder(steps=3)
    ip_engine.generate(with_refs(SD1, Reference(image=pictures[0])), attention=recorder)
    maps = recorder.maps("cond")
    assert maps is not None and maps.shape[0] == 77  # one map per prompt token; the image tokens are not words


# --- checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("reference, message", [
    (dict(model="ip-adapter_sdxl"), "The IP-Adapter 'ip-adapter_sdxl' is for SDXL but the model 'tiny-sd1' is SD 1.x; choose an SD 1.x IP-Adapter."),
    (dict(model="ip-adapter_tiny_sdxl"), "The IP-Adapter 'ip-adapter_tiny_sdxl' was made for a cross-attention width of 128 but the model 'tiny-sd1' has 64"),
    (dict(model="ip-adapter_nope"), "No ipadapter named 'ip-adapter_nope'"),
    (dict(image=None), "Reference 0 has no image"),
    (dict(image="missing.png"), "The reference 0 image"),
])
def test_bad_references_get_one_sentence(ip_engine, pictures, reference, message):
    with pytest.raises(LocalDiffusionError) as e:
        ip_engine.generate(Recipe(**SD1, references=[Reference(**{"image": pictures[0], **reference})]))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value.field and e.value.field.startswith("references.0.")


def small_home(tmp_path, sd1_folder, adapters: dict[str, int], encoder: int | None):
    """A home with tiny-sd1 and the given IP-Adapters for it (name -> encoder width), and an encoder of that width if any."""
    from factories import build_image_encoder, build_ip_adapter_for

    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    for name, width in adapters.items():
        build_ip_adapter_for(sd1_folder, home.model_dir("ipadapter") / f"{name}.safetensors", encoder_width=width)
    if encoder is not None:
        build_image_encoder(home.model_dir("ipadapter") / "image_encoder", projection=encoder)
    return home, Engine(ModelLibrary(home, Database(home.db_path)))


def test_a_missing_image_encoder_names_the_folder_to_add(tmp_path, sd1_folder, pictures):
    home, engine = small_home(tmp_path, sd1_folder, {"ip-adapter_tiny": 32}, encoder=None)
    with pytest.raises(BadInput) as e:
        engine.generate(Recipe(**SD1, references=[Reference(image=pictures[0])]))
    folder = home.model_dir("ipadapter") / "image_encoder"
    assert str(e.value) == (f"The IP-Adapter 'ip-adapter_tiny' needs its CLIP image encoder, which is missing: add the folder {folder} "
                            "(config.json and model.safetensors of a CLIP vision model whose output is 32 wide).")


def test_an_encoder_of_the_wrong_width_is_refused(tmp_path, sd1_folder, pictures):
    _, engine = small_home(tmp_path, sd1_folder, {"ip-adapter_tiny": 48}, encoder=32)
    with pytest.raises(BadInput, match="needs an image encoder whose output is 48 wide .* gives 32; put the matching encoder in "):
        engine.generate(Recipe(**SD1, references=[Reference(image=pictures[0])]))


def test_no_fitting_adapter_lists_the_installed_ones(tmp_path, sd1_folder, pictures):
    from factories import build_ip_adapter

    home, engine = small_home(tmp_path, sd1_folder, {}, encoder=32)
    build_ip_adapter(home.model_dir("ipadapter") / "ip-adapter_sdxl.safetensors", [32], cross_width=2048)
    engine.library.rescan()
    with pytest.raises(BadInput) as e:
        engine.generate(Recipe(**SD1, references=[Reference(image=pictures[0])]))
    assert str(e.value).startswith("Reference 0 needs an IP-Adapter for SD 1.x and none that fits is installed (installed: 'ip-adapter_sdxl (SDXL)'); ")


def test_faceid_adapters_are_refused_by_shape():
    from localdiffusion.errors import UnsupportedModel
    from localdiffusion.models.ip_adapter import shape_of

    faceid = {"image_proj.proj.0.weight": (1024, 512), "image_proj.proj.2.weight": (3072, 1024), "image_proj.norm.weight": (768,),
              "ip_adapter.1.to_k_ip.weight": (320, 768)}
    with pytest.raises(UnsupportedModel, match="FaceID IP-Adapter"):
        shape_of(faceid, "ip-adapter-faceid_sd15")
    plus = {"image_proj.latents": (1, 16, 768), "image_proj.proj_in.weight": (768, 1280), "ip_adapter.1.to_k_ip.weight": (320, 768)}
    assert shape_of(plus, "ip-adapter-plus_sd15").hidden_states and shape_of(plus, "x").encoder_width == 1280


# --- recording --------------------------------------------------------------------------------


def test_infotext_and_recipe_record_the_reference_and_a_replay_is_identical(ip_engine, ip_home, generate, pictures):
    from localdiffusion.infotext import recipe_from_infotext

    from localdiffusion.control.units import keep_references

    given = with_refs(SD1, Reference(image=pictures[0], model="ip-adapter_tiny_sd1", scale=0.7))
    inputs = set((ip_home.root / "inputs").glob("*"))
    assert generate(given).recipes[0].references[0].image == pictures[0]  # the engine writes nothing under the home...
    assert set((ip_home.root / "inputs").glob("*")) == inputs
    result = generate(keep_references(given, ip_home.root))  # ...a path is kept as an input before the job, as the CLI does
    (recorded,) = result.recipes[0].references
    assert recorded.model.startswith("ip-adapter_tiny_sd1 [") and recorded.scale == 0.7
    assert recorded.image.startswith("inputs/") and (ip_home.root / recorded.image).is_file()
    assert 'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_tiny_sd1 [' in result.infotexts[0]
    assert "Weight: 0.7," in result.infotexts[0]
    assert recipe_from_infotext(result.infotexts[0]).references == [Reference(model=recorded.model, scale=0.7)]
    replay = ip_engine.generate(Recipe.from_json(result.recipes[0].to_json()))
    assert differs(replay.images[0], result.images[0]) == 0


def test_a1111_written_ip_adapter_units_parse():
    from localdiffusion.infotext import recipe_from_infotext

    text = ('a girl\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x512, Model: v1-5, '
            'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15 [6a3f6166], Weight: 0.6, Resize Mode: Crop and Resize, '
            'Low Vram: False, Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.0, Guidance End: 1.0, '
            'Pixel Perfect: False, Control Mode: Balanced", Version: v1.10.1')
    recipe = recipe_from_infotext(text)
    assert recipe.references == [Reference(model="ip-adapter_sd15 [6a3f6166]", scale=0.6)] and recipe.controls == []


# --- the command line -------------------------------------------------------------------------


def test_cli_generate_with_a_reference(capsys, ip_home, pictures, tmp_path):
    from cli_runner import run_cli

    from localdiffusion.metadata import read_image_metadata

    args = ["generate", SD1["prompt"], "--model", "tiny-sd1", "--steps", "2", "--size", "64x64", "--seed", "3",
            "--reference", f"{pictures[0]}:0.8", "--reference", pictures[1], "--reference-model", "ip-adapter_tiny_sd1",
            "--home", ip_home.root, "-o", tmp_path]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    recipe = Recipe.from_json(read_image_metadata(out.split()[0]).recipe_json)
    assert [(r.scale, r.model.split(" [")[0], r.image.startswith("inputs/")) for r in recipe.references] == [
        (0.8, "ip-adapter_tiny_sd1", True), (0.5, "ip-adapter_tiny_sd1", True)]


@pytest.mark.parametrize("specs, models, message", [
    (["nope.png"], [], "The reference image 'nope.png' in 'nope.png' does not exist"),
    (["PIC:2"], [], "The reference scale 2 in"),
    (["PIC", "PIC"], ["a", "b", "c"], "There are 3 --reference-model values for 2 --reference images"),
    ([], ["a"], "--reference-model names the IP-Adapter of a --reference image"),
])
def test_cli_reference_options_are_checked(pictures, specs, models, message):
    from localdiffusion.cli.options import parse_references

    with pytest.raises(BadInput, match=message.replace("[", r"\[")):
        parse_references([s.replace("PIC", pictures[0]) for s in specs], models)


# --- the studio API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio_client(tmp_path_factory, ip_home):
    from fastapi.testclient import TestClient

    from localdiffusion.server.app import create_app
    from localdiffusion.server.studio import Studio
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("studio-ip")).ensure()
    for kind in ("checkpoint", "ipadapter"):
        for model in ip_home.model_dir(kind).iterdir():
            target = home.model_dir(kind) / model.name
            target.symlink_to(model.resolve(), target_is_directory=model.is_dir())
    with TestClient(create_app(Studio.open(home))) as client:
        yield client


def upload(client, path: str) -> str:
    with open(path, "rb") as f:
        return client.post("/api/uploads", files={"file": ("picture.png", f, "image/png")}).json()["ref"]


def test_studio_runs_a_job_with_a_reference(studio_client, pictures):
    import time

    names = {m["name"] for m in studio_client.get("/api/models", params={"kind": "ipadapter"}).json()}
    assert names == {"ip-adapter_sd15", "ip-adapter_sdxl", "ip-adapter_tiny_sd1", "ip-adapter_tiny_sdxl"}
    r = studio_client.post("/api/jobs", json={**SD1, "references": [{"image": upload(studio_client, pictures[0])}]})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 60
    while (job := studio_client.get(f"/api/jobs/{r.json()['id']}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "done", job["error"]


@pytest.mark.parametrize("reference, status, field, words", [
    ({"image": "/etc/passwd"}, 422, "references.0.image", "is not an uploaded image"),
    ({"image": "REF", "model": "nope"}, 404, "references.0.model", "No ipadapter named 'nope'"),
    ({"image": "REF", "model": "ip-adapter_sdxl"}, 422, "references.0.model", "is for SDXL but the model 'tiny-sd1' is SD 1.x"),
    ({"image": "REF", "model": "../ip-adapter_sdxl"}, 422, "references.0.model", "looks like a path"),
])
def test_studio_refuses_bad_references_naming_the_field(studio_client, pictures, reference, status, field, words):
    reference = {k: (upload(studio_client, pictures[0]) if v == "REF" else v) for k, v in reference.items()}
    r = studio_client.post("/api/jobs", json={**SD1, "references": [reference]})
    assert r.status_code == status and r.json()["field"] == field and words in r.json()["detail"], r.text


# --- the comic --------------------------------------------------------------------------------


def test_comic_uses_references_only_when_an_adapter_can_run(ip_engine, tmp_path, sd1_folder, pictures):
    from localdiffusion.comic import Character, Panel, Project, Style, consistency_notes
    from localdiffusion.comic.generate import candidate_recipes
    from localdiffusion.comic.geometry import rect

    folder = tmp_path / "project"
    (folder / "assets").mkdir(parents=True)
    Image.open(pictures[0]).save(folder / "assets" / "mia.png")
    project = Project(characters=[Character(name="Mia", description="a girl", reference_image="assets/mia.png")],
                      style=Style(model="tiny-sd1", steps=2))
    panel = Panel(shape=rect(0, 0, 50, 50), characters=["Mia"])
    notes = consistency_notes(project, ip_engine.home.root, ip_engine.library)
    assert any(n.startswith("Reference image: the character's picture is shown to the model through an IP-Adapter") for n in notes)
    (recipe,) = candidate_recipes(ip_engine, project, panel, folder)
    assert recipe.references[0].image.startswith("inputs/")  # kept, as the studio's queue accepts pictures

    home, engine = small_home(tmp_path / "other", sd1_folder, {"ip-adapter_tiny": 32}, encoder=None)
    notes = consistency_notes(project, home.root, engine.library)
    assert any(n.startswith("The reference images of Mia are not used yet: the IP-Adapter 'ip-adapter_tiny' needs its CLIP image encoder, "
                            f"which is missing: add the folder {home.model_dir('ipadapter') / 'image_encoder'}") for n in notes)
    assert candidate_recipes(engine, project, panel, folder)[0].references == []


def test_json_recipe_keeps_references():
    recipe = Recipe(**SD1, references=[Reference(image="inputs/0123456789abcdef01234567.png", scale=0.6, model="a [12345678]")])
    assert json.loads(recipe.to_json())["references"] == [{"image": "inputs/0123456789abcdef01234567.png", "scale": 0.6, "model": "a [12345678]"}]
    assert Recipe.from_json(recipe.to_json()) == recipe
