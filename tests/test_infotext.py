"""Recipe <-> A1111 infotext: A1111's exact text, its parser's rules, and lossless round trips."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

from localdiffusion import __version__
from localdiffusion.errors import BadInput
from localdiffusion.infotext import MAX_INFOTEXT, from_infotext, param_pairs, quote, recipe_from_infotext, split_sampler_name, to_infotext
from localdiffusion.recipe import Recipe

VERSION = f"Version: localdiffusion {__version__}"


def test_txt2img_infotext_is_exactly_what_a1111_writes():
    recipe = Recipe(prompt="a cat", seed=1, width=512, height=512, sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=7.0)
    text = to_infotext(recipe, model_name="v1-5", model_hash="abcdef1234")
    assert text == (
        "a cat\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, "
        f"Model hash: abcdef1234, Model: v1-5, RNG: CPU, {VERSION}"
    )


def test_negative_prompt_line_and_number_formatting():
    recipe = Recipe(prompt="a cat", negative_prompt="blurry", cfg_scale=7.5, width=512, height=768)
    lines = to_infotext(recipe, model_name=None, model_hash=None).split("\n")
    assert lines[1] == "Negative prompt: blurry"
    assert "CFG scale: 7.5" in lines[2] and "Size: 512x768" in lines[2]
    assert "Model" not in lines[2]


def test_values_that_would_confuse_the_parser_are_json_quoted():
    assert quote("plain value") == "plain value"
    for value in ("a, b", "key: value", 'say "hi"', "two\nlines"):
        assert quote(value) == json.dumps(value, ensure_ascii=False)
    text = to_infotext(Recipe(width=512, height=512), model_name="m", model_hash=None, extra={"Lora hashes": "cat: 1a2b, dog: 3c4d"})
    assert 'Lora hashes: "cat: 1a2b, dog: 3c4d"' in text


def test_optional_keys_appear_only_when_they_matter():
    plain = to_infotext(Recipe(width=512, height=512, denoising_strength=0.5), model_name=None, model_hash=None)
    for key in ("Clip skip", "Variation seed", "Denoising strength", "Hires", "Mask blur", "Refiner"):
        assert key not in plain
    assert "RNG: CPU" in plain and to_infotext(Recipe(rng="device"), model_name=None, model_hash=None).count("RNG: GPU") == 1


def test_a1111_key_order_for_hires_refiner_and_extras():
    recipe = Recipe(
        prompt="p", seed=3, width=512, height=512, clip_skip=2, subseed=9, subseed_strength=0.25, enable_hr=True,
        hr_scale=1.5, hr_second_pass_steps=10, hr_upscaler="R-ESRGAN 4x+", denoising_strength=0.55,
        refiner_checkpoint="sdxl_refiner [7440042bbd]", refiner_switch_at=0.8,
    )
    line = to_infotext(recipe, model_name="m", model_hash="h", extra={"Lora hashes": "x: 1"}).split("\n")[-1]
    keys = [part.split(":")[0] for part in line.split(", ") if ":" in part and not part.startswith(" ")]
    assert keys == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "Variation seed",
        "Variation seed strength", "Denoising strength", "Clip skip", "RNG", "Hires upscale", "Hires steps",
        "Hires upscaler", "Lora hashes", "Refiner", "Refiner switch at", "Version",
    ]
    assert "Hires upscale: 1.5" in line and "Denoising strength: 0.55" in line and "Refiner switch at: 0.8" in line


def test_inpaint_keys_follow_a1111():
    recipe = Recipe(mode="inpaint", mask_blur=8, inpainting_fill=2, inpaint_full_res=True, inpaint_full_res_padding=48, inpainting_mask_invert=1, denoising_strength=0.6)
    line = to_infotext(recipe, model_name=None, model_hash=None).split("\n")[-1]
    assert "Denoising strength: 0.6, RNG: CPU, Mask mode: Inpaint not masked, Mask blur: 8, Inpaint area: Only masked, Masked area padding: 48, Masked content: latent noise" in line
    default_fill = to_infotext(Recipe(mode="inpaint"), model_name=None, model_hash=None)
    assert "Masked content" not in default_fill  # 'original' is A1111's unstated default


def test_parse_a1111_text_with_multiline_prompt():
    text = (
        "girl with an artist's beret, determined\n(eyeshadow), detailed\n"
        "Negative prompt: ugly, fat\n[blurry]\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x640, Model hash: 45dee52b, Clip skip: 2, "
        'Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
    )
    fields, rest = from_infotext(text)
    assert fields == {
        "prompt": "girl with an artist's beret, determined\n(eyeshadow), detailed",
        "negative_prompt": "ugly, fat\n[blurry]",
        "steps": 20, "sampler_name": "Euler a", "cfg_scale": 7.0, "seed": 965400086, "width": 512, "height": 640, "clip_skip": 2,
        "rng": "nv",  # no RNG: A1111's default source, GPU, whose numbers NV gives on any machine
    }
    assert rest == {"Model hash": "45dee52b", "Lora hashes": "add_detail: 7c6bad76eb54", "Version": "v1.10.1"}


def test_unstated_settings_stay_absent():
    fields, _ = from_infotext("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1")
    for name in ("clip_skip", "scheduler", "width", "negative_prompt", "enable_hr", "inpainting_fill", "eta",
                 "eta_noise_seed_delta", "sgm_noise_multiplier", "pad_cond_uncond"):
        assert name not in fields
    assert fields["rng"] == "nv"  # as A1111's parser: a missing RNG is its default, GPU (NV's numbers)


@pytest.mark.parametrize("line, fields", [
    ("ENSD: 31337", {"eta_noise_seed_delta": 31337}),
    ("Eta: 0.5", {"eta": 0.5}),
    ("Eta DDIM: 0.3", {"eta": 0.3}),
    ("SGM noise multiplier: True", {"sgm_noise_multiplier": True}),
    ("Pad conds: True", {"pad_cond_uncond": True}),
    ("RNG: NV", {"rng": "nv"}),
    ("RNG: CPU", {"rng": "cpu"}),
    ("RNG: GPU", {"rng": "device"}),
])
def test_a1111_sampling_options_are_read(line, fields):
    stated, _ = from_infotext(f"a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, {line}")
    assert {k: stated[k] for k in fields} == fields


def test_prompt_only_text_and_unparsable_values():
    assert from_infotext("just a prompt, with: colons") == ({"prompt": "just a prompt, with: colons"}, {})
    fields, rest = from_infotext("p\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1")
    assert "steps" not in fields and rest["Steps"] == "many"


# A1111's `re_param` plus our JSON-object alternative: the parser the scanner replaces, kept here as its specification.
A1111_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|\{[^{}]*\}|[^,]*)(?:,|$)')


def test_parameter_lines_are_read_exactly_as_a1111s_regex_reads_them():
    # Short random lines over the characters the regex treats specially, where its backtracking costs nothing.
    alphabet = ["a", "Z", "_", "7", "é", " ", "\t", "-", "/", ":", ",", '"', "\\", "{", "}", ".", "\n"]
    rng = random.Random(23)
    for _ in range(30_000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 28)))
        assert param_pairs(line) == A1111_RE_PARAM.findall(line), repr(line)


def test_a_long_line_without_colons_is_a_prompt():
    # A1111's regex takes seconds here (its time grows with the square of the line); the scanner reads it once.
    line = "a" * (MAX_INFOTEXT - 10)
    assert param_pairs(line) == []
    assert from_infotext(line) == ({"prompt": line}, {})
    long_key = "x" * 30_000 + ": 1, Steps: 20, Seed: 1"
    assert param_pairs(long_key) == [("x" * 30_000, "1"), ("Steps", "20"), ("Seed", "1")]


def test_a_text_above_the_limit_is_refused_in_one_sentence():
    with pytest.raises(BadInput, match=r"65,537 characters long, above the limit of 65,536"):
        from_infotext("a" * (MAX_INFOTEXT + 1))


@pytest.mark.parametrize(
    ("written", "sampler", "schedule"),
    [("DPM++ 2M Karras", "DPM++ 2M", "Karras"), ("DPM++ SDE Karras", "DPM++ SDE", "Karras"), ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
     ("DPM++ 2M SDE", "DPM++ 2M SDE", None), ("Euler a", "Euler a", None), ("k_euler_a", "Euler a", None), ("DPM++ 2M SGM Uniform", "DPM++ 2M", "SGM Uniform")],
)
def test_old_combined_sampler_names_split_into_sampler_and_schedule(written, sampler, schedule):
    assert split_sampler_name(written) == (sampler, schedule)
    fields, _ = from_infotext(f"p\nSteps: 20, Sampler: {written}, Schedule type: Automatic, CFG scale: 7, Seed: 1")
    assert fields["sampler_name"] == sampler and fields["scheduler"] == (schedule or "Automatic")


def test_unquoted_json_hashes_value(fixtures_expected_line):
    fields, rest = from_infotext(fixtures_expected_line["input"])
    expected = fixtures_expected_line
    assert fields["sampler_name"] == expected["expected_sampler_fields"]["Sampler"]
    assert fields["steps"] == int(expected["expected_sampler_fields"]["Steps"])
    assert fields["cfg_scale"] == float(expected["expected_sampler_fields"]["CFG scale"])
    assert fields["seed"] == int(expected["expected_sampler_fields"]["Seed"])
    other = expected["expected_other"]
    assert rest["Model"] == other["Model"] and rest["Model hash"] == other["Model hash"]
    assert f"{fields['width']}x{fields['height']}" == other["Size"]
    assert json.loads(rest["Hashes"]) == other["Hashes"]


@pytest.fixture
def fixtures_expected_line():
    """The A1111 line test from the shared fixtures (see test_metadata.py for where they live)."""
    root = Path(os.environ.get("LOCALDIFFUSION_FIXTURES") or Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "pnginfo")
    if not (root / "expected.json").is_file():
        pytest.skip(f"no image-metadata fixtures at {root}")
    return json.loads((root / "expected.json").read_text(encoding="utf-8"))["a1111_line_tests"][0]


ROUND_TRIP = [
    Recipe(prompt="a cat", seed=1, width=512, height=512),
    Recipe(prompt='a "quoted", comma: colon prompt', negative_prompt="bad, worse: \"worst\"", seed=4294967295, width=768, height=512, cfg_scale=6.5, steps=31),
    Recipe(prompt="line one\nline two, with comma\nline three: colon", negative_prompt="neg one\nneg two", seed=0, width=1024, height=1024),
    Recipe(prompt="猫と犬, café ☕ — naïve «quotes»", negative_prompt="ぼやけた", seed=12, width=512, height=512, sampler_name="DPM++ 2M SDE", scheduler="Exponential"),
    Recipe(prompt="variations", seed=7, subseed=8, subseed_strength=0.35, clip_skip=2, rng="device", width=512, height=512),
    Recipe(prompt="hires", seed=7, width=512, height=512, enable_hr=True, hr_scale=1.5, hr_upscaler="R-ESRGAN 4x+", hr_second_pass_steps=12, denoising_strength=0.45),
    Recipe(prompt="xl", seed=9, width=1024, height=1024, refiner_checkpoint="sd_xl_refiner_1.0 [7440042bbd]", refiner_switch_at=0.7),
    Recipe(prompt="in, paint", seed=2, width=512, height=512, mode="inpaint", mask_blur=9, inpainting_fill=0, inpaint_full_res=True, inpaint_full_res_padding=40, inpainting_mask_invert=1, denoising_strength=0.66),
    Recipe(prompt="img2img", seed=2, width=512, height=512, mode="img2img", denoising_strength=0.3),
]


@pytest.mark.parametrize("recipe", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_round_trip_recipe_infotext_recipe(recipe: Recipe):
    text = to_infotext(recipe, model_name="model, name", model_hash="abcdef1234", extra={"Lora hashes": "a: 1, b: 2"})
    back = recipe_from_infotext(text)
    # `mode` is ours and not part of A1111 infotext; everything else must survive.
    assert back.model_copy(update={"mode": recipe.mode}) == recipe
    _, rest = from_infotext(text)
    assert rest["Model"] == "model, name" and rest["Model hash"] == "abcdef1234" and rest["Lora hashes"] == "a: 1, b: 2"


def test_controlnet_units_round_trip_with_control_mode_and_pixel_perfect():
    from localdiffusion.recipe import ControlUnit

    units = [ControlUnit(model="control_v11p_sd15_canny [d14c016b]", module="canny", weight=0.7, processor_res=341,
                         threshold_a=100, threshold_b=200, control_mode="My prompt is more important", pixel_perfect=True),
             ControlUnit(model="control_v11p_sd15_openpose [cab727d4]", control_mode="ControlNet is more important")]
    text = to_infotext(Recipe(prompt="a house", seed=1, width=512, height=512, controls=units), model_name="m", model_hash=None)
    assert ('ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.7, Resize Mode: Crop and Resize, '
            'Processor Res: 341, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, '
            'Pixel Perfect: True, Control Mode: My prompt is more important"') in text
    assert text.split("ControlNet 1: ")[1].startswith('"Module: none') and "Pixel Perfect: False, Control Mode: ControlNet is more important\"" in text
    assert recipe_from_infotext(text).controls == units
    # A1111's own text (the extension writes every field, Hr Option too) reads back the same way.
    a1111 = text.replace("Control Mode: My prompt is more important", "Control Mode: My prompt is more important, Hr Option: Both")
    assert recipe_from_infotext(a1111).controls == units
