"""The OpenVINO backend (engine/openvino.py) on tiny models: its images agree with torch's, its converted
networks are cached under HOME/cache/openvino and read back, a LoRA change converts anew, what it cannot do
falls back to torch with one sentence, and bad options are one sentence. The CPU device only."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localdiffusion.engine import openvino as ovb
from localdiffusion.errors import BadInput
from localdiffusion.recipe import ControlUnit, Recipe

pytest.importorskip("openvino")

BASE = dict(prompt="a lighthouse on a cliff", negative_prompt="fog", seed=11, steps=3, width=64, height=64, cfg_scale=6.0)


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def agree(torch_result, ov_result) -> None:
    assert len(torch_result.images) == len(ov_result.images)
    for a, b in zip(torch_result.images, ov_result.images):
        assert psnr(a, b) >= 35.0


def engine_for(home, **options):
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(home, Database(home.db_path)), EngineOptions(device="cpu", dtype="float32", **options))


@pytest.fixture(scope="module")
def ov_home(tmp_path_factory, sd1_folder):
    """The tiny SD1 as a diffusers folder and as a single file, a LoRA for it, and TAESD."""
    from factories import build_lora, build_single_file
    from test_fast_cpu import build_taesd

    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("ov-home")).ensure()
    (home.model_dir("checkpoint") / sd1_folder.name).symlink_to(sd1_folder, target_is_directory=True)
    build_single_file(sd1_folder, home.model_dir("checkpoint") / "tiny-sd1-file.safetensors")
    build_lora(sd1_folder, home.model_dir("lora") / "tiny-style.safetensors")
    build_taesd(1).save_pretrained(home.model_dir("vae-approx") / "taesd")
    return home


@pytest.fixture(scope="module")
def torch_engine(ov_home):
    return engine_for(ov_home)


@pytest.fixture(scope="module")
def ov_engine(ov_home):
    return engine_for(ov_home, backend="openvino", ov_device="CPU")


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ov-inputs") / "input.png"
    image = Image.new("RGB", (64, 64), (40, 90, 160))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(230, 200, 40))
    image.save(path)
    return str(path)


def cached(home, part: str) -> list[str]:
    folder = home.cache / "openvino"
    return sorted(p.name for p in folder.glob(f"{part}-*")) if folder.exists() else []


# --- the same images ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sd1-file"])
def test_txt2img_with_an_a1111_sampler_agrees_with_torch(torch_engine, ov_engine, ov_home, model):
    recipe = Recipe(**BASE, model=model, sampler_name="Euler a", batch_size=2)
    before = dict(ovb.stats)
    result = ov_engine.generate(recipe)
    agree(torch_engine.generate(recipe), result)
    assert result.notes == []
    assert ovb.stats["converted"] + ovb.stats["read"] > before["converted"] + before["read"]  # OpenVINO ran
    assert cached(ov_home, "unet") and cached(ov_home, "vae_decoder")


def test_a_diffusers_sampler_agrees_with_torch(torch_engine, ov_engine):
    recipe = Recipe(**BASE, model="tiny-sd1", sampler_name="DEIS")
    agree(torch_engine.generate(recipe), ov_engine.generate(recipe))


def test_img2img_agrees_with_torch(torch_engine, ov_engine, ov_home, picture):
    recipe = Recipe(**BASE, model="tiny-sd1", sampler_name="DPM++ 2M", mode="img2img", init_image=picture,
                    denoising_strength=0.6)
    agree(torch_engine.generate(recipe), ov_engine.generate(recipe))
    assert cached(ov_home, "vae_encoder")


def test_fast_decode_runs_taesd_on_openvino_and_agrees(torch_engine, ov_engine, ov_home):
    recipe = Recipe(**{**BASE, "cfg_scale": 1.0}, model="tiny-sd1", sampler_name="Euler")
    result = ov_engine.generate(recipe, vae_decode="fast")
    assert result.decoder == "fast"
    agree(torch_engine.generate(recipe, vae_decode="fast"), result)
    assert cached(ov_home, "taesd_decoder")


# --- the cache -------------------------------------------------------------------------------------


def test_a_second_engine_reads_the_cache_without_converting(ov_home, ov_engine):
    recipe = Recipe(**BASE, model="tiny-sd1", sampler_name="Euler a")
    first = ov_engine.generate(recipe)
    converted, read = ovb.stats["converted"], ovb.stats["read"]
    again = engine_for(ov_home, backend="openvino", ov_device="CPU").generate(recipe)  # a fresh process's view
    assert ovb.stats["converted"] == converted
    assert ovb.stats["read"] >= read + 2  # the UNet and the VAE decoder
    agree(first, again)
    assert not list((ov_home.cache / "openvino").glob(".tmp-*"))  # written atomically, nothing left over


def test_a_lora_set_makes_its_own_cache_entry_and_agrees(torch_engine, ov_engine, ov_home):
    plain = Recipe(**BASE, model="tiny-sd1", sampler_name="Euler a")
    ov_engine.generate(plain)
    before = set(cached(ov_home, "unet"))
    styled = plain.model_copy(update={"prompt": BASE["prompt"] + " <lora:tiny-style:0.8>"})
    result = ov_engine.generate(styled)
    added = set(cached(ov_home, "unet")) - before
    assert len(added) == 1
    agree(torch_engine.generate(styled), result)
    assert psnr(result.images[0], ov_engine.generate(plain).images[0]) < 99  # the LoRA shows; the plain UNet is back
    heavier = styled.model_copy(update={"prompt": BASE["prompt"] + " <lora:tiny-style:1.2>"})
    ov_engine.generate(heavier)
    assert len(set(cached(ov_home, "unet")) - before) == 2  # the weight is part of the key


# --- fallbacks to torch ----------------------------------------------------------------------------


def test_attention_capture_falls_back_to_torch_with_one_sentence(torch_engine, ov_engine):
    from localdiffusion.engine.attention import AttentionRecorder

    recipe = Recipe(**BASE, model="tiny-sd1", sampler_name="Euler a")
    result = ov_engine.generate(recipe, attention=AttentionRecorder(recipe.steps, cfg=True))
    [note] = result.notes
    assert note.startswith("This run used torch instead of OpenVINO") and "attention" in note and note.count(". ") == 0
    expected = torch_engine.generate(recipe, attention=AttentionRecorder(recipe.steps, cfg=True))
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected.images[0]))


def test_shared_attention_falls_back_to_torch(torch_engine, ov_engine):
    from localdiffusion.engine.shared_attention import SharedAttention

    recipe = Recipe(**BASE, model="tiny-sd1", sampler_name="Euler")
    result = ov_engine.generate(recipe, shared=SharedAttention(share=0.5, seed=1))
    assert len(result.notes) == 1 and "share attention" in result.notes[0]
    expected = torch_engine.generate(recipe, shared=SharedAttention(share=0.5, seed=1))
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected.images[0]))


def test_controlnet_falls_back_to_torch_and_the_job_result_carries_the_note(control_home, control_engine, tmp_path):
    from localdiffusion.jobs.artefacts import generation_result

    edges = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(edges).rectangle((12, 12, 50, 50), outline="white", width=2)
    edges.save(tmp_path / "edges.png")
    recipe = Recipe(**BASE, model="tiny-sd1", sampler_name="Euler a",
                    controls=[ControlUnit(model="tiny-sd1-canny", image=str(tmp_path / "edges.png"), module="none")])
    result = engine_for(control_home, backend="openvino", ov_device="CPU").generate(recipe)
    assert len(result.notes) == 1 and "ControlNet" in result.notes[0]
    assert generation_result(result)["notes"] == result.notes
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(control_engine.generate(recipe).images[0]))


# --- bad values -------------------------------------------------------------------------------------


def test_an_unknown_backend_is_one_sentence(ov_home):
    with pytest.raises(BadInput, match=r"^Unknown backend 'tensorrt'; use 'torch' or 'openvino'\.$") as e:
        engine_for(ov_home, backend="tensorrt")
    assert e.value.field == "backend"


def test_an_unknown_or_absent_device_is_one_sentence(ov_home):
    with pytest.raises(BadInput, match=r"^Unknown OpenVINO device 'TPU'; use 'AUTO', 'CPU', 'GPU' or 'NPU'\.$") as e:
        engine_for(ov_home, backend="openvino", ov_device="TPU")
    assert e.value.field == "ov_device"
    import openvino

    absent = next((d for d in ("NPU", "GPU") if d not in {x.split(".")[0] for x in openvino.Core().available_devices}), None)
    if absent is None:
        pytest.skip("this machine has every OpenVINO device")
    engine = engine_for(ov_home, backend="openvino", ov_device=absent.lower())
    with pytest.raises(BadInput, match=rf"^OpenVINO finds no {absent} device on this machine \(it has .*\); use --ov-device AUTO\.$"):
        engine.generate(Recipe(**BASE, model="tiny-sd1"))


def test_openvino_not_installed_says_how_to_install_it(ov_home, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(BadInput, match=r'pip install "localdiffusion\[openvino\]"') as e:
        engine_for(ov_home, backend="openvino")
    assert e.value.message.count(". ") == 0 and e.value.field == "backend"


def test_the_cli_refuses_an_unknown_backend_in_one_sentence(capsys, ov_home, tmp_path):
    from cli_runner import run_cli

    code, _, err = run_cli(capsys, "generate", "a lighthouse", "--steps", "1", "--size", "64x64", "--model", "tiny-sd1",
                           "--backend", "onnx", "-o", tmp_path, "--home", ov_home.root)
    assert code != 0 and "Unknown backend 'onnx'" in err and "Traceback" not in err


def test_a_vae_swapped_in_a_diffusers_folder_is_converted_again(tmp_path, sd1_folder):
    """A folder's hash covers its UNet only; the VAE's files are in the cache key, so a replaced VAE is not
    decoded by the converted old one."""
    import os
    import shutil

    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    folder = home.model_dir("checkpoint") / "tiny-copy"
    shutil.copytree(sd1_folder, folder)
    recipe = Recipe(**BASE, model="tiny-copy", sampler_name="Euler")
    engine_for(home, backend="openvino", ov_device="CPU").generate(recipe)
    unets, decoders = cached(home, "unet"), cached(home, "vae_decoder")
    for weights in (folder / "vae").glob("*.safetensors"):
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "a new VAE file"
    engine_for(home, backend="openvino", ov_device="CPU").generate(recipe)
    assert cached(home, "unet") == unets and len(cached(home, "vae_decoder")) == len(decoders) + 1
