"""`localdiffusion generate`, `replay` and `info` end to end, on a home holding a tiny SD1 model.

Most runs go through `main()` in-process (fast); one runs the real `python -m localdiffusion`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localdiffusion.cli.app import main
from localdiffusion.recipe import Recipe
from cli_runner import run_cli as run

PROMPT = "a red fox in the snow"
FAST = ["--steps", "2", "--size", "64x64", "--seed", "3", "--sampler", "Euler"]




def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png")) if folder.exists() else []


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def recipe_of(path: Path) -> Recipe:
    return Recipe.from_json(Image.open(path).text["localdiffusion"])


def home_with(root: Path, *folders: Path) -> Path:
    from localdiffusion.store.home import Home

    home = Home(root).ensure()
    for folder in folders:
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    return home.root


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory, sd1_folder) -> Path:
    return home_with(tmp_path_factory.mktemp("cli-home"), sd1_folder)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-inputs")
    image = Image.new("RGB", (64, 64), (40, 90, 160))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(230, 200, 40))
    image.save(folder / "input.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 40, 40), fill=255)
    mask.save(folder / "mask.png")
    Image.new("L", (32, 32), 255).save(folder / "small-mask.png")
    (folder / "notes.png").write_text("not an image at all")
    from safetensors.torch import save_file
    import torch

    save_file({"weight": torch.zeros(3, 3)}, str(folder / "weights.safetensors"))
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def first_png(cli_home, tmp_path_factory) -> Path:
    """`generate PROMPT --steps 2 --size 64x64 --seed 3 -o DIR`, run once for the tests that read its output."""
    out = tmp_path_factory.mktemp("cli-out")
    try:
        main(["generate", PROMPT, *FAST, "-o", str(out), "--home", str(cli_home)])
    except SystemExit as e:
        assert not e.code
    return out / "00001-3.png"


# -- txt2img, batches, info ---------------------------------------------------------------------


def test_generate_writes_a_numbered_png_with_infotext_and_recipe(first_png):
    assert pngs(first_png.parent) == ["00001-3.png"]
    image = Image.open(first_png)
    assert image.size == (64, 64)
    infotext = image.text["parameters"]
    assert infotext.startswith(PROMPT + "\n")
    for part in ("Steps: 2", "Sampler: Euler", "Seed: 3", "Size: 64x64", "Model: tiny-sd1"):
        assert part in infotext
    assert re.search(r"Model hash: [0-9a-f]{10},", infotext)
    recipe = recipe_of(first_png)
    assert (recipe.prompt, recipe.seed, recipe.steps, recipe.width, recipe.height) == (PROMPT, 3, 2, 64, 64)
    assert (recipe.model, recipe.mode, recipe.batch_size, recipe.n_iter) == ("tiny-sd1", "txt2img", 1, 1)


def test_batches_write_one_file_per_image_with_consecutive_seeds(capsys, cli_home, tmp_path):
    code, out, err = run(capsys, "generate", PROMPT, *FAST, "--batch-size", 2, "--batch-count", 2,
                         "-o", tmp_path, "--home", cli_home)
    assert code == 0, err
    names = ["00001-3.png", "00002-4.png", "00003-5.png", "00004-6.png"]
    assert pngs(tmp_path) == names
    assert [recipe_of(tmp_path / n).seed for n in names] == [3, 4, 5, 6]
    assert all(n in out for n in names)


def test_info_json_recovers_the_settings(capsys, first_png):
    code, out, err = run(capsys, "info", first_png, "--json")
    assert code == 0, err
    fields = json.loads(out)
    assert (fields["prompt"], fields["seed"], fields["steps"], fields["width"], fields["height"]) == (PROMPT, 3, 2, 64, 64)
    assert fields["source"] == "localdiffusion" and fields["model_name"] == "tiny-sd1"
    assert re.fullmatch(r"[0-9a-f]{10}", fields["model_hash"])


# -- modes with an input image ------------------------------------------------------------------


@pytest.mark.parametrize("mode, extra, size", [
    ("img2img", ["--init", "input", "--denoise", "0.6"], (64, 64)),
    ("inpaint", ["--init", "input", "--mask", "mask"], (64, 64)),
    ("outpaint", ["--init", "input", "--outpaint", "0,64,0,0", "--denoise", "1", "--fill", "2"], (128, 64)),
    ("txt2img", ["--hires", "1.5", "--hires-steps", "2", "--denoise", "0.5"], (96, 96)),
])
def test_each_mode_writes_a_png_of_the_right_size(capsys, cli_home, inputs, tmp_path, mode, extra, size):
    args = [str(inputs[a]) if a in inputs else a for a in extra]
    fast = FAST if mode == "txt2img" else [a for a in FAST if a not in ("--size", "64x64")]
    code, _, err = run(capsys, "generate", PROMPT, *fast, *args, "-o", tmp_path, "--home", cli_home)
    assert code == 0, err
    assert pngs(tmp_path) == ["00001-3.png"]
    assert Image.open(tmp_path / "00001-3.png").size == size
    recipe = recipe_of(tmp_path / "00001-3.png")
    assert recipe.mode == mode and recipe.enable_hr == ("--hires" in extra)


# -- replay -------------------------------------------------------------------------------------


def test_replay_regenerates_the_same_pixels(capsys, cli_home, first_png, tmp_path):
    code, _, err = run(capsys, "replay", first_png, "-o", tmp_path, "--home", cli_home)
    assert code == 0, err
    assert pngs(tmp_path) == ["00001-3.png"]
    assert (pixels(tmp_path / "00001-3.png") == pixels(first_png)).all()
    assert recipe_of(tmp_path / "00001-3.png") == recipe_of(first_png)


def test_replay_of_an_a1111_png_says_first_what_will_differ(capsys, cli_home, first_png, tmp_path):
    """Only A1111's infotext (no recipe of ours), plus a setting and an extension we do not apply: replay runs and
    first says, one line each, what will make its picture differ."""
    from PIL import PngImagePlugin

    infotext = Image.open(first_png).text["parameters"].replace("Version:", "NGMS: 2, ADetailer model: face_yolov8n.pt, Version:")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    theirs = tmp_path / "theirs.png"
    Image.open(first_png).save(theirs, pnginfo=info)
    code, _, err = run(capsys, "replay", theirs, "-o", tmp_path / "out", "--home", cli_home)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("Will differ:")]
    assert lines == ["Will differ: The setting 'NGMS' is not applied here, so the picture may differ.",
                     "Will differ: The image was made with the ADetailer extension, which this engine does not have."]
    assert (pixels(tmp_path / "out" / "00001-3.png") == pixels(first_png)).all()  # the rest reproduces exactly


def test_replay_without_the_model_names_it_and_its_hash(capsys, first_png, tmp_path, sd1_inpaint_folder):
    other_home = home_with(tmp_path / "other-home", sd1_inpaint_folder)  # a different model only
    model_hash = re.search(r"Model hash: ([0-9a-f]{10})", Image.open(first_png).text["parameters"]).group(1)
    code, _, err = run(capsys, "replay", first_png, "-o", tmp_path / "out", "--home", other_home)
    assert code != 0
    message = one_sentence(err)
    assert "'tiny-sd1'" in message and model_hash in message
    assert pngs(tmp_path / "out") == []


# -- a real process -----------------------------------------------------------------------------


def test_python_m_localdiffusion_generates_the_same_image_in_a_new_process(cli_home, first_png, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "localdiffusion", "generate", PROMPT, *FAST, "-o", str(tmp_path), "--home", str(cli_home)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "00001-3.png") in done.stdout
    assert "Traceback" not in done.stderr
    assert (pixels(tmp_path / "00001-3.png") == pixels(first_png)).all()  # CPU noise: same image in any process


# -- bad input: one sentence, non-zero exit, nothing written ----------------------------------------


def one_sentence(stderr: str) -> str:
    """The error as one line of text; it must be a single `Error: ...` sentence without a traceback."""
    assert "Traceback" not in stderr
    message = " ".join(stderr.split())
    assert message.startswith("Error: "), stderr
    assert message.endswith((".", "?")) and message.count("Error:") == 1, stderr
    return message


@pytest.mark.parametrize("args, expected", [
    (["--size", "100x64"], "width 100 is not a multiple of 8; use 96 or 104"),
    (["--size", "12"], "The size '12' is not WIDTHxHEIGHT"),
    (["--model", "tiny-sd2"], "did you mean 'tiny-sd1'"),
    (["--sampler", "Euler b"], "Unknown sampler 'Euler b'"),
    (["--init", "notes"], "is not a readable image"),
    (["--init", "missing.png"], "does not exist"),
    (["--model", "weights"], "is not a Stable Diffusion checkpoint"),
    (["--model", "input"], "input.png"),
    (["--mask", "mask"], "A mask needs an image to inpaint; give it with --init"),
    (["--init", "input", "--mask", "small-mask"], "The mask is 32x32 but the image is 64x64"),
    (["--init", "input", "--outpaint", "1,2"], "The outpaint sides '1,2' are not four pixel counts"),
    (["--steps", "0"], "steps"),
], ids=["size-not-8", "size-format", "unknown-model", "unknown-sampler", "init-not-image", "init-missing",
        "model-not-sd", "model-is-image", "mask-without-init", "mask-size", "outpaint-format", "steps-zero"])
def test_bad_input_exits_with_one_sentence_and_writes_nothing(capsys, cli_home, inputs, tmp_path, args, expected):
    args = [str(inputs[a]) if a in inputs else a for a in args]
    out = tmp_path / "out"
    code, _, err = run(capsys, "generate", PROMPT, *FAST, *args, "-o", out, "--home", cli_home)
    assert code != 0
    assert expected in one_sentence(err)
    assert pngs(out) == []


def test_unknown_sampler_lists_the_samplers(capsys, cli_home, tmp_path):
    code, _, err = run(capsys, "generate", PROMPT, *FAST, "--sampler", "Euler b", "-o", tmp_path, "--home", cli_home)
    assert code != 0
    message = one_sentence(err)
    assert all(f"'{name}'" in message for name in ("Euler a", "DPM++ 2M", "DDIM", "UniPC"))


def test_size_above_max_side_in_settings_is_refused(capsys, tmp_path, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(home_with(tmp_path / "small-home", sd1_folder))
    settings = home.load_settings()
    settings.max_side = 128
    home.save_settings(settings)
    code, _, err = run(capsys, "generate", PROMPT, *FAST, "--size", "256x64", "-o", tmp_path / "out", "--home", home.root)
    assert code != 0
    assert "The size width 256 is above the limit of 128 pixels" in one_sentence(err)
    assert pngs(tmp_path / "out") == []
    code, _, err = run(capsys, "generate", PROMPT, *FAST, "--size", "64x128", "-o", tmp_path / "out", "--home", home.root)
    assert code == 0, err


def test_a_long_error_stays_on_one_line_when_stderr_is_a_pipe(capsys, cli_home, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, _, err = run(capsys, "generate", PROMPT, *FAST, "--sampler", "Euler b", "-o", tmp_path, "--home", cli_home)
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err


# --- ControlNet -------------------------------------------------------------------------------


def test_generate_with_control_units(capsys, control_home, inputs, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "generate", PROMPT, *FAST, "--home", control_home.root, "-o", out,
                               "--control", f"canny:{inputs['input']}:0.8:0:0.5",
                               "--control", f"none:{inputs['input']}", "--control-model", "tiny-sd1-canny",
                               "--control-model", "control_tiny_sd15_scribble")
    assert code == 0, stderr
    (name,) = pngs(out)
    units = recipe_of(out / name).controls
    assert [u.module for u in units] == ["canny", "none"] and units[0].weight == 0.8 and units[0].guidance_end == 0.5
    assert units[0].model.startswith("tiny-sd1-canny [") and units[1].model.startswith("control_tiny_sd15_scribble [")
    assert all(u.map and (control_home.root / u.map).is_file() for u in units)
    assert 'ControlNet 0: "Module: canny' in Image.open(out / name).text["parameters"]


def test_generate_picks_the_control_model_by_type(capsys, control_home, inputs, tmp_path):
    out = tmp_path / "out"
    code, _, stderr = run(capsys, "generate", PROMPT, *FAST, "--home", control_home.root, "-o", out,
                          "--control", f"scribble:{inputs['input']}")
    assert code == 0, stderr
    assert recipe_of(out / pngs(out)[0]).controls[0].model.startswith("control_tiny_sd15_scribble [")


@pytest.mark.parametrize("args, message", [
    (["--control", "sketchy:IMAGE"], "The control type 'sketchy'"),
    (["--control", "canny"], "is not TYPE:IMAGE"),
    (["--control", "canny:IMAGE:0.5:0.1"], "is not TYPE:IMAGE"),
    (["--control", "canny:IMAGE:3"], "The weight 3 in"),
    (["--control", "canny:missing.png"], "The control image 'missing.png'"),
    (["--control", "canny:IMAGE", "--control-model", "a", "--control-model", "b"], "2 --control-model values for 1 --control units"),
    (["--control-model", "a"], "names the ControlNet of a --control unit"),
    (["--model", "tiny-sdxl", "--control", "canny:IMAGE", "--control-model", "tiny-sd1-canny"], "is for SD 1.x but the model 'tiny-sdxl' is SDXL"),
])
def test_malformed_controls_get_one_sentence(capsys, control_home, inputs, args, message):
    args = [a.replace("IMAGE", str(inputs["input"])) for a in args]
    code, _, stderr = run(capsys, "generate", PROMPT, *FAST, "--home", control_home.root, *args)
    assert code != 0 and message in stderr and "Traceback" not in stderr


# --- a model given by its path ----------------------------------------------------------------


def test_a_model_given_by_path_is_added_in_place_and_its_images_replay(capsys, tmp_path, sd1_folder, controlnets, inputs):
    """`generate --model PATH` (a model outside the library) saves its images, and their recipe replays."""
    home = home_with(tmp_path / "empty-home")  # no model at all
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "generate", PROMPT, *FAST, "--model", sd1_folder, "-o", out, "--home", home,
                            "--control", f"canny:{inputs['input']}", "--control-model", controlnets["sd1"])
    assert code == 0, err
    assert pngs(out) == ["00001-3.png"]
    recipe = recipe_of(out / "00001-3.png")
    assert recipe.model == "tiny-sd1" and recipe.controls[0].model.startswith("tiny-sd1-canny [")
    assert "Model: tiny-sd1," in Image.open(out / "00001-3.png").text["parameters"]
    # Added in place, as `models add` would: listed, and nothing copied into the home.
    code, listed, err = run(capsys, "models", "list", "--json", "--home", home)
    assert code == 0, err
    assert {(m["name"], m["path"]) for m in json.loads(listed)} == {
        ("tiny-sd1", str(sd1_folder.resolve())), ("tiny-sd1-canny", str(controlnets["sd1"].resolve()))}
    assert not any((Path(home) / "models").rglob("*.json"))
    code, _, err = run(capsys, "replay", out / "00001-3.png", "-o", tmp_path / "again", "--home", home)
    assert code == 0, err
    assert (pixels(tmp_path / "again" / "00001-3.png") == pixels(out / "00001-3.png")).all()
    # `explain` takes the same path.
    code, _, err = run(capsys, "explain", PROMPT, *FAST, "--timeline", "--model", sd1_folder, "-o", tmp_path / "explained",
                       "--home", home_with(tmp_path / "explain-home"))
    assert code == 0, err
    assert json.loads((tmp_path / "explained" / "explain.json").read_text())["recipe"]["model"] == "tiny-sd1"


def test_with_the_setting_a_saved_png_also_opens_in_comfyui(capsys, tmp_path, sd1_folder, first_png):
    from localdiffusion.metadata.comfyui import read as read_comfyui
    from localdiffusion.metadata.container import open_container
    from localdiffusion.store.home import Home

    assert {"prompt", "workflow"}.isdisjoint(Image.open(first_png).text)  # not by default
    home = Home(home_with(tmp_path / "comfy-home", sd1_folder))
    settings = home.load_settings()
    settings.comfyui_workflow_in_png = True
    home.save_settings(settings)
    code, _, err = run(capsys, "generate", PROMPT, *FAST, "-o", tmp_path / "out", "--home", home.root)
    assert code == 0, err
    png = tmp_path / "out" / "00001-3.png"
    assert recipe_of(png).prompt == PROMPT  # our own metadata still comes first
    comfy = read_comfyui(open_container(png))
    assert (comfy.fields["seed"], comfy.fields["steps"], comfy.fields["prompt"]) == (3, 2, PROMPT)
    assert json.loads(Image.open(png).text["workflow"])["nodes"]


def test_refiner_flags_reach_the_recipe_and_the_infotext(capsys, tmp_path, model_home):
    code, _, err = run(capsys, "generate", PROMPT, "--steps", 2, "--size", "64x64", "--seed", 3, "--sampler", "Euler",
                       "--model", "tiny-sdxl", "--refiner", "tiny-sdxl-refiner", "--refiner-switch-at", 0.5,
                       "-o", tmp_path, "--home", model_home.root)
    assert code == 0, err
    infotext = Image.open(tmp_path / "00001-3.png").text["parameters"]
    assert "Refiner: tiny-sdxl-refiner" in infotext and "Refiner switch at: 0.5" in infotext
    code, _, err = run(capsys, "generate", PROMPT, *FAST, "--refiner", "tiny-sdxl-refiner", "--refiner-switch-at", 1.5,
                       "-o", tmp_path / "bad", "--home", model_home.root)
    assert code != 0 and "The value 1.5 for refiner_switch_at is not allowed" in err
