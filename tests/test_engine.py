"""The engine on tiny random-weight models: parity with raw diffusers, every mode, seeds, progress, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image, ImageDraw

from localdiffusion.engine.samplers import SAMPLERS
from localdiffusion.errors import BadInput, Cancelled
from localdiffusion.recipe import Outpaint, Recipe

BASE = dict(prompt="a photo of a cat", seed=42, steps=4, width=128, height=128, cfg_scale=7.0, sampler_name="Euler")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and bool((pixels(a) == pixels(b)).all())


@pytest.fixture(scope="module")
def raw_sd1(sd1_folder):
    pipe = StableDiffusionPipeline.from_pretrained(str(sd1_folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def input_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "input.png"
    image = Image.new("RGB", (128, 128), (40, 90, 160))
    ImageDraw.Draw(image).ellipse((30, 30, 100, 100), fill=(230, 200, 40))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def mask_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "mask.png"
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((48, 48, 96, 96), fill=255)
    mask.save(path)
    return path


# Diffusers' samplers that A1111 does not have keep the raw-diffusers contract; A1111's own samplers are
# checked against A1111's sampling in tests/test_engine_a1111.py.
DIFFUSERS = {**BASE, "sampler_name": "DEIS"}


def test_diffusers_sampler_is_bit_identical_to_raw_diffusers(engine, raw_sd1):
    from diffusers import DEISMultistepScheduler

    result = engine.generate(Recipe(**DIFFUSERS, model="tiny-sd1"))
    raw_sd1.scheduler = DEISMultistepScheduler.from_config(raw_sd1.scheduler.config)
    expected = raw_sd1("a photo of a cat", num_inference_steps=4, height=128, width=128, guidance_scale=7.0,
                       generator=torch.Generator("cpu").manual_seed(42)).images[0]
    assert same(result.images[0], expected)


def test_dpmpp_3m_matches_raw_diffusers_with_karras_sigmas(engine, raw_sd1):
    from diffusers import DPMSolverMultistepScheduler

    result = engine.generate(Recipe(**{**BASE, "sampler_name": "DPM++ 3M"}, model="tiny-sd1"))
    original = raw_sd1.scheduler
    raw_sd1.scheduler = DPMSolverMultistepScheduler.from_config(original.config, solver_order=3, use_karras_sigmas=True)
    try:
        expected = raw_sd1("a photo of a cat", num_inference_steps=4, height=128, width=128, guidance_scale=7.0,
                           generator=torch.Generator("cpu").manual_seed(42)).images[0]
    finally:
        raw_sd1.scheduler = original  # the pipeline is shared by this module's tests
    assert same(result.images[0], expected)


def test_prompt_editing_switches_conditioning_mid_run(engine, raw_sd1):
    """[cat:dog:0.5] over 4 steps: as A1111, step indices 0-2 use 'cat' (i <= 2) and index 3 uses 'dog';
    the same as raw diffusers with the embeddings swapped by a step callback."""
    from diffusers import DEISMultistepScheduler

    result = engine.generate(Recipe(**{**DIFFUSERS, "prompt": "a photo of a [cat:dog:0.5]"}, model="tiny-sd1"))
    raw_sd1.scheduler = DEISMultistepScheduler.from_config(raw_sd1.scheduler.config)
    dog, negative = raw_sd1.encode_prompt("a photo of a dog", "cpu", 1, True, "")

    def switch(pipe, i, t, kwargs):
        if i == 2:
            return {"prompt_embeds": torch.cat([negative, dog])}
        return {}

    expected = raw_sd1("a photo of a cat", num_inference_steps=4, height=128, width=128, guidance_scale=7.0,
                       generator=torch.Generator("cpu").manual_seed(42), callback_on_step_end=switch,
                       callback_on_step_end_tensor_inputs=["prompt_embeds"]).images[0]
    assert same(result.images[0], expected)
    plain = engine.generate(Recipe(**DIFFUSERS, model="tiny-sd1"))
    assert not same(result.images[0], plain.images[0])


def test_seed_minus_one_records_the_real_seed_and_reproduces(engine):
    first = engine.generate(Recipe(**{**BASE, "seed": -1}, model="tiny-sd1"))
    seed = first.recipes[0].seed
    assert 0 <= seed < 2**32
    again = engine.generate(first.recipes[0])
    assert same(first.images[0], again.images[0])


def test_batch_and_iterations_give_consecutive_seeds(engine):
    result = engine.generate(Recipe(**{**BASE, "steps": 2, "batch_size": 2, "n_iter": 2}, model="tiny-sd1"))
    assert [r.seed for r in result.recipes] == [42, 43, 44, 45]
    assert len(result.images) == 4 and len(result.infotexts) == 4
    single = engine.generate(result.recipes[1])
    assert np.abs(pixels(single.images[0]) - pixels(result.images[1])).max() <= 2


def test_variation_seed_blends_between_seeds(engine):
    base = engine.generate(Recipe(**BASE, model="tiny-sd1")).images[0]
    none = engine.generate(Recipe(**BASE, subseed=7, subseed_strength=0.0, model="tiny-sd1")).images[0]
    some = engine.generate(Recipe(**BASE, subseed=7, subseed_strength=0.5, model="tiny-sd1"))
    assert same(base, none)
    assert not same(base, some.images[0])
    assert some.recipes[0].subseed == 7 and "Variation seed: 7" in some.infotexts[0]


@pytest.fixture(scope="module")
def sampled(engine):
    """name or (name, schedule) -> (image, every step's latents and prediction finite, first latents, last latents),
    each generated once for the module."""
    done: dict = {}

    def run(sampler: str, schedule: str = "Automatic", steps: int = 3):
        key = (sampler, schedule, steps)
        if key not in done:
            seen = []

            def watch(state, phase, batch):
                finite = bool(torch.isfinite(state.latents).all() and torch.isfinite(state.x0).all())
                seen.append((finite, state.sample.clone(), state.latents.clone(), state.timestep))

            recipe = Recipe(**{**BASE, "steps": steps, "sampler_name": sampler, "scheduler": schedule}, model="tiny-sd1")
            image = engine.generate(recipe, on_step=watch).images[0]
            done[key] = (image, all(f for f, *_ in seen), seen[0][1], seen[-1][2], [float(t) for *_, t in seen])
        return done[key]

    return run


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs(sampled, name):
    """Finite latents at every step, latents that moved away from the noise, an image that is not constant
    (NaNs decode to black), and an image of its own: no sampler quietly falls back to another."""
    image, finite, first, last, _ = sampled(name)
    assert image.size == (128, 128)
    assert finite
    assert (last - first).abs().mean() > 0.1
    assert pixels(image).std() > 10
    twins = [other for other in sorted(SAMPLERS) if other != name and same(image, sampled(other)[0])]
    assert twins == []


@pytest.mark.parametrize("sampler, schedules", [
    # Not Normal, which over a model's discrete sigmas is Euler's Automatic (Uniform), nor Polyexponential, whose
    # default rho of 1 makes it Exponential.
    ("Euler", ["Automatic", "Karras", "Exponential", "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "DDIM", "Beta"]),
    ("DEIS", ["Automatic", "Karras", "Exponential", "SGM Uniform"]),
])
def test_schedule_types_change_the_image(sampled, sampler, schedules):
    """Each schedule type spaces the steps its own way, so every pair gives other timesteps and another image."""
    runs = {schedule: sampled(sampler, schedule, steps=4) for schedule in schedules}
    for i, a in enumerate(schedules):
        for b in schedules[i + 1:]:
            assert runs[a][4] != runs[b][4], (a, b)
            assert not same(runs[a][0], runs[b][0]), (a, b)


def test_automatic_is_the_samplers_own_default_schedule(sampled):
    """A1111's "Automatic" means Karras for DPM++ 2M and Exponential for DPM++ 2M SDE: the same image."""
    assert same(sampled("DPM++ 2M", "Automatic")[0], sampled("DPM++ 2M", "Karras")[0])
    assert same(sampled("DPM++ 2M SDE", "Automatic")[0], sampled("DPM++ 2M SDE", "Exponential")[0])
    assert not same(sampled("DPM++ 2M", "Automatic")[0], sampled("DPM++ 2M", "SGM Uniform")[0])


def test_clip_skip_changes_the_image(engine):
    one = engine.generate(Recipe(**BASE, model="tiny-sd1")).images[0]
    two = engine.generate(Recipe(**BASE, clip_skip=2, model="tiny-sd1"))
    assert not same(one, two.images[0])
    assert "Clip skip: 2" in two.infotexts[0]


def test_img2img_keeps_the_input_at_low_strength(engine, input_image):
    """Measured from the input as the model's VAE gives it back (strength 0): the tiny random VAE alone moves
    every pixel far, so that is the picture a low strength must stay near."""
    img2img = dict(BASE, mode="img2img", init_image=str(input_image), model="tiny-sd1")
    source = engine.generate(Recipe(**img2img, denoising_strength=0.0)).images[0]
    low = engine.generate(Recipe(**img2img, denoising_strength=0.25))
    high = engine.generate(Recipe(**img2img, denoising_strength=1.0))
    distance = lambda im: np.abs(pixels(im) - pixels(source)).mean()
    assert distance(low.images[0]) < distance(high.images[0])
    assert low.recipes[0].width == 128 and "Denoising strength: 0.25" in low.infotexts[0]


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sd1-inpaint"])
@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_inpaint_changes_only_the_masked_area(engine, input_image, mask_image, model, fill):
    recipe = Recipe(**BASE, mode="inpaint", init_image=str(input_image), mask=str(mask_image), mask_blur=0,
                    inpainting_fill=fill, denoising_strength=1.0, model=model)
    result = engine.generate(recipe).images[0]
    source, mask = pixels(Image.open(input_image)), np.asarray(Image.open(mask_image)) > 0
    diff = np.abs(pixels(result) - source).sum(axis=2)
    assert (diff[~mask] == 0).all()
    assert diff[mask].mean() > 0


def test_inpaint_only_masked_pastes_back_with_a_smooth_seam(engine, input_image, mask_image):
    recipe = Recipe(**{**BASE, "width": 64, "height": 64}, mode="inpaint", init_image=str(input_image), mask=str(mask_image),
                    mask_blur=4, inpaint_full_res=True, inpaint_full_res_padding=8, model="tiny-sd1")
    result = engine.generate(recipe)
    image = result.images[0]
    assert image.size == (128, 128)
    source = pixels(Image.open(input_image))
    assert (np.abs(pixels(image) - source)[:30, :, :] == 0).all()  # far from the mask: untouched


def test_outpaint_extends_the_canvas(engine, input_image):
    recipe = Recipe(**BASE, mode="outpaint", init_image=str(input_image), outpaint=Outpaint(right=64, down=20),
                    denoising_strength=1.0, inpainting_fill=2, model="tiny-sd1")
    result = engine.generate(recipe)
    image = result.images[0]
    assert image.size == (192, 152)  # 20 rounded up to 24 to keep the canvas a multiple of 8
    assert result.recipes[0].outpaint.down == 24
    inner = pixels(image)[:96, :96]  # away from the feathered seam
    assert (inner == pixels(Image.open(input_image))[:96, :96]).all()


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_runs_a_second_pass(engine, upscaler):
    recipe = Recipe(**{**BASE, "steps": 2}, enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler, hr_second_pass_steps=2,
                    denoising_strength=0.5, model="tiny-sd1")
    result = engine.generate(recipe)
    assert result.images[0].size == (192, 192)
    assert "Hires upscale: 1.5" in result.infotexts[0]


def test_sd2_v_prediction_and_sdxl_generate(engine):
    sd2 = engine.generate(Recipe(**{**BASE, "steps": 2}, model="tiny-sd2-v"))
    sdxl = engine.generate(Recipe(**{**BASE, "steps": 2, "negative_prompt": "blurry"}, model="tiny-sdxl"))
    assert sd2.images[0].size == sdxl.images[0].size == (128, 128)


def test_sdxl_is_bit_identical_to_raw_diffusers(engine, sdxl_folder):
    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    from diffusers import DEISMultistepScheduler

    result = engine.generate(Recipe(**DIFFUSERS, model="tiny-sdxl"))
    pipe.scheduler = DEISMultistepScheduler.from_config(pipe.scheduler.config)
    expected = pipe("a photo of a cat", num_inference_steps=4, height=128, width=128, guidance_scale=7.0,
                    generator=torch.Generator("cpu").manual_seed(42)).images[0]
    assert same(result.images[0], expected)


def test_sdxl_refiner_takes_over_at_the_switch(engine):
    steps = []
    plain = engine.generate(Recipe(**BASE, model="tiny-sdxl"))
    refined = engine.generate(Recipe(**BASE, model="tiny-sdxl", refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5),
                              on_progress=lambda p: steps.append((p.step, p.total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert not same(plain.images[0], refined.images[0])
    assert "Refiner: tiny-sdxl-refiner" in refined.infotexts[0]
    with pytest.raises(BadInput, match="must be an SDXL model"):
        engine.generate(Recipe(**BASE, model="tiny-sdxl", refiner_checkpoint="tiny-sd1"))


def test_native_size_comes_from_the_family(engine, model_home):
    prepared = engine.prepare(Recipe(prompt="x", model="tiny-sdxl"))
    assert (prepared.recipe.width, prepared.recipe.height) == (1024, 1024)


def test_progress_reports_every_step_with_a_preview(engine):
    events = []
    engine.generate(Recipe(**BASE, model="tiny-sd1"), on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert all(e.total == 4 and e.preview is not None for e in events)
    assert events[0].preview.size == (16, 16)


def test_cancel_stops_within_one_step(engine):
    steps = []

    def on_progress(p):
        steps.append(p.step)

    with pytest.raises(Cancelled):
        engine.generate(Recipe(**{**BASE, "steps": 10}, model="tiny-sd1"), on_progress=on_progress,
                        cancel=lambda: len(steps) >= 2)
    assert steps == [1, 2]


@pytest.mark.parametrize("fields, message", [
    (dict(width=100), "not a multiple of 8"),
    (dict(width=4096), "above the limit"),
    (dict(sampler_name="Euler b"), "Unknown sampler 'Euler b'"),
    (dict(sampler_name="DEIS", scheduler="Polyexponential"), "cannot follow the 'Polyexponential' schedule"),
    (dict(scheduler="Karas"), "Unknown schedule type 'Karas' (did you mean 'Karras'?)"),
    (dict(model="tiny-sd3"), "tiny-sd1"),
    (dict(mode="inpaint", init_image="missing.png"), "does not exist"),
    (dict(controls=[{"model": "any-controlnet"}]), "ControlNet unit 0 has no image"),
])
def test_bad_input_gets_one_clear_sentence(engine, fields, message):
    from localdiffusion.errors import LocalDiffusionError

    with pytest.raises(LocalDiffusionError) as e:
        engine.generate(Recipe(**{**BASE, **fields}))
    assert message in str(e.value)
    assert str(e.value).count("\n") == 0


def test_inpaint_needs_a_matching_mask(engine, input_image, tmp_path):
    with pytest.raises(BadInput, match="needs a mask"):
        engine.generate(Recipe(**BASE, mode="inpaint", init_image=str(input_image), model="tiny-sd1"))
    small = tmp_path / "small.png"
    Image.new("L", (64, 64), 255).save(small)
    with pytest.raises(BadInput, match="must be the same size"):
        engine.generate(Recipe(**BASE, mode="inpaint", init_image=str(input_image), mask=str(small), model="tiny-sd1"))


def test_pipeline_is_cached_between_modes(engine, input_image):
    engine.generate(Recipe(**BASE, model="tiny-sd1"))
    loads = engine.cache.loads
    engine.generate(Recipe(**BASE, mode="img2img", init_image=str(input_image), model="tiny-sd1"))
    assert engine.cache.loads == loads


def test_a_lora_tag_never_reaches_the_disk_by_path(engine):
    with pytest.raises(BadInput, match="looks like a path"):
        engine.generate(Recipe(**{**BASE, "prompt": "a cat <lora:/etc/passwd:1>"}, model="tiny-sd1"))


def test_step_observers_see_predictions_and_the_pass(engine):
    seen = []
    engine.generate(Recipe(**{**BASE, "steps": 2}, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2,
                           denoising_strength=1.0, model="tiny-sd1"),
                    on_step=lambda state, phase, batch: seen.append((phase, state.index, state.noise_cond is not None,
                                                                     tuple(state.x0.shape))))
    assert [s[:2] for s in seen] == [("sample", 0), ("sample", 1), ("hires", 0), ("hires", 1)]
    assert all(s[2] for s in seen) and seen[0][3] == (1, 4, 16, 16) and seen[-1][3] == (1, 4, 24, 24)


@pytest.mark.parametrize("fill", ["edge", "noise", "blur"])
def test_outpaint_fill_modes_fill_only_the_new_area(fill):
    from localdiffusion.engine.images import extend_canvas

    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "RGB")
    canvas = extend_canvas(source, Outpaint(right=16, up=8, fill=fill), overlap=4)
    array = pixels(canvas.image)
    assert canvas.image.size == (48, 40)
    assert (array[8:, :32] == pixels(source)).all()  # the original is untouched
    new = array[:8].reshape(-1, 3)
    stretched = pixels(extend_canvas(source, Outpaint(right=16, up=8), overlap=4).image)[:8].reshape(-1, 3)
    assert (new == stretched).all() == (fill == "edge")
    if fill == "noise":
        assert new.std() > 20  # noise, not a smear of the edge


# --- the one validator: Engine.prepare ------------------------------------------------------------


def _files(root) -> set:
    return {p for p in root.rglob("*") if p.is_file() and p.suffix not in (".sqlite", ".sqlite-wal", ".sqlite-shm", ".journal")}


def test_prepare_is_pure_it_loads_nothing_and_writes_nothing(tmp_path, sd1_folder, input_image):
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    engine = Engine(ModelLibrary(home, Database(home.db_path)))
    before = _files(home.root)
    prepared = engine.prepare(Recipe(**{**BASE, "width": None, "height": None}, model="tiny-sd1", mode="img2img",
                                     init_image=str(input_image)))
    assert (prepared.recipe.width, prepared.recipe.height) == (128, 128) and prepared.checkpoint.name == "tiny-sd1"
    assert prepared.plan.inputs is not None and prepared.plan.inputs.image.size == (128, 128)
    assert list(engine.cache.keys()) == [] and _files(home.root) == before


@pytest.mark.parametrize("fields, error, field, words", [
    ({"prompt": "a cat <lora:no-such-lora:0.8>"}, "ModelNotFound", "prompt", "no-such-lora"),
    ({"negative_prompt": "ugly <lora:no-such-lora:1>"}, "ModelNotFound", "negative_prompt", "no-such-lora"),
    ({"negative_prompt": "<lora:../../etc/passwd:1>"}, "BadInput", "negative_prompt", "looks like a path"),
])
def test_prepare_refuses_loras_that_are_not_in_the_library(engine, fields, error, field, words):
    from localdiffusion.errors import LocalDiffusionError

    with pytest.raises(LocalDiffusionError) as e:
        engine.prepare(Recipe(**{**BASE, **fields}, model="tiny-sd1"))
    assert type(e.value).__name__ == error and e.value.field == field and words in e.value.message


def test_prepare_refuses_an_outpaint_canvas_above_max_side_before_making_it(engine, input_image, monkeypatch):
    from localdiffusion.engine import images as im

    made = []
    monkeypatch.setattr(im, "extend_canvas", lambda *a, **k: made.append(a))
    recipe = Recipe(**{**BASE, "width": 64, "height": 64}, model="tiny-sd1", mode="outpaint", init_image=str(input_image),
                    inpaint_full_res=True, outpaint=Outpaint(left=engine.settings.max_side))
    with pytest.raises(BadInput, match="makes a canvas") as e:
        engine.prepare(recipe)
    assert e.value.field == "outpaint" and made == []
