"""The "fast" preset: few-step models recognised from their names and safetensors metadata, proposed settings,
`--preset fast` on the CLI (only for the flags not given, and said aloud), and GET /api/models reporting it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from cli_runner import run_cli as run
from factories import build_lora
from localdiffusion.engine.presets import apply_preset, detect_preset, preset_for_text
from localdiffusion.engine.samplers import resolve_sampler
from localdiffusion.models.info import ModelInfo
from localdiffusion.recipe import Recipe


@pytest.mark.parametrize("name, kind, steps, cfg, sampler, schedule", [
    ("sd_turbo", "SD-Turbo", 1, 1.0, "Euler a", "SGM Uniform"),
    ("sdxl-turbo-fp16", "SDXL-Turbo", 1, 1.0, "Euler a", "SGM Uniform"),
    ("dreamshaperXL_v21TurboDPMSDE", "Turbo", 4, 1.5, "Euler a", "SGM Uniform"),
    ("lcm-lora-sdv1-5", "LCM", 4, 1.5, "LCM", "Automatic"),
    ("LCM_Dreamshaper_v7", "LCM", 4, 1.5, "LCM", "Automatic"),
    ("Hyper-SDXL-2steps-lora", "Hyper-SD", 2, 1.0, "Euler", "SGM Uniform"),
    ("Hyper-SD15-8steps-CFG-lora", "Hyper-SD", 8, 5.0, "Euler", "SGM Uniform"),
    ("sdxl_lightning_4step_unet", "Lightning", 4, 1.0, "Euler", "SGM Uniform"),
    ("sdxl_lightning_8step_lora", "Lightning", 8, 1.0, "Euler", "SGM Uniform"),
])
def test_names_give_the_model_cards_settings(name, kind, steps, cfg, sampler, schedule):
    preset = preset_for_text(name)
    assert preset is not None and preset.kind == kind
    assert preset.values == {"steps": steps, "cfg_scale": cfg, "sampler_name": sampler, "scheduler": schedule}
    resolve_sampler(preset.sampler_name, preset.scheduler)  # every proposal is a sampler and schedule the engine has


@pytest.mark.parametrize("name", ["v1-5-pruned-emaonly", "realisticVision", "clcmodel", "photon_v1", "sdxl_base_1.0"])
def test_ordinary_models_get_no_preset(name):
    assert preset_for_text(name) is None


def _with_metadata(path: Path, metadata: dict[str, str]) -> Path:
    save_file(load_file(str(path)), str(path), metadata=metadata)
    return path


def test_a_lora_is_recognised_from_its_metadata(tmp_path, sd1_folder):
    lora = _with_metadata(build_lora(sd1_folder, tmp_path / "pytorch_lora_weights.safetensors"),
                          {"ss_output_name": "lcm-lora-sdv1-5", "ss_network_dim": "4"})
    preset = detect_preset(ModelInfo(name="pytorch_lora_weights", path=lora, kind="lora", format="safetensors"))
    assert preset is not None and (preset.kind, preset.found_in, preset.model) == ("LCM", "metadata", "pytorch_lora_weights")

    plain = _with_metadata(build_lora(sd1_folder, tmp_path / "style.safetensors"), {"modelspec.title": "Watercolour style"})
    assert detect_preset(ModelInfo(name="style", path=plain, kind="lora", format="safetensors")) is None


def test_a_diffusers_folder_with_the_lcm_scheduler_is_lcm(tmp_path):
    folder = tmp_path / "dreamshaper7"
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "LCMScheduler"}))
    preset = detect_preset(ModelInfo(name="dreamshaper7", path=folder, kind="checkpoint", format="diffusers"))
    assert preset is not None and (preset.kind, preset.found_in) == ("LCM", "scheduler")


def test_apply_keeps_what_the_person_set():
    preset = preset_for_text("sd-turbo")
    current = {"steps": 20, "cfg_scale": 7.0, "sampler_name": "Euler", "scheduler": "Automatic"}
    assert apply_preset(current, preset, {"sampler_name"}) == {"steps": 1, "cfg_scale": 1.0, "scheduler": "SGM Uniform"}
    assert apply_preset(current, preset, {"steps", "cfg_scale", "sampler_name", "scheduler"}) == {}


@pytest.fixture(scope="module")
def turbo_home(tmp_path_factory, sd1_folder) -> Path:
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("turbo-home")).ensure()
    shutil.copytree(sd1_folder, home.model_dir("checkpoint") / "sd-turbo-tiny")  # a second model, not a link to the same one
    (home.model_dir("checkpoint") / "plain-tiny").symlink_to(sd1_folder, target_is_directory=True)
    return home.root


def _recipe(folder: Path) -> Recipe:
    [png] = sorted(folder.glob("*.png"))
    return Recipe.from_json(Image.open(png).text["localdiffusion"])


def test_cli_preset_fast_fills_only_the_flags_not_given(capsys, turbo_home, tmp_path):
    out = tmp_path / "out"
    code, _, err = run(capsys, "generate", "a fox", "--home", turbo_home, "--model", "sd-turbo-tiny", "--preset", "fast",
                       "--sampler", "Euler", "--size", "64x64", "--seed", "3", "-o", out)
    assert code == 0, err
    assert "SD-Turbo" in err and "--steps 1" in err and "--cfg 1" in err and "--scheduler 'SGM Uniform'" in err
    assert "kept your --sampler" in err
    recipe = _recipe(out)
    assert (recipe.steps, recipe.cfg_scale, recipe.sampler_name, recipe.scheduler) == (1, 1.0, "Euler", "SGM Uniform")


def test_cli_without_preset_changes_nothing_and_an_ordinary_model_is_left_alone(capsys, turbo_home, tmp_path):
    code, _, err = run(capsys, "generate", "a fox", "--home", turbo_home, "--model", "sd-turbo-tiny", "--steps", "2",
                       "--size", "64x64", "-o", tmp_path / "a")
    assert code == 0, err
    assert "preset" not in err
    assert (_recipe(tmp_path / "a").steps, _recipe(tmp_path / "a").cfg_scale) == (2, 7.0)

    code, _, err = run(capsys, "generate", "a fox", "--home", turbo_home, "--model", "plain-tiny", "--steps", "2", "--preset", "fast",
                       "--size", "64x64", "-o", tmp_path / "b")
    assert code == 0, err
    assert "nothing changed" in err
    assert (_recipe(tmp_path / "b").steps, _recipe(tmp_path / "b").cfg_scale) == (2, 7.0)


def test_cli_refuses_an_unknown_preset(capsys, turbo_home, tmp_path):
    code, _, err = run(capsys, "generate", "a fox", "--home", turbo_home, "--preset", "quick", "-o", tmp_path)
    assert code != 0 and "Unknown preset 'quick'" in err and "Traceback" not in err
