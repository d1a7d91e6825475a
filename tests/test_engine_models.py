"""Engine.generate() with the models people bring: single-file twins, LoRAs, embeddings, and the
model hash each image records. `test_engine.py` covers modes, samplers and parity with diffusers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from localdiffusion.errors import LocalDiffusionError, ModelNotFound
from localdiffusion.models.hashing import sha256_file
from localdiffusion.recipe import Recipe

BASE = dict(prompt="a photo of a cat", seed=42, steps=3, width=64, height=64, cfg_scale=7.0, sampler_name="Euler")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and bool((pixels(a) == pixels(b)).all())


def lora_variant(source: Path, path: Path, *, text_parts: tuple[str, ...] | None = None, text_width: int | None = None) -> Path:
    """A copy of a kohya LoRA whose text-encoder part keeps only `text_parts` (e.g. ("q_proj", "v_proj"))
    or, with `text_width`, takes inputs of another width: a LoRA made for another model."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(source))
    text_keys = [k for k in state if k.startswith("lora_te_")]
    if text_parts is not None:
        for key in text_keys:
            if not any(f"_{part}." in key for part in text_parts):
                del state[key]
    if text_width is not None:
        torch.manual_seed(1)
        for key in [k for k in text_keys if k.endswith("lora_down.weight")]:
            state[key] = torch.randn(state[key].shape[0], text_width) * 0.1
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory, sd1_folder, sdxl_folder):
    """A home with SD1 and SDXL as folders and as single files, three LoRAs and one embedding."""
    from factories import build_embedding, build_lora, build_single_file

    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("studio-home")).ensure()
    checkpoints, loras = home.model_dir("checkpoint"), home.model_dir("lora")
    (checkpoints / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    (checkpoints / "tiny-sdxl").symlink_to(sdxl_folder, target_is_directory=True)
    build_single_file(sd1_folder, checkpoints / "sd1-file.safetensors")
    build_single_file(sdxl_folder, checkpoints / "sdxl-file.safetensors")
    kohya = build_lora(sd1_folder, loras / "style-lora.safetensors")
    lora_variant(kohya, loras / "qv-lora.safetensors", text_parts=("q_proj", "v_proj"))
    lora_variant(kohya, loras / "wide-lora.safetensors", text_width=32)
    build_embedding(home.model_dir("embedding") / "tiny-emb.safetensors")
    return home


def engine_for(home):
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(home, Database(home.db_path)))


@pytest.fixture(scope="module")
def studio(studio_home):
    return engine_for(studio_home)


@pytest.fixture(scope="module")
def plain_sd1(tmp_path_factory, sd1_folder):
    """An engine on a home with the same SD1 model and no embeddings."""
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("plain-home")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    return engine_for(home)


@pytest.fixture(scope="module")
def plain_image(studio):
    return generate(studio, model="tiny-sd1").images[0]


def generate(engine, **fields):
    result = engine.generate(Recipe(**{**BASE, **fields}))
    assert_model_hash(engine, result)
    return result


def assert_model_hash(engine, result) -> None:
    """Every infotext names the checkpoint's A1111 short hash, as the library computes it."""
    info = engine.library.ensure_hash(engine.library.get(result.recipes[0].model))
    for text in result.infotexts:
        hashes = re.findall(r"Model hash: ([^,\n]*)", text)
        assert hashes == [info.short_hash], text
        assert re.fullmatch(r"[0-9a-f]{10}", hashes[0])


# -- single files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("folder, file", [("tiny-sd1", "sd1-file"), ("tiny-sdxl", "sdxl-file")])
def test_single_file_twin_gives_the_same_image_as_its_folder(studio, folder, file):
    from_folder = generate(studio, model=folder)
    from_file = generate(studio, model=file)
    assert same(from_folder.images[0], from_file.images[0])
    assert from_file.recipes[0].model == file and f"Model: {file}" in from_file.infotexts[0]


def test_single_file_hash_is_a1111s_sha256_of_the_file(studio, studio_home):
    result = generate(studio, model="sd1-file")
    expected = sha256_file(studio_home.model_dir("checkpoint") / "sd1-file.safetensors")[:10]
    assert f"Model hash: {expected}," in result.infotexts[0]


def test_sdxl_single_file_keeps_the_sdxl_vae_scaling(studio):
    """The single-file loader sets SDXL's 0.13025; the tiny SDXL folder is built with the same value."""
    folder = studio.pipeline(studio.checkpoint("tiny-sdxl")).vae.config.scaling_factor
    file = studio.pipeline(studio.checkpoint("sdxl-file")).vae.config.scaling_factor
    assert folder == file == pytest.approx(0.13025)


# -- LoRA -----------------------------------------------------------------------------------------


def test_lora_tag_changes_the_image_and_is_dropped_when_absent(studio, plain_image):
    styled = generate(studio, model="tiny-sd1", prompt="a photo of a cat <lora:style-lora:0.8>")
    zero = generate(studio, model="tiny-sd1", prompt="a photo of a cat <lora:style-lora:0>")
    after = generate(studio, model="tiny-sd1")
    assert not same(styled.images[0], plain_image)
    assert same(zero.images[0], plain_image)  # weight 0: no effect at all
    assert same(after.images[0], plain_image)  # no tag: the adapter is off again
    assert "<lora:style-lora:0.8>" in styled.recipes[0].prompt  # kept, so that a replay applies it again
    lora = studio.library.ensure_hash(studio.library.get("style-lora", kind="lora"))
    assert f'Lora hashes: "style-lora: {lora.short_hash}"' in styled.infotexts[0]
    assert "Lora hashes" not in after.infotexts[0]


def test_bind_takes_loras_and_hooks_off_again_even_when_a_run_is_cancelled(studio, plain_image):
    """Engine.bind restores the cached pipeline on exit: a cancelled LoRA run with attention capture leaves
    the plain weights and processors, so the next plain image is bit-identical without any undoing."""
    from localdiffusion.engine import RunHooks
    from localdiffusion.engine.attention import AttentionRecorder
    from localdiffusion.errors import Cancelled

    pipe = studio.pipeline(studio.checkpoint("tiny-sd1"))
    processors = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    with pytest.raises(Cancelled):
        studio.generate(Recipe(**{**BASE, "model": "tiny-sd1", "prompt": "a photo of a cat <lora:style-lora:0.8>"}),
                        RunHooks(cancel=lambda: True, attention=AttentionRecorder(steps=BASE["steps"])))
    assert pipe.__dict__.get("_localdiffusion_lora_state") == ()
    assert {name: type(p) for name, p in pipe.unet.attn_processors.items()} == processors
    assert same(generate(studio, model="tiny-sd1").images[0], plain_image)


def test_lora_on_a_single_file_matches_the_folder(studio):
    prompt = "a photo of a cat <lora:style-lora:0.8>"
    from_folder = generate(studio, model="tiny-sd1", prompt=prompt)
    from_file = generate(studio, model="sd1-file", prompt=prompt)
    assert same(from_folder.images[0], from_file.images[0])


def test_unknown_lora_names_the_closest_ones(studio):
    with pytest.raises(ModelNotFound) as e:
        studio.generate(Recipe(**{**BASE, "prompt": "a cat <lora:style-lorra:1>"}, model="tiny-sd1"))
    message = str(e.value)
    assert "'style-lorra'" in message and "'style-lora'" in message
    assert "\n" not in message


def test_kohya_lora_with_only_q_and_v_text_projections_loads(studio, plain_image):
    styled = generate(studio, model="tiny-sd1", prompt="a photo of a cat <lora:qv-lora:0.8>")
    assert not same(styled.images[0], plain_image)


def test_a_lora_that_does_not_fit_the_model_is_refused_every_time(studio, plain_image):
    for _ in range(2):
        with pytest.raises(LocalDiffusionError, match="wide-lora"):
            studio.generate(Recipe(**{**BASE, "prompt": "a photo of a cat <lora:wide-lora:1>"}, model="tiny-sd1"))
    assert same(generate(studio, model="tiny-sd1").images[0], plain_image)


# -- textual inversion ----------------------------------------------------------------------------


def test_embedding_named_in_the_prompt_changes_the_image(studio, plain_sd1):
    prompt = "a photo of tiny-emb"
    with_embedding = generate(studio, model="tiny-sd1", prompt=prompt)
    as_plain_words = generate(plain_sd1, model="tiny-sd1", prompt=prompt)  # same weights, no embeddings/
    assert not same(with_embedding.images[0], as_plain_words.images[0])
    again = generate(studio, model="tiny-sd1", prompt=prompt)
    assert same(with_embedding.images[0], again.images[0])

