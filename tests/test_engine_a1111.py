"""The engine's images with A1111's samplers against A1111's sampling rebuilt by hand over the same networks.

The oracle is the `k-diffusion` package (0.1.1.post1, as A1111 v1.10.1 pins; see test_k_sampling_oracle.py
for how it is imported without its training dependencies), wired as A1111 wires it: `CompVisDenoiser` over
the model's UNet with the CompVis alphas, the CFG batch [prompt; negative], each image's noise from a CPU
generator seeded with its seed, the first noise times sigmas[0], and the decoded image converted to 8 bits
by truncation. The engine loads the model through the same code users use, as a diffusers folder (its
scheduler config says "leading", as real SD1.5 folders do, or "linspace") and as an A1111 single file:
every layout must give the oracle's image bit for bit in fp32.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image
import pytest
import torch
from diffusers import StableDiffusionPipeline

from localdiffusion.engine import Engine
from localdiffusion.engine.k_sampling import schedules
from localdiffusion.engine.k_sampling.table import K_SAMPLERS
from localdiffusion.infotext import recipe_from_infotext
from localdiffusion.models.library import ModelLibrary
from localdiffusion.models.single_file import save_single_file
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database
from localdiffusion.store.home import Home
from test_k_sampling_oracle import LDMModel, OracleCFG, _k_diffusion, oracle_sigmas

pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning", "ignore:To copy construct:UserWarning")

PROMPT, NEGATIVE, SEED, STEPS, SIZE, CFG = "a photo of a cat", "blurry", 1234, 4, 64, 7.0
SIGMA_SAMPLERS = [s.name for s in K_SAMPLERS.values() if s.kind == "sigmas" and s.name not in ("Restart", "LCM")]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, sd1_folder):
    """One home with the tiny SD1 model three ways: 'leading' folder, 'linspace' folder, single file."""
    home = Home(tmp_path_factory.mktemp("a1111-home")).ensure()
    models = home.model_dir("checkpoint")
    (models / "leading").symlink_to(sd1_folder, target_is_directory=True)
    linspace = models / "linspace"
    shutil.copytree(sd1_folder, linspace, symlinks=True)
    config_path = linspace / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    assert config["timestep_spacing"] == "leading"
    config.update(timestep_spacing="linspace", steps_offset=0)
    config_path.write_text(json.dumps(config))
    pipe = StableDiffusionPipeline.from_pretrained(str(sd1_folder), local_files_only=True)
    save_single_file(pipe, models / "single.safetensors")
    return Engine(ModelLibrary(home, Database(home.db_path))), pipe


@pytest.fixture()
def kd(monkeypatch):
    import types

    sampling, external = _k_diffusion()
    monkeypatch.setattr(sampling, "to_d", lambda x, sigma, denoised: (x - denoised) / sigma)
    return types.SimpleNamespace(sampling=sampling, external=external, monkeypatch=monkeypatch)


class SeedNoise:
    """A1111's noise with the CPU source for one image: its generator, reseeded with seed + ENSD after the first draw."""

    def __init__(self, seed, shape, ensd=0):
        self.seed, self.shape, self.ensd = seed, shape, ensd
        self.gen = torch.Generator().manual_seed(seed)

    def first(self):
        out = torch.randn(self.shape, generator=self.gen)[None]
        if self.ensd:
            self.gen = torch.Generator().manual_seed(self.seed + self.ensd)
        return out

    def __getattr__(self, item):
        return getattr(torch, item)

    def randn_like(self, x):
        return torch.randn(self.shape, generator=self.gen)[None]


def _conditioning(pipe):
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    return cond, uncond


def _oracle_image(kd, pipe, name, schedule, ensd=0, eta=1.0):
    """A1111's txt2img for one image over the k-diffusion package, decoded and truncated to 8 bits."""
    sampler = K_SAMPLERS[name]
    ldm = LDMModel(lambda x, t, encoder_hidden_states: pipe.unet(x, t, encoder_hidden_states=encoder_hidden_states).sample)
    wrap = kd.external.CompVisDenoiser(ldm)
    noise = SeedNoise(SEED, (4, SIZE // 8, SIZE // 8), ensd)
    kd.monkeypatch.setattr(kd.sampling, "torch", noise)
    m_min, m_max = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    sigmas = oracle_sigmas(kd, wrap, sampler, STEPS, schedule)
    first = noise.first()
    x = first * sigmas[0]
    func = sampler.function.__name__
    kwargs = {}
    if func in ("sample_dpm_fast", "sample_dpm_adaptive"):
        kwargs.update(sigma_min=m_min, sigma_max=m_max, eta=eta)
        if func == "sample_dpm_fast":
            kwargs["n"] = STEPS
    else:
        kwargs["sigmas"] = sigmas
    if sampler.uses_ensd or sampler.brownian_noise:
        kwargs["eta"] = eta
    if sampler.brownian_noise:
        kwargs["noise_sampler"] = kd.sampling.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[SEED])
    if sampler.solver_type:
        kwargs["solver_type"] = sampler.solver_type
    cond, uncond = _conditioning(pipe)
    with torch.no_grad():
        latents = getattr(kd.sampling, func)(OracleCFG(wrap), x, extra_args={"cond": cond, "uncond": uncond, "cond_scale": CFG},
                                             disable=True, **kwargs)
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    x = torch.clamp((decoded + 1.0) / 2.0, min=0.0, max=1.0)
    return (255.0 * x[0].permute(1, 2, 0).numpy()).astype(np.uint8)


def _ours(engine, model, name, schedule, **fields):
    recipe = Recipe(prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED, steps=STEPS, width=SIZE, height=SIZE, cfg_scale=CFG,
                    sampler_name=name, scheduler=schedule, model=model, **fields)
    result = engine.generate(recipe)
    return np.asarray(result.images[0]), result


@pytest.mark.parametrize("name", SIGMA_SAMPLERS)
def test_every_sampler_and_schedule_type_gives_a1111s_image(kd, layouts, name):
    engine, pipe = layouts
    for schedule in schedules.SCHEDULE_TYPES:
        expected = _oracle_image(kd, pipe, name, schedule)
        got, _ = _ours(engine, "leading", name, schedule)
        assert np.array_equal(got, expected), f"{name}, {schedule}: max diff {np.abs(got.astype(int) - expected).max()}"


@pytest.mark.parametrize("name", [s.name for s in K_SAMPLERS.values()])
def test_every_layout_gives_the_same_image(layouts, name):
    """Whatever the folder's scheduler config says, and as a single file: A1111's sigmas come from the betas."""
    engine, _ = layouts
    images = [_ours(engine, model, name, "Automatic")[0] for model in ("leading", "linspace", "single.safetensors")]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])


def test_ensd_and_eta_give_a1111s_image_and_are_written(kd, layouts):
    engine, pipe = layouts
    got, result = _ours(engine, "leading", "Euler a", "Automatic", eta_noise_seed_delta=31337, eta=0.6)
    assert np.array_equal(got, _oracle_image(kd, pipe, "Euler a", "Automatic", ensd=31337, eta=0.6))
    assert not np.array_equal(got, _ours(engine, "leading", "Euler a", "Automatic", eta=0.6)[0])
    assert "ENSD: 31337" in result.infotexts[0] and "Eta: 0.6" in result.infotexts[0]
    replayed = recipe_from_infotext(result.infotexts[0])
    assert (replayed.eta_noise_seed_delta, replayed.eta) == (31337, 0.6)


def test_ensd_is_not_written_for_samplers_that_ignore_it(layouts):
    engine, _ = layouts
    _, result = _ours(engine, "leading", "Euler", "Automatic", eta_noise_seed_delta=31337)
    assert "ENSD" not in result.infotexts[0]


def test_sgm_noise_multiplier_scales_the_first_noise(layouts):
    engine, _ = layouts
    plain, _ = _ours(engine, "leading", "DPM++ 2M", "Automatic")
    sgm, result = _ours(engine, "leading", "DPM++ 2M", "Automatic", sgm_noise_multiplier=True)
    assert not np.array_equal(plain, sgm)
    assert "SGM noise multiplier: True" in result.infotexts[0]
    assert recipe_from_infotext(result.infotexts[0]).sgm_noise_multiplier


def test_long_prompts_run_apart_unless_padded(layouts):
    """Over 75 tokens A1111 runs prompt and negative prompt as two network calls; with "Pad conds" it pads
    the shorter to one batch with empty-prompt chunks, which changes what the negative prompt's tokens attend to."""
    engine, _ = layouts
    long_prompt = ", ".join(["a red cat"] * 30)
    apart = engine.generate(Recipe(prompt=long_prompt, negative_prompt=NEGATIVE, seed=SEED, steps=STEPS, width=SIZE, height=SIZE, sampler_name="Euler",
                                   model="leading"))
    padded = engine.generate(Recipe(prompt=long_prompt, negative_prompt=NEGATIVE, seed=SEED, steps=STEPS, width=SIZE, height=SIZE, sampler_name="Euler",
                                    model="leading", pad_cond_uncond=True))
    assert not np.array_equal(np.asarray(apart.images[0]), np.asarray(padded.images[0]))
    assert "Pad conds: True" in padded.infotexts[0] and "Pad conds" not in apart.infotexts[0]


def test_cfg_below_one_still_blends_the_negative_prompt(layouts):
    engine, _ = layouts
    low = engine.generate(Recipe(prompt=PROMPT, negative_prompt="red", seed=SEED, steps=STEPS, width=SIZE, height=SIZE,
                                 cfg_scale=0.5, sampler_name="Euler", model="leading"))
    other = engine.generate(Recipe(prompt=PROMPT, negative_prompt="green", seed=SEED, steps=STEPS, width=SIZE, height=SIZE,
                                   cfg_scale=0.5, sampler_name="Euler", model="leading"))
    assert not np.array_equal(np.asarray(low.images[0]), np.asarray(other.images[0]))


def test_cfg_one_evaluates_the_prompt_alone_and_the_negative_prompt_changes_nothing(layouts):
    engine, _ = layouts
    batches = []
    engine.generate(Recipe(prompt=PROMPT, steps=1, width=SIZE, height=SIZE, model="leading"))  # loaded, as the runs below find it
    unet = engine.pipeline(engine.checkpoint("leading")).unet
    hook = unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        images = [np.asarray(engine.generate(Recipe(prompt=PROMPT, negative_prompt=negative, seed=SEED, steps=STEPS,
                                                    width=SIZE, height=SIZE, cfg_scale=1.0, sampler_name="Euler",
                                                    model="leading")).images[0]) for negative in ("red", "green")]
    finally:
        hook.remove()
    assert set(batches) == {1}  # one row per image: the prompt's, no negative half
    assert np.array_equal(images[0], images[1])


def test_the_nv_source_is_written_and_read_and_a1111_default_means_it(layouts):
    engine, _ = layouts
    cpu, _ = _ours(engine, "leading", "Euler a", "Automatic")
    nv, result = _ours(engine, "leading", "Euler a", "Automatic", rng="nv")
    assert not np.array_equal(cpu, nv)
    assert "RNG: NV" in result.infotexts[0]
    assert recipe_from_infotext(result.infotexts[0]).rng == "nv"
    a1111 = "a cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512"
    assert recipe_from_infotext(a1111).rng == "nv"  # A1111 leaves out its default source, GPU


@pytest.mark.parametrize("name", [s.name for s in K_SAMPLERS.values() if s.kind == "timesteps"])
def test_timestep_samplers_in_the_engine_are_the_core_wired_by_hand(layouts, name):
    """DDIM, DDIM CFG++, PLMS and UniPC have no package oracle (their own tests check them against the papers
    and diffusers); here the engine must give what the core gives when wired by hand over the same UNet."""
    from localdiffusion.engine.k_sampling.denoiser import ldm_alphas_cumprod, unet_network
    from localdiffusion.engine.k_sampling.rng import ImageRNG
    from localdiffusion.engine.k_sampling.run import denoiser_for, sample
    from localdiffusion.engine.k_sampling.timesteps import TimestepCFG

    engine, pipe = layouts
    sampler = K_SAMPLERS[name]
    den = denoiser_for(sampler, unet_network(pipe.unet), ldm_alphas_cumprod(dtype=torch.float64))
    cond, uncond = _conditioning(pipe)
    extra = {"cond": {"encoder_hidden_states": cond}, "uncond": {"encoder_hidden_states": uncond}, "cond_scale": CFG}
    with torch.no_grad():
        latents = sample(sampler, TimestepCFG(den), den, ImageRNG((4, SIZE // 8, SIZE // 8), [SEED]), [SEED], STEPS, extra_args=extra)
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    expected = (255.0 * torch.clamp((decoded + 1.0) / 2.0, 0.0, 1.0)[0].permute(1, 2, 0).numpy()).astype(np.uint8)
    got, result = _ours(engine, "single.safetensors", name, "Automatic")
    assert np.array_equal(got, expected)
    assert f"Sampler: {name}," in result.infotexts[0]


def _a1111_png(path, image, infotext):
    """A PNG as A1111 saves it: the picture and its infotext in a `parameters` text chunk, nothing of ours."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    image.save(path, pnginfo=info)
    return path


def test_an_a1111_png_replays_to_its_own_picture(layouts, tmp_path):
    """The infotext alone (A1111's PNG) rebuilds a recipe that gives the very same picture, and nothing is
    reported as differing."""
    from localdiffusion.engine.replay import recipe_for_replay, replay_differences
    from localdiffusion.metadata import read_image_metadata

    engine, _ = layouts
    first = engine.generate(Recipe(prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED, steps=STEPS, width=SIZE, height=SIZE,
                                   sampler_name="DPM++ 2S a", scheduler="Beta", eta_noise_seed_delta=31337, rng="nv",
                                   model="single.safetensors"))
    png = _a1111_png(tmp_path / "a1111.png", first.images[0], first.infotexts[0])
    recipe = recipe_for_replay(png, engine.library)
    again = engine.generate(recipe)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))
    assert replay_differences(read_image_metadata(png), recipe, engine.library, torch.device("cpu")) == []


def test_replay_says_in_one_sentence_each_what_will_differ(layouts, tmp_path):
    from localdiffusion.engine.replay import replay_differences
    from localdiffusion.metadata import read_image_metadata

    engine, _ = layouts
    infotext = ("a cat <lora:missing_style:0.8>\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, "
                "Size: 512x512, Model hash: 0123456789, Model: someone_elses_model, RNG: GPU, NGMS: 2, "
                "ADetailer model: face_yolov8n.pt, Version: v1.10.1")
    png = _a1111_png(tmp_path / "theirs.png", Image.new("RGB", (64, 64)), infotext)
    meta = read_image_metadata(png)
    reasons = replay_differences(meta, meta.to_recipe(strict=False), engine.library, torch.device("cpu"))
    text = " | ".join(reasons)
    assert "'someone_elses_model' (hash 0123456789) is not here" in text
    assert "LoRA 'missing_style'" in text
    assert "RNG: GPU" in text and "NV" in text
    assert "'NGMS' is not applied" in text
    assert "ADetailer extension" in text
    assert all(reason.count(". ") == 0 and "\n" not in reason for reason in reasons)
