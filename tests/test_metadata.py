"""Reading other tools' image metadata (real fixtures) and writing our own PNGs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from localdiffusion.errors import BadInput
from localdiffusion.infotext import to_infotext
from localdiffusion.metadata import ImageMetadata, read_image_metadata
from localdiffusion.metadata.container import decode_user_comment
from localdiffusion.metadata.stealth import write_stealth
from localdiffusion.recipe import Recipe
from localdiffusion.store.png import png_with_metadata, save_png


def fixtures_dir() -> Path:
    """`shared/fixtures/pnginfo` beside the repository (CI clones it there), or $LOCALDIFFUSION_FIXTURES."""
    override = os.environ.get("LOCALDIFFUSION_FIXTURES")
    return Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "pnginfo"


FIXTURES = fixtures_dir()
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "expected.json").is_file(), reason=f"no image-metadata fixtures at {FIXTURES}")


def expected_entries() -> list[dict[str, Any]]:
    if not (FIXTURES / "expected.json").is_file():
        return []
    return json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))["fixtures"]


# The tools' own sampler/schedule names in expected.json, as A1111 names them (None: no A1111 counterpart).
A1111_SAMPLER = {
    "UniPC": "UniPC", "Euler": "Euler", "k_lms": "LMS", "euler": "Euler", "k_euler_ancestral": "Euler a",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE", "sample_dpmpp_2m": "DPM++ 2M", "dpmpp_sde": "DPM++ SDE", "dpmpp_2m": "DPM++ 2M",
}
A1111_SCHEDULE = {"Automatic": "Automatic", "karras": "Karras", "normal": "Normal", "simple": "Simple"}
GENERATOR_SOURCE = {"AUTOMATIC1111": "a1111", "ComfyUI": "comfyui", "Fooocus": "fooocus", "InvokeAI": "invokeai", "NovelAI": "novelai"}


@needs_fixtures
def test_every_fixture_file_is_listed():
    listed = {e["file"] for e in expected_entries()}
    on_disk = {p.name for p in FIXTURES.iterdir() if p.suffix in (".png", ".jpg", ".jpeg", ".webp")}
    assert listed == on_disk


@needs_fixtures
@pytest.mark.parametrize("entry", expected_entries(), ids=lambda e: e["file"])
def test_fixture_fields_are_recovered(entry: dict[str, Any]):
    meta = read_image_metadata(FIXTURES / entry["file"])
    assert meta.source == GENERATOR_SOURCE[entry["generator"].split(" ")[0]]
    if isinstance(entry["raw"], dict):
        assert {k: meta.raw[k] for k in entry["raw"]} == entry["raw"]
    else:  # EXIF or stealth: the decoded text
        assert entry["raw"] in meta.raw.values()
    for key, value in (entry["expected"] or {}).items():
        check_expected(meta, key, value, entry)
    if entry["expected"] is None:  # only 'must parse': a main pass with a prompt and a seed
        assert meta.passes and "prompt" in meta.fields and "seed" in meta.fields


def check_expected(meta: ImageMetadata, key: str, value: Any, entry: dict[str, Any]) -> None:
    f, extra = meta.fields, meta.extra
    if key in ("prompt", "negative_prompt"):
        if value is None:
            assert not f.get(key)
        elif value.startswith("(Comment.uc"):
            assert f[key] == json.loads(entry["raw"]["Comment"])["uc"]
        else:
            assert f[key] == value
    elif key in ("sampler", "sampler_name"):
        assert f["sampler_name"] == A1111_SAMPLER[value]
        if meta.source != "a1111":
            assert value in (extra.get("sampler"), extra.get("sampler_name"), extra.get("scheduler"))
    elif key == "scheduler":
        assert f["scheduler"] == A1111_SCHEDULE[value]
    elif key in ("steps", "seed", "width", "height", "clip_skip"):
        assert f[key] == int(value)
    elif key in ("cfg_scale", "cfg"):
        assert f["cfg_scale"] == float(value)
    elif key == "denoise":
        assert f["denoising_strength"] == value and extra["denoise"] == json.dumps(value)
    elif key == "size":
        assert f"{f['width']}x{f['height']}" == value
    elif key == "resolution":
        assert (f["width"], f["height"]) == tuple(json.loads(value.replace("(", "[").replace(")", "]")))
    elif key == "model":
        assert meta.model_name == value.split(" (")[0]
    elif key == "model_hash":
        assert meta.model_hash == value
    elif key == "sampler_node":
        node, class_type = value.split(" ")
        assert (extra["node"], extra["class_type"]) == (node, class_type)
    elif key == "latent":
        assert {k: f[k] for k in value} == value
    elif key == "samplers":
        check_passes(meta, value)
    elif key == "extra":
        for name, text in value.items():
            assert extra[name].split(" ")[0] == text  # the file says `-U 4 0.95`; expected.json keeps the first value
    elif key == "notes":
        pass
    else:  # the tool's own settings with no Recipe field: kept under the tool's key name
        stored = extra.get(key, extra.get(key.capitalize()))
        assert stored == (value if isinstance(value, str) else json.dumps(value)), key


def check_passes(meta: ImageMetadata, expected: list[dict[str, Any]]) -> None:
    passes = {p.node: p for p in meta.passes}
    for want in expected:
        p = passes[want["node"]]
        assert p.fields["sampler_name"] == A1111_SAMPLER[want["sampler_name"]] and p.extra["sampler_name"] == want["sampler_name"]
        assert p.fields["scheduler"] == A1111_SCHEDULE[want["scheduler"]]
        assert (p.fields["seed"], p.fields["steps"], p.fields["cfg_scale"]) == (want["seed"], want["steps"], want["cfg"])
        assert p.extra["denoise"] == json.dumps(want["denoise"])
        assert p.fields.get("denoising_strength", 1.0) == want["denoise"]
        assert p.model_name == want["model"]


@needs_fixtures
def test_comfyui_main_pass_is_the_base_pass_of_the_saved_image():
    meta = read_image_metadata(FIXTURES / "ComfyUI__night_evening_day_morning_cropped.png")
    assert meta.extra["node"] == "3" and meta.fields["clip_skip"] == 2  # CLIPSetLastLayer -2
    assert meta.fields["prompt"].count(" AND ") == 4  # five area prompts combined, A1111's composable syntax
    assert [p.node for p in meta.passes] == ["3", "24"] and meta.passes[1].fields["width"] == 1088


@needs_fixtures
def test_to_recipe_refuses_or_drops_values_a_recipe_cannot_hold():
    meta = read_image_metadata(FIXTURES / "ComfyUI__img2img_cropped.png")
    with pytest.raises(BadInput, match="seed"):
        meta.to_recipe()
    recipe = meta.to_recipe(strict=False)
    assert recipe.seed == -1 and recipe.steps == 20 and recipe.sampler_name == "DPM++ 2M" and recipe.denoising_strength == pytest.approx(0.87)


def comfy_png(graph: dict[str, Any]) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(graph))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [("euler_ancestral", "normal", ("Euler a", "Normal")), ("dpmpp_2m", "karras", ("DPM++ 2M", "Karras")), ("dpmpp_2m_sde_gpu", "exponential", ("DPM++ 2M SDE", "Exponential"))],
)
def test_comfyui_graph_maps_to_a1111_names(sampler, scheduler, expected):
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dream.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "ink.safetensors", "strength_model": 0.8, "strength_clip": 0.8, "model": ["1", 0], "clip": ["1", 1]}},
        "3": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox\n", "clip": ["3", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["3", 0]}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 448, "batch_size": 2}},
        "7": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 25, "cfg": 6.5, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0,
                                                   "model": ["2", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}},
    }
    meta = read_image_metadata(comfy_png(graph))
    assert meta.source == "comfyui" and meta.model_name == "dream.safetensors" and meta.extra["loras"] == "ink.safetensors: 0.8"
    assert meta.fields == {
        "prompt": "a fox", "negative_prompt": "blurry", "seed": 42, "steps": 25, "cfg_scale": 6.5, "sampler_name": expected[0],
        "scheduler": expected[1], "width": 640, "height": 448, "batch_size": 2, "clip_skip": 2,
    }
    assert meta.to_recipe().width == 640


def test_invokeai3_karras_schedulers():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("invokeai_metadata", json.dumps({"positive_prompt": "a", "scheduler": "dpmpp_2m_k", "model": {"name": "m", "hash": "blake3:1"}, "rand_device": "cuda"}))
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG", pnginfo=info)
    meta = read_image_metadata(buffer.getvalue())
    assert meta.fields == {"prompt": "a", "sampler_name": "DPM++ 2M", "scheduler": "Karras", "rng": "device"}
    assert (meta.model_name, meta.model_hash) == ("m", "blake3:1")


RECIPE = Recipe(prompt="a lighthouse, at dusk: \"calm\"", negative_prompt="blurry", seed=123, width=64, height=64, steps=12, model="tiny")


def test_our_png_carries_infotext_and_full_recipe():
    text = to_infotext(RECIPE, model_name="tiny", model_hash="0123456789")
    data = png_with_metadata(Image.new("RGB", (64, 64), "navy"), text, RECIPE.to_json())
    assert b"tEXtparameters\x00" in data  # Latin-1 text: a plain tEXt chunk, as A1111 writes it
    meta = read_image_metadata(data)
    assert meta.source == "localdiffusion" and meta.raw["parameters"] == text
    assert meta.recipe_json == RECIPE.to_json() and meta.to_recipe() == RECIPE
    assert meta.fields["prompt"] == RECIPE.prompt and meta.fields["seed"] == 123
    assert (meta.model_name, meta.model_hash) == ("tiny", "0123456789")


def test_non_latin1_infotext_goes_to_itxt_and_a1111_readers_still_find_it():
    recipe = RECIPE.model_copy(update={"prompt": "灯台 ☀"})
    data = png_with_metadata(Image.new("RGB", (8, 8)), to_infotext(recipe, model_name=None, model_hash=None), None)
    assert b"iTXtparameters\x00" in data
    meta = read_image_metadata(data)
    assert meta.source == "a1111" and meta.fields["prompt"] == "灯台 ☀" and meta.recipe_json is None


def test_save_png_writes_atomically(tmp_path: Path):
    target = tmp_path / "out" / "image.png"
    save_png(Image.new("RGB", (8, 8)), target, "p\nSteps: 1, Sampler: Euler, CFG scale: 7, Seed: 1", RECIPE.to_json())
    assert [p.name for p in target.parent.iterdir()] == ["image.png"]
    assert read_image_metadata(target).recipe_json == RECIPE.to_json()


A1111_TEXT = "a duck, swimming\nNegative prompt: monochrome\nSteps: 15, Sampler: UniPC, CFG scale: 5, Seed: 2, Size: 512x400, Model: duck"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_exif_user_comment_in_jpeg_and_webp(fmt, encoding):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + A1111_TEXT.encode(encoding)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, fmt, exif=exif)
    meta = read_image_metadata(buffer.getvalue())
    assert meta.source == "a1111" and meta.raw["UserComment"] == A1111_TEXT
    assert meta.fields["prompt"] == "a duck, swimming" and meta.model_name == "duck"


def test_user_comment_charset_prefixes():
    assert decode_user_comment(b"ASCII\0\0\0hello") == "hello"
    assert decode_user_comment(b"UNICODE\0" + "\ufeffhi".encode("utf-16-le")) == "hi"


@pytest.mark.parametrize("compressed", [True, False])
def test_stealth_alpha_round_trip(compressed):
    hidden = write_stealth(Image.new("RGB", (64, 64), "white"), A1111_TEXT, compressed=compressed)
    buffer = io.BytesIO()
    hidden.save(buffer, "PNG")
    meta = read_image_metadata(buffer.getvalue())
    assert meta.source == "a1111" and meta.raw["stealth_pnginfo"] == A1111_TEXT and meta.fields["seed"] == 2


def test_image_without_metadata():
    buffer = io.BytesIO()
    Image.new("RGBA", (16, 16), (10, 20, 30, 255)).save(buffer, "PNG")
    meta = read_image_metadata(buffer.getvalue())
    assert meta.is_empty() and meta.source is None and meta.fields == {}


def test_missing_file_and_non_image_raise_bad_input(tmp_path: Path):
    with pytest.raises(BadInput, match="no file"):
        read_image_metadata(tmp_path / "missing.png")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with pytest.raises(BadInput, match="not an image"):
        read_image_metadata(text_file)
    with pytest.raises(BadInput, match="not an image"):
        read_image_metadata(b"\x00\x01")


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


@pytest.mark.parametrize("compressed", [True, False])
def test_stealth_text_beyond_the_limit_is_refused_in_one_sentence(compressed):
    # Compressed, 2 MB of text hide in a 4 KB image; it is refused after at most 256 KiB are decompressed.
    text = "a\n" * (1_000_000 if compressed else 40_000)
    hidden = write_stealth(Image.new("RGB", (200, 200) if compressed else (1000, 700), "white"), text, compressed=compressed)
    with pytest.raises(BadInput, match=r"^The text hidden in the image's pixels \(stealth_pnginfo\) is .*above the limit of 65,536 characters"):
        read_image_metadata(png_bytes(hidden))


def test_stealth_text_is_read_from_the_columns_that_hold_it():
    # A wide image: only the first columns carry the text, and the rest may be anything.
    hidden = write_stealth(Image.new("RGB", (3000, 40), "white"), A1111_TEXT)
    assert read_image_metadata(png_bytes(hidden)).raw["stealth_pnginfo"] == A1111_TEXT


def test_a_parameters_text_beyond_the_limit_is_refused_in_one_sentence():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a\n" * 40_000 + "Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 1")
    with pytest.raises(BadInput, match=r"^The image's 'parameters' text is 80,048 characters long, above the limit"):
        read_image_metadata(png_bytes(Image.new("RGB", (8, 8)), pnginfo=info))
