"""Shared fixtures: tiny random-weight models, built once per test session, and a home folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Exact-image tests compare pixels made in fp32: on a CPU with native bf16 the engine would default to bf16,
# so every engine the tests start (in this process or a child one) is told the CPU has none. The engine
# fixtures below also pin float32 explicitly; tests/test_fast_cpu.py checks the bf16 default itself.
os.environ["LOCALDIFFUSION_CPU_BF16"] = "0"


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: a real local Ray cluster (the [cluster] extra); part of the default run, alone with -m ray")
    config.addinivalue_line("markers", "pose: needs the [pose] extra (mediapipe); skipped without it, run alone with -m pose")


def pytest_collection_modifyitems(config, items):
    """Tests marked `pose` skip cleanly where the [pose] extra is not installed (the default set-up)."""
    import importlib.util

    if importlib.util.find_spec("mediapipe") is not None:
        return
    skip = pytest.mark.skip(reason="needs the [pose] extra (mediapipe): bash scripts/setup.sh --pose")
    for item in items:
        if item.get_closest_marker("pose") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizers")


@pytest.fixture(scope="session")
def sd1_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sd1

    return build_sd1(tmp_path_factory.mktemp("models") / "tiny-sd1", tokenizer_cache)


@pytest.fixture(scope="session")
def sd1_inpaint_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sd1

    return build_sd1(tmp_path_factory.mktemp("models") / "tiny-sd1-inpaint", tokenizer_cache, inpaint=True)


@pytest.fixture(scope="session")
def sd2v_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sd2

    return build_sd2(tmp_path_factory.mktemp("models") / "tiny-sd2-v", tokenizer_cache, v_prediction=True)


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl", tokenizer_cache)


@pytest.fixture(scope="session")
def sdxl_refiner_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl-refiner", tokenizer_cache, refiner=True)


@pytest.fixture()
def home(tmp_path) -> "object":
    from localdiffusion.store.home import Home

    return Home(tmp_path / "home").ensure()


@pytest.fixture(scope="session")
def model_home(tmp_path_factory, sd1_folder, sd1_inpaint_folder, sd2v_folder, sdxl_folder, sdxl_refiner_folder):
    """A home folder whose checkpoint folder links the tiny models (read in place, as users' models are)."""
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("model-home")).ensure()
    for folder in (sd1_folder, sd1_inpaint_folder, sd2v_folder, sdxl_folder, sdxl_refiner_folder):
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def engine(model_home):
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(model_home, Database(model_home.db_path)), EngineOptions(dtype="float32"))


@pytest.fixture(scope="session")
def controlnets(tmp_path_factory, sd1_folder, sdxl_folder) -> dict[str, Path]:
    """Tiny live ControlNets for SD1 and SDXL in both layouts, named by type as people name theirs."""
    from factories import build_controlnet_file, build_live_controlnet

    root = tmp_path_factory.mktemp("controlnets")
    sd1 = build_live_controlnet(sd1_folder, root / "tiny-sd1-canny")
    sdxl = build_live_controlnet(sdxl_folder, root / "tiny-sdxl-canny")
    return {
        "sd1": sd1, "sdxl": sdxl,
        "sd1.file": build_controlnet_file(sd1, root / "control_tiny_sd15_scribble.safetensors"),
        "sdxl.file": build_controlnet_file(sdxl, root / "control_tiny_sdxl_depth.safetensors"),
    }


@pytest.fixture(scope="session")
def control_home(tmp_path_factory, sd1_folder, sd1_inpaint_folder, sdxl_folder, controlnets):
    """A home folder with SD1 (plain and inpaint) and SDXL checkpoints and the tiny ControlNets."""
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("control-home")).ensure()
    for folder in (sd1_folder, sd1_inpaint_folder, sdxl_folder):
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    for path in controlnets.values():
        (home.model_dir("controlnet") / path.name).symlink_to(path, target_is_directory=path.is_dir())
    return home


@pytest.fixture(scope="session")
def control_engine(control_home):
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(control_home, Database(control_home.db_path)), EngineOptions(dtype="float32"))


@pytest.fixture(scope="session")
def ip_home(tmp_path_factory, sd1_folder, sdxl_folder, controlnets):
    """A home folder with SD1 and SDXL checkpoints, their live ControlNets, live IP-Adapters for both
    (`ip-adapter_tiny_sd1`, `ip-adapter_tiny_sdxl`), their shared tiny image encoder, and two adapters
    with the real families' widths (`ip-adapter_sd15`, `ip-adapter_sdxl`) that fit neither tiny model."""
    from factories import build_image_encoder, build_ip_adapter, build_ip_adapter_for

    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("ip-home")).ensure()
    for folder in (sd1_folder, sdxl_folder):
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    for name in ("sd1", "sdxl"):
        (home.model_dir("controlnet") / controlnets[name].name).symlink_to(controlnets[name], target_is_directory=True)
    adapters = home.model_dir("ipadapter")
    build_ip_adapter_for(sd1_folder, adapters / "ip-adapter_tiny_sd1.safetensors")
    build_ip_adapter_for(sdxl_folder, adapters / "ip-adapter_tiny_sdxl.safetensors", seed=1)
    build_ip_adapter(adapters / "ip-adapter_sd15.safetensors", [32, 32], cross_width=768)
    build_ip_adapter(adapters / "ip-adapter_sdxl.safetensors", [32, 32], cross_width=2048)
    build_image_encoder(adapters / "image_encoder")
    return home


@pytest.fixture(scope="session")
def ip_engine(ip_home):
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(ip_home, Database(ip_home.db_path)), EngineOptions(dtype="float32"))


def remembered(engine):
    """engine.generate, remembered per recipe: several tests compare against the same images."""
    done: dict[str, object] = {}

    def run(recipe):
        key = recipe.to_json()
        if key not in done:
            done[key] = engine.generate(recipe)
        return done[key]

    return run


@pytest.fixture(scope="session")
def sd3_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_sd3

    return build_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3", tokenizer_cache)


@pytest.fixture(scope="session")
def flux_folder(tmp_path_factory, tokenizer_cache) -> Path:
    from factories import build_flux

    return build_flux(tmp_path_factory.mktemp("models") / "tiny-flux", tokenizer_cache)


@pytest.fixture(scope="session")
def flow_home(tmp_path_factory, sd3_folder, flux_folder):
    """A home with the tiny SD3 and FLUX models twice: as diffusers folders (`tiny-sd3`, `tiny-flux`) and as a
    ComfyUI user keeps them, in an extra ComfyUI root: the transformer alone in `models/diffusion_models`
    (`comfy-sd3`, `comfy-flux`), the text encoders and T5's tokenizer in `models/text_encoders`, the VAE in
    `models/vae`."""
    import json

    from factories import build_comfy_layout, build_flow_lora, build_kohya_flux_lora

    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("flow-home")).ensure()
    for folder in (sd3_folder, flux_folder):
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    comfy = tmp_path_factory.mktemp("comfyui")
    build_comfy_layout(sd3_folder, comfy / "models", "comfy-sd3")
    build_comfy_layout(flux_folder, comfy / "models", "comfy-flux")
    home.settings_path.write_text(json.dumps({"extra_roots": [str(comfy)]}))
    loras = home.model_dir("lora")
    build_flow_lora(flux_folder, loras / "tiny-flux-lora.safetensors")
    build_flow_lora(sd3_folder, loras / "tiny-sd3-lora.safetensors")
    build_kohya_flux_lora(flux_folder, loras / "tiny-flux-kohya.safetensors")
    return home


@pytest.fixture(scope="session")
def flow_engine(flow_home):
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(flow_home, Database(flow_home.db_path)), EngineOptions(dtype="float32"))
