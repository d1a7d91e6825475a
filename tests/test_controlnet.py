"""ControlNet: loading both layouts, the engine's per-step residuals, resize modes, recording, preparing maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import remembered
from localdiffusion.errors import BadInput
from localdiffusion.recipe import ControlUnit, Recipe

SD1 = dict(prompt="a red cube", seed=3, steps=3, width=64, height=64, cfg_scale=5.0, sampler_name="Euler", model="tiny-sd1")
SDXL = {**SD1, "model": "tiny-sdxl"}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def differs(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


@pytest.fixture(scope="module")
def edges(tmp_path_factory) -> str:
    """A ready-made control map: white outlines on black, as a canny map looks."""
    image = Image.new("RGB", (96, 64), "black")
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 10, 70, 50), outline="white", width=2)
    draw.line((0, 63, 95, 0), fill="white", width=2)
    path = tmp_path_factory.mktemp("maps") / "edges.png"
    image.save(path)
    return str(path)


@pytest.fixture(scope="module")
def generate(control_engine):
    return remembered(control_engine)


@pytest.fixture(scope="module")
def plain(generate) -> dict[str, Image.Image]:
    return {name: generate(Recipe(**fields)).images[0] for name, fields in (("sd1", SD1), ("sdxl", SDXL))}


def unit(model: str, image: str, **fields) -> ControlUnit:
    return ControlUnit(model=model, image=image, module="none", **fields)


# --- loading ---------------------------------------------------------------------------------


def test_single_file_twin_loads_the_same_weights(controlnets, sd1_folder, sdxl_folder):
    import json

    from diffusers import ControlNetModel

    from localdiffusion.models.detect import detect
    from localdiffusion.models.single_file import load_controlnet_file

    for family, unet_folder in (("sd1", sd1_folder), ("sdxl", sdxl_folder)):
        detected = detect(controlnets[f"{family}.file"])
        assert (detected.kind, detected.family) == ("controlnet", family)
        folder = ControlNetModel.from_pretrained(str(controlnets[family]), local_files_only=True)
        base = json.loads((unet_folder / "unet" / "config.json").read_text())
        loaded = load_controlnet_file(controlnets[f"{family}.file"], family, base_unet=base)
        expected, got = folder.state_dict(), loaded.state_dict()
        assert set(expected) == set(got)
        assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.parametrize("family, fields, model", [
    ("sd1", SD1, "tiny-sd1-canny"), ("sd1", SD1, "control_tiny_sd15_scribble"),
    ("sdxl", SDXL, "tiny-sdxl-canny"), ("sdxl", SDXL, "control_tiny_sdxl_depth"),
])
def test_a_controlnet_in_either_layout_steers_the_image(generate, plain, edges, family, fields, model):
    result = generate(Recipe(**fields, controls=[unit(model, edges)]))
    assert differs(result.images[0], plain[family]) > 1.0
    recorded = result.recipes[0].controls[0]
    assert recorded.model.startswith(model + " [") and len(recorded.model.split("[")[1]) == 9  # 8 hex + "]"


def test_both_layouts_give_the_same_image(generate, edges):
    folder = generate(Recipe(**SD1, controls=[unit("tiny-sd1-canny", edges)])).images[0]
    single = generate(Recipe(**SD1, controls=[unit("control_tiny_sd15_scribble", edges)])).images[0]
    assert differs(folder, single) == 0


def test_sd1_controlnet_is_refused_on_sdxl(control_engine, edges):
    with pytest.raises(BadInput) as e:
        control_engine.generate(Recipe(**SDXL, controls=[unit("tiny-sd1-canny", edges)]))
    assert str(e.value) == "The ControlNet 'tiny-sd1-canny' is for SD 1.x but the model 'tiny-sdxl' is SDXL; choose an SDXL ControlNet."


# --- the loop ---------------------------------------------------------------------------------


def test_zero_weight_is_exactly_no_control(generate, plain, edges):
    result = generate(Recipe(**SD1, controls=[unit("tiny-sd1-canny", edges, weight=0.0)]))
    assert differs(result.images[0], plain["sd1"]) == 0


def test_two_units_add_up(generate, edges, tmp_path):
    dots = tmp_path / "dots.png"
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((10, 10, 40, 40), fill="white")
    image.save(dots)
    one = generate(Recipe(**SD1, controls=[unit("tiny-sd1-canny", edges)])).images[0]
    two = generate(Recipe(**SD1, controls=[unit("tiny-sd1-canny", edges), unit("control_tiny_sd15_scribble", str(dots))]))
    assert differs(two.images[0], one) > 1.0
    assert len(two.recipes[0].controls) == 2


def test_the_guidance_window_matters(generate, plain, edges):
    def run(start: float, end: float) -> Image.Image:
        return generate(Recipe(**SD1, controls=[unit("tiny-sd1-canny", edges, guidance_start=start, guidance_end=end)])).images[0]

    full, early, late = run(0.0, 1.0), run(0.0, 0.5), run(0.5, 1.0)
    assert differs(early, full) > 0.5 and differs(late, full) > 0.5 and differs(early, late) > 0.5
    # A window that no step fits in (step 1 of 3 ends at 0.33) is no control at all.
    assert differs(run(0.0, 0.2), plain["sd1"]) == 0


def test_step_window_follows_diffusers():
    from localdiffusion.engine.control import step_active

    window = ControlUnit(model="x", guidance_start=0.25, guidance_end=0.75)
    assert [step_active(window, i, 4) for i in range(4)] == [False, True, True, False]


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_control_in_img2img_and_inpaint(generate, edges, tmp_path, mode):
    source = tmp_path / "source.png"
    Image.new("RGB", (64, 64), (120, 90, 60)).save(source)
    mask = tmp_path / "mask.png"
    m = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(m).rectangle((16, 16, 48, 48), fill=255)
    m.save(mask)
    fields = {**SD1, "mode": mode, "init_image": str(source), "denoising_strength": 0.9}
    if mode == "inpaint":
        fields["mask"] = str(mask)
    plain = generate(Recipe(**fields)).images[0]
    steered = generate(Recipe(**fields, controls=[unit("tiny-sd1-canny", edges)])).images[0]
    assert differs(steered, plain) > 0.5


def test_control_with_a_nine_channel_inpaint_model(generate, edges, tmp_path):
    source, mask = tmp_path / "s.png", tmp_path / "m.png"
    Image.new("RGB", (64, 64), (120, 90, 60)).save(source)
    Image.new("L", (64, 64), 255).save(mask)
    fields = {**SD1, "model": "tiny-sd1-inpaint", "mode": "inpaint", "init_image": str(source), "mask": str(mask), "denoising_strength": 1.0}
    plain = generate(Recipe(**fields)).images[0]
    steered = generate(Recipe(**fields, controls=[unit("tiny-sd1-canny", edges)])).images[0]
    assert differs(steered, plain) > 0.5


def test_control_in_hires_fix_uses_the_hires_size(generate, edges, monkeypatch):
    from localdiffusion.engine import control as control_module

    sizes = []
    real = control_module.fit_map
    monkeypatch.setattr(control_module, "fit_map", lambda image, w, h, mode: sizes.append((w, h)) or real(image, w, h, mode))
    fields = {**SD1, "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    plain = generate(Recipe(**fields)).images[0]
    steered = generate(Recipe(**fields, controls=[unit("tiny-sd1-canny", edges)])).images[0]
    assert steered.size == (96, 96) and differs(steered, plain) > 0.5
    assert sizes == [(64, 64), (96, 96)]


def test_no_control_keeps_the_loop_bit_identical(control_engine):
    from localdiffusion.engine import backend as sampling  # the UNet's ControlNet arguments are the backend's

    calls = []
    real = sampling._residual_kwargs
    sampling_kwargs = lambda residuals: calls.append(residuals) or real(residuals)  # noqa: E731
    try:
        sampling._residual_kwargs = sampling_kwargs
        control_engine.generate(Recipe(**{**SD1, "steps": 1}))
    finally:
        sampling._residual_kwargs = real
    assert calls and all(c is None for c in calls) and real(None) == {}


# --- control modes (the extension's soft and CFG injection) ----------------------------------

PROMPT_FIRST, CONTROL_FIRST = "My prompt is more important", "ControlNet is more important"


@pytest.mark.parametrize("family, fields, model", [("sd1", SD1, "tiny-sd1-canny"), ("sdxl", SDXL, "tiny-sdxl-canny")])
def test_each_control_mode_gives_its_own_image(generate, edges, family, fields, model):
    def run(mode: str | None) -> Image.Image:
        extra = {} if mode is None else {"control_mode": mode}
        return generate(Recipe(**fields, controls=[unit(model, edges, **extra)])).images[0]

    default, balanced, prompt_first, control_first = run(None), run("Balanced"), run(PROMPT_FIRST), run(CONTROL_FIRST)
    assert differs(balanced, default) == 0
    assert differs(prompt_first, balanced) > 0.5 and differs(control_first, balanced) > 0.5 and differs(control_first, prompt_first) > 0.5


def captured_residuals(control_engine, monkeypatch, fields: dict, controls: list[ControlUnit]) -> list:
    """What the loop gave the UNet as ControlNet residuals, step by step."""
    from localdiffusion.engine import backend as sampling  # the UNet's ControlNet arguments are the backend's

    calls = []
    real = sampling._residual_kwargs
    monkeypatch.setattr(sampling, "_residual_kwargs", lambda residuals: calls.append(residuals) or real(residuals))
    control_engine.generate(Recipe(**fields, controls=controls))
    monkeypatch.setattr(sampling, "_residual_kwargs", real)
    return calls


@pytest.mark.parametrize("fields, model, count", [(SD1, "tiny-sd1-canny", 5), (SDXL, "tiny-sdxl-canny", 5)])
def test_control_modes_scale_and_mask_the_residuals_as_the_extension(control_engine, monkeypatch, edges, fields, model, count):
    """Step 1 starts from the same latents in every mode, so its residuals compare exactly: Balanced gives the
    ControlNet's own (weight 1), "My prompt" scales residual i by 0.825 ** (12 - i) (the mid one last), and
    "ControlNet" also zeroes CFG's unconditional half (the second of A1111's [prompt; negative] batch)."""
    fields = {**fields, "steps": 1, "batch_size": 2}

    def first(mode: str, weight: float = 1.0) -> list[torch.Tensor]:
        (residuals,) = captured_residuals(control_engine, monkeypatch, fields, [unit(model, edges, weight=weight, control_mode=mode)])
        down, mid = residuals
        return [*down, mid]

    balanced, prompt_first, control_first = first("Balanced"), first(PROMPT_FIRST), first(CONTROL_FIRST)
    assert len(balanced) == count  # the tiny UNets: conv_in, a resnet and a downsample, a resnet, then the mid block
    hand = [0.0994, 0.1205, 0.1461, 0.1770, 0.2146]  # 0.825 ** (12 - i), i = 0..4, to 4 places
    for i, (raw, soft, hard) in enumerate(zip(balanced, prompt_first, control_first)):
        scale = 0.825 ** (12 - i)
        assert scale == pytest.approx(hand[i], abs=5e-5)
        assert raw.shape[0] == 4 and raw.abs().max() > 0  # CFG's two halves of a batch of two
        assert torch.equal(soft, raw * scale)
        assert torch.equal(hard[2:], torch.zeros_like(hard[2:])) and torch.equal(hard[:2], soft[:2])
    # The weight multiplies the scales.
    half = first(PROMPT_FIRST, weight=0.5)
    assert all(torch.allclose(h, s * 0.5, rtol=1e-6, atol=0) for h, s in zip(half, prompt_first))


def test_without_cfg_controlnet_first_is_my_prompt_first(control_engine, monkeypatch, edges):
    """With CFG off (scale 1) a diffusers sampler runs only the prompt, so every row is conditional and nothing is
    masked. (A1111's samplers always run the negative prompt too, and mask it as the extension does.)"""
    fields = {**SD1, "steps": 1, "cfg_scale": 1.0, "sampler_name": "DEIS"}
    (soft,), (hard,) = (captured_residuals(control_engine, monkeypatch, fields, [unit("tiny-sd1-canny", edges, control_mode=m)])
                        for m in (PROMPT_FIRST, CONTROL_FIRST))
    assert all(torch.equal(a, b) for a, b in zip([*soft[0], soft[1]], [*hard[0], hard[1]]))


def test_soft_scales_follow_the_extension():
    from localdiffusion.engine.control import soft_scales

    sd1 = soft_scales(0.8, 13)  # SD1: 12 down residuals and the mid one, which gets the full weight
    assert sd1[-1] == pytest.approx(0.8) and sd1[0] == pytest.approx(0.8 * 0.0994, abs=1e-4)
    assert soft_scales(1.0, 10) == soft_scales(1.0, 13)[:10]  # SDXL: the first ten of the same thirteen


# --- checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    (dict(model="tiny-sd1-canny", module="canny", image="x.png"), "uses the preprocessor 'canny' but its map was not prepared"),
    (dict(model="tiny-sd1-canny"), "ControlNet unit 0 has no image"),
    (dict(image="x.png"), "ControlNet unit 0 names no ControlNet model"),
    (dict(model="tiny-sd1-canny", image="x.png", guidance_start=0.8, guidance_end=0.2), "starts at 0.8 but ends at 0.2"),
    (dict(model="no-such-net", image="EDGES"), "No controlnet named 'no-such-net'"),
])
def test_bad_units_get_one_sentence(control_engine, edges, fields, message):
    fields = {k: (edges if v == "EDGES" else v) for k, v in fields.items()}
    with pytest.raises(Exception) as e:
        control_engine.generate(Recipe(**SD1, controls=[ControlUnit(**fields)]))
    assert message in str(e.value) and "\n" not in str(e.value)


# --- resize modes -----------------------------------------------------------------------------


def test_resize_modes_geometry():
    from localdiffusion.engine.control import fit_map

    # A 200x100 map: white left half, black right half, a grey one-pixel frame.
    source = Image.new("RGB", (200, 100), "black")
    source.paste((255, 255, 255), (0, 0, 100, 100))
    ImageDraw.Draw(source).rectangle((0, 0, 199, 99), outline=(128, 128, 128))

    stretched = fit_map(source, 64, 64, "Just Resize")
    assert stretched.size == (64, 64)
    assert pixels(stretched)[32, 16].min() > 200 and pixels(stretched)[32, 48].max() < 50

    cropped = fit_map(source, 64, 64, "Crop and Resize")  # scale to 128x64, keep the middle 64 columns
    assert cropped.size == (64, 64)
    assert pixels(cropped)[32, 20].min() > 200 and pixels(cropped)[32, 44].max() < 50

    filled = fit_map(source, 64, 64, "Resize and Fill")  # scale to 64x32, centred, padded with the border's median
    assert filled.size == (64, 64)
    assert tuple(pixels(filled)[4, 32]) == (128, 128, 128) and tuple(pixels(filled)[60, 32]) == (128, 128, 128)
    assert pixels(filled)[32, 16].min() > 200 and pixels(filled)[32, 48].max() < 50


# --- recording --------------------------------------------------------------------------------


def test_infotext_writes_units_as_the_extension_and_reads_them_back(generate, edges):
    from localdiffusion.infotext import from_infotext

    controls = [unit("tiny-sd1-canny", edges, weight=0.8, guidance_end=0.5, resize_mode="Just Resize"),
                ControlUnit(model="control_tiny_sd15_scribble", image=edges, map=edges, module="canny", threshold_a=100, threshold_b=200)]
    result = generate(Recipe(**SD1, controls=controls))
    text = result.infotexts[0]
    title = result.recipes[0].controls[0].model
    assert (f'ControlNet 0: "Module: none, Model: {title}, Weight: 0.8, Resize Mode: Just Resize, Processor Res: 512, '
            f'Threshold A: -1.0, Threshold B: -1.0, Guidance Start: 0.0, Guidance End: 0.5, Pixel Perfect: False, Control Mode: Balanced"') in text
    assert "Threshold A: 100.0, Threshold B: 200.0" in text.split("ControlNet 1: ")[1]
    fields, rest = from_infotext(text)
    assert not any(k.startswith("ControlNet") for k in rest)
    parsed = Recipe(**fields).controls
    assert [u.model for u in parsed] == [u.model for u in result.recipes[0].controls]
    assert parsed[0].weight == 0.8 and parsed[0].guidance_end == 0.5 and parsed[0].resize_mode == "Just Resize"
    assert parsed[1].module == "canny" and parsed[1].threshold_b == 200.0 and parsed[1].map is None
    # The JSON recipe keeps everything, maps included.
    assert Recipe.from_json(result.recipes[0].to_json()).controls == result.recipes[0].controls


def test_compare_sweeps_the_controlnet_weight(capsys, control_home, edges, plain, tmp_path):
    from cli_runner import run_cli

    out = tmp_path / "cmp"
    args = ["compare", SD1["prompt"], "--x", "control_weight=0,1", "--y", "seed=3", "--model", "tiny-sd1", "--steps", "3",
            "--size", "64x64", "--cfg", "5", "--sampler", "Euler", "--control", f"none:{edges}", "--home", control_home.root]
    code, _, stderr = run_cli(capsys, *args, "-o", out)
    assert code != 0 and "name one of 'control_tiny_sd15_scribble' or 'tiny-sd1-canny'" in stderr
    code, _, stderr = run_cli(capsys, *args, "--control-model", "tiny-sd1-canny", "-o", out)
    assert code == 0, stderr
    summary = json.loads((out / "compare.json").read_text())
    cells = {cell["x_value"]: Image.open(out / cell["file"]).convert("RGB") for cell in summary["cells"]}
    assert differs(cells[0.0], plain["sd1"]) == 0, "weight 0 is the plain image"
    assert differs(cells[1.0], plain["sd1"]) > 1
    assert "ControlNet" in summary["axes"]["x"]["explanation"]


def test_a1111_written_infotext_parses():
    from localdiffusion.infotext import recipe_from_infotext

    text = ('a house\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: x, '
            'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, '
            'Low Vram: False, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, '
            'Pixel Perfect: True, Control Mode: Balanced, Hr Option: Both", Version: v1.10.1')
    (parsed,) = recipe_from_infotext(text).controls
    assert parsed.module == "canny" and parsed.model == "control_v11p_sd15_canny [d14c016b]" and parsed.threshold_a == 100.0


# --- preparing units (the control feature layer) ----------------------------------------------


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    image = Image.new("RGB", (80, 64), (30, 30, 30))
    ImageDraw.Draw(image).ellipse((15, 8, 65, 56), fill=(230, 220, 200))
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    image.save(path)
    return str(path)


def test_prepare_controls_keeps_the_map_so_a_replay_is_identical(generate, control_home, control_engine, photo):
    from localdiffusion.control.units import prepare_controls

    recipe = Recipe(**SD1, controls=[ControlUnit(image=photo, module="canny")])
    ready = prepare_controls(recipe, control_home.root, control_engine.library)
    (prepared,) = ready.controls
    assert prepared.model == "tiny-sd1-canny"  # picked by family and type
    assert prepared.map.startswith("inputs/") and (control_home.root / prepared.map).is_file()
    edges_found = np.asarray(Image.open(control_home.root / prepared.map))
    assert set(np.unique(edges_found)) <= {0, 255} and edges_found.max() == 255
    first = generate(ready)
    replay = control_engine.generate(Recipe.from_json(first.recipes[0].to_json()))
    assert differs(first.images[0], replay.images[0]) == 0
    assert prepare_controls(ready, control_home.root) == ready  # a prepared unit stays as it is


# The extension's formula, worked by hand: k = target/raw per side; "Resize and Fill" takes the smaller k, the
# other modes the larger; times the picture's short side, rounded. Sizes are (width, height).
@pytest.mark.parametrize("image, target, mode, expected", [
    ((96, 64), (512, 512), "Crop and Resize", 512),  # k = 8 (height) or 5.33 (width): 8 x 64
    ((96, 64), (512, 512), "Just Resize", 512),
    ((96, 64), (512, 512), "Resize and Fill", 341),  # 5.333 x 64 = 341.33
    ((96, 64), (520, 512), "Resize and Fill", 347),  # 5.4167 x 64 = 346.67, rounded up
    ((200, 300), (768, 512), "Crop and Resize", 768),  # k = 3.84 (width) or 1.71 (height): 3.84 x 200
    ((200, 300), (768, 512), "Resize and Fill", 341),  # 1.7067 x 200 = 341.33
    ((300, 200), (768, 512), "Resize and Fill", 512),  # the same aspect: both k are 2.56
    ((80, 64), (128, 64), "Crop and Resize", 102),  # 1.6 x 64 = 102.4
    ((10, 1000), (512, 512), "Resize and Fill", 64),  # 5.12, raised to processor_res's least, 64
    ((1000, 1000), (4096, 2048), "Crop and Resize", 2048),  # 4096, lowered to its most, 2048
])
def test_pixel_perfect_resolution_is_the_extensions_formula(image, target, mode, expected):
    from localdiffusion.control.preprocessors import pixel_perfect_resolution

    assert pixel_perfect_resolution(image, target, mode) == expected


@pytest.mark.parametrize("fields, mode, expected_res", [
    ({"width": 128, "height": 64}, "Crop and Resize", 102),  # the 80x64 photo covering 128x64: 1.6 x 64
    ({"width": 128, "height": 64}, "Resize and Fill", 64),  # fitting inside: 1 x 64
    ({"width": None, "height": None}, "Crop and Resize", 512),  # txt2img's default: the checkpoint's native 512x512
])
def test_pixel_perfect_sets_the_processing_resolution_from_the_sizes(control_home, control_engine, photo, fields, mode, expected_res):
    from localdiffusion.control.units import prepare_controls

    recipe = Recipe(**{**SD1, **fields}, controls=[ControlUnit(image=photo, module="canny", resize_mode=mode, pixel_perfect=True)])
    (prepared,) = prepare_controls(recipe, control_home.root, control_engine.library).controls
    assert prepared.processor_res == expected_res and prepared.pixel_perfect
    short_side = min(Image.open(control_home.root / prepared.map).size)
    assert short_side == expected_res  # the map was made at that resolution
    plain = prepare_controls(recipe.model_copy(update={"controls": [recipe.controls[0].model_copy(update={"pixel_perfect": False})]}),
                             control_home.root, control_engine.library).controls[0]
    assert plain.processor_res == 512 and min(Image.open(control_home.root / plain.map).size) == 512


def test_pixel_perfect_aims_at_the_input_pictures_size_in_img2img(control_home, control_engine, photo, tmp_path):
    from localdiffusion.control.units import prepare_controls

    source = tmp_path / "source.png"
    Image.new("RGB", (96, 64), (120, 90, 60)).save(source)
    recipe = Recipe(**{**SD1, "width": None, "height": None}, mode="img2img", init_image=str(source),
                    controls=[ControlUnit(image=photo, module="canny", pixel_perfect=True)])
    (prepared,) = prepare_controls(recipe, control_home.root, control_engine.library).controls
    assert prepared.processor_res == 77  # the 80x64 photo covering 96x64: 1.2 x 64 = 76.8


@pytest.mark.parametrize("model, module, expected", [
    ("tiny-sdxl", "depth", "control_tiny_sdxl_depth"),
    ("tiny-sd1", "scribble", "control_tiny_sd15_scribble"),
    ("tiny-sd1", "canny", "tiny-sd1-canny"),
])
def test_models_are_picked_by_family_and_type(control_home, control_engine, edges, model, module, expected):
    from localdiffusion.control.units import pick_model

    library = control_engine.library
    chosen = pick_model(0, ControlUnit(module=module, image=edges), library.get(model), library.list("controlnet"))
    assert chosen.name == expected


def test_no_fitting_model_names_the_installed_ones(control_engine, edges):
    from localdiffusion.control.units import pick_model

    library = control_engine.library
    with pytest.raises(BadInput) as e:
        pick_model(1, ControlUnit(module="openpose", image=edges), library.get("tiny-sdxl"), library.list("controlnet"))
    message = str(e.value)
    assert message.startswith("ControlNet unit 1 needs an openpose ControlNet for SDXL and none is installed (installed: ")
    assert "'tiny-sd1-canny (SD 1.x)'" in message and "--control-model" in message
    with pytest.raises(BadInput, match="ready-made map, so which SD 1.x ControlNet it is for cannot be guessed; name one of"):
        pick_model(0, ControlUnit(module="none", image=edges), library.get("tiny-sd1"), library.list("controlnet"))


# --- the studio API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio_client(tmp_path_factory, control_home):
    from fastapi.testclient import TestClient

    from localdiffusion.server.app import create_app
    from localdiffusion.server.studio import Studio
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("studio-control")).ensure()
    for kind in ("checkpoint", "controlnet"):
        for model in control_home.model_dir(kind).iterdir():
            (home.model_dir(kind) / model.name).symlink_to(model.resolve(), target_is_directory=model.is_dir())
    with TestClient(create_app(Studio.open(home))) as client:
        yield client


def test_studio_jobs_prepare_units_before_queueing(studio_client, photo):
    import time

    with open(photo, "rb") as f:
        ref = studio_client.post("/api/uploads", files={"file": ("photo.png", f, "image/png")}).json()["ref"]
    body = {**SD1, "controls": [{"image": ref, "module": "canny"}]}
    r = studio_client.post("/api/jobs", json=body)
    assert r.status_code == 201, r.text
    (queued,) = r.json()["recipe"]["controls"]
    assert queued["model"] == "tiny-sd1-canny" and queued["map"].startswith("inputs/")
    deadline = time.monotonic() + 60
    while (job := studio_client.get(f"/api/jobs/{r.json()['id']}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "done", job["error"]


@pytest.mark.parametrize("unit, model, status, field, words", [
    ({"image": "/etc/passwd", "module": "none"}, "tiny-sd1", 422, "controls.0.image", "is not an uploaded image"),
    ({"image": "REF", "module": "none", "model": "tiny-sd1-canny"}, "tiny-sdxl", 422, "controls.0.model", "is for SD 1.x but the model 'tiny-sdxl' is SDXL"),
    ({"image": "REF", "module": "none", "model": "nope"}, "tiny-sd1", 404, "controls.0.model", "No controlnet named 'nope'"),
])
def test_studio_refuses_bad_units_naming_the_field(studio_client, photo, unit, model, status, field, words):
    with open(photo, "rb") as f:
        ref = studio_client.post("/api/uploads", files={"file": ("photo.png", f, "image/png")}).json()["ref"]
    unit = {k: (ref if v == "REF" else v) for k, v in unit.items()}
    r = studio_client.post("/api/jobs", json={**SD1, "model": model, "controls": [unit]})
    assert r.status_code == status and r.json()["field"] == field and words in r.json()["detail"], r.text


# --- the A1111 API (the extension's units) ----------------------------------------------------


def test_a1111_units_honour_control_mode_and_pixel_perfect(studio_client, photo):
    import base64
    import io

    with open(photo, "rb") as f:
        picture = base64.b64encode(f.read()).decode()

    def txt2img(**unit) -> tuple[Image.Image, str]:
        body = {"prompt": SD1["prompt"], "seed": 3, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler", "cfg_scale": 5,
                "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
                "alwayson_scripts": {"controlnet": {"args": [{"image": picture, "module": "canny", "model": "tiny-sd1-canny", **unit}]}}}
        r = studio_client.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB")
        return image, json.loads(r.json()["info"])["infotexts"][0]

    balanced, text = txt2img()
    assert "Processor Res: 512, Threshold A: -1.0, Threshold B: -1.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced" in text
    prompt_first, text = txt2img(control_mode="My prompt is more important")
    assert "Pixel Perfect: False, Control Mode: My prompt is more important" in text and differs(prompt_first, balanced) > 0.5
    by_index, text = txt2img(control_mode=2)  # the extension's older API: the mode's index
    assert "Control Mode: ControlNet is more important" in text
    assert differs(by_index, balanced) > 0.5 and differs(by_index, prompt_first) > 0.5
    # Pixel perfect: the 80x64 photo covering 64x64 is worked at 64 (1 x 64), not at processor_res 512.
    _, text = txt2img(pixel_perfect=True, processor_res=512)
    assert "Processor Res: 64," in text and "Pixel Perfect: True, Control Mode: Balanced" in text
    newest = studio_client.get("/api/images?limit=1").json()["items"][0]
    (kept,) = studio_client.get(f"/api/images/{newest['id']}").json()["recipe"]["controls"]
    assert kept["pixel_perfect"] and kept["processor_res"] == 64
    assert Image.open(io.BytesIO(studio_client.get(f"/api/{kept['map']}").content)).size == (80, 64)  # the map made at 64

    bad = {"prompt": "x", "width": 64, "height": 64, "steps": 1, "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
           "alwayson_scripts": {"controlnet": {"args": [{"image": picture, "module": "canny", "control_mode": "Prompt first"}]}}}
    r = studio_client.post("/sdapi/v1/txt2img", json=bad)
    assert r.status_code == 400 and r.json()["field"] == "alwayson_scripts.controlnet.args.0.control_mode"
    assert r.json()["detail"] == ("The control mode 'Prompt first' is unknown; use one of 'Balanced', 'My prompt is more important' "
                                  "or 'ControlNet is more important' (or 0, 1, 2).")


# --- the command line -------------------------------------------------------------------------


def test_cli_units_take_control_mode_and_pixel_perfect(capsys, control_home, photo, tmp_path):
    from cli_runner import run_cli

    out = tmp_path / "out"
    args = ["generate", SD1["prompt"], "--model", "tiny-sd1", "--steps", "2", "--size", "128x64", "--cfg", "5", "--sampler", "Euler",
            "--seed", "3", "--home", control_home.root, "-o", out]
    code, _, stderr = run_cli(capsys, *args, "--control", f"canny:{photo}", "--control", f"none:{photo}", "--control-model", "tiny-sd1-canny",
                              "--control-mode", "prompt", "--control-mode", "ControlNet is more important", "--pixel-perfect")
    assert code == 0, stderr
    (png,) = out.glob("*.png")
    recipe, text = Recipe.from_json(Image.open(png).text["localdiffusion"]), Image.open(png).text["parameters"]
    assert "Processor Res: 102, Threshold A: -1.0, Threshold B: -1.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: True, Control Mode: My prompt is more important" in text
    assert "Pixel Perfect: True, Control Mode: ControlNet is more important" in text.split("ControlNet 1: ")[1]
    assert [u.control_mode for u in recipe.controls] == ["My prompt is more important", "ControlNet is more important"]
    assert [u.processor_res for u in recipe.controls] == [102, 102]  # the 80x64 photo covering 128x64: 1.6 x 64

    code, _, stderr = run_cli(capsys, *args, "--control", f"canny:{photo}", "--control-mode", "strict")
    assert code != 0 and "The control mode 'strict' is unknown; use one of 'balanced', 'prompt' or 'controlnet'." in stderr
    code, _, stderr = run_cli(capsys, *args, "--pixel-perfect")
    assert code != 0 and "--pixel-perfect sets the map size of a --control unit; add a --control TYPE:IMAGE." in stderr
