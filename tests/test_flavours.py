"""SD3/3.5 and FLUX on tiny random-weight models: detection, offline loading from diffusers folders and from
ComfyUI's layout (the transformer alone, its text encoders and VAE apart), and bit-parity with raw diffusers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline

from localdiffusion.recipe import Recipe

BASE = dict(prompt="a photo of a cat", seed=42, steps=4, width=128, height=128)


def same(a, b) -> bool:
    return a.size == b.size and bool((np.asarray(a.convert("RGB")) == np.asarray(b.convert("RGB"))).all())


def raw(cls, folder):
    pipe = cls.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def raw_sd3(sd3_folder):
    pipe = raw(StableDiffusion3Pipeline, sd3_folder)
    return pipe("a photo of a cat", num_inference_steps=4, height=128, width=128, guidance_scale=5.0,
                generator=torch.Generator("cpu").manual_seed(42)).images[0]


@pytest.fixture(scope="module")
def raw_flux(flux_folder):
    pipe = raw(FluxPipeline, flux_folder)
    return pipe("a photo of a cat", num_inference_steps=4, height=128, width=128, guidance_scale=3.5,
                generator=torch.Generator("cpu").manual_seed(42)).images[0]


@pytest.mark.parametrize("model", ["tiny-sd3", "comfy-sd3"])
def test_sd3_is_bit_identical_to_raw_diffusers(flow_engine, raw_sd3, model):
    result = flow_engine.generate(Recipe(**BASE, cfg_scale=5.0, model=model))
    assert same(result.images[0], raw_sd3)
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 5," in result.infotexts[0]


@pytest.mark.parametrize("model", ["tiny-flux", "comfy-flux"])
def test_flux_is_bit_identical_to_raw_diffusers(flow_engine, raw_flux, model):
    result = flow_engine.generate(Recipe(**BASE, model=model))
    assert same(result.images[0], raw_flux)
    assert "CFG scale: 1, Distilled CFG Scale: 3.5," in result.infotexts[0]


# --- detection of the layouts people download (shapes only: full-size tensors are never made) ---------------

def _flux_original(prefix: str = "", guidance: bool = True) -> dict[str, tuple[int, ...]]:
    shapes = {prefix + "img_in.weight": (3072, 64), prefix + "txt_in.weight": (3072, 4096),
              prefix + "vector_in.in_layer.weight": (3072, 768)}
    for i in range(19):
        shapes[prefix + f"double_blocks.{i}.img_attn.norm.query_norm.scale"] = (128,)
        shapes[prefix + f"double_blocks.{i}.img_attn.norm.key_norm.scale"] = (128,)
    for i in range(38):
        shapes[prefix + f"single_blocks.{i}.linear1.weight"] = (21504, 3072)
    if guidance:
        shapes[prefix + "guidance_in.in_layer.weight"] = (3072, 256)
    return shapes


def _sd35_large_original() -> dict[str, tuple[int, ...]]:
    shapes = {"x_embedder.proj.weight": (2432, 16, 2, 2), "context_embedder.weight": (2432, 4096),
              "y_embedder.mlp.0.weight": (2432, 2048), "pos_embed": (1, 36864, 2432), "final_layer.linear.weight": (64, 2432)}
    for i in range(38):
        shapes[f"joint_blocks.{i}.context_block.adaLN_modulation.1.bias"] = (9728,)
        shapes[f"joint_blocks.{i}.x_block.attn.ln_q.weight"] = (64,)
    return shapes


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_flux_original_layout_is_detected_and_reads_as_the_shipped_config(tmp_path, prefix):
    from localdiffusion.models.flow import family_configs, infer_transformer
    from localdiffusion.models.keys import flow_transformer

    shapes = _flux_original(prefix)
    assert flow_transformer(shapes) == ("flux", "original", prefix)
    config = family_configs("flux")["transformer"]
    assert infer_transformer(shapes, "flux", "original", prefix, config) == config  # FLUX.1 dev
    schnell = infer_transformer(_flux_original(prefix, guidance=False), "flux", "original", prefix, config)
    assert schnell["guidance_embeds"] is False


def test_sd35_large_original_layout_reads_as_the_shipped_config():
    from localdiffusion.models.flow import family_configs, infer_transformer
    from localdiffusion.models.keys import flow_transformer

    shapes = _sd35_large_original()
    assert flow_transformer(shapes) == ("sd3", "original", "")
    config = family_configs("sd3")["transformer"]
    assert infer_transformer(shapes, "sd3", "original", "", config) == config


def test_the_library_sorts_comfyui_folders_into_kinds(flow_engine):
    library = flow_engine.library
    kinds = {m.name: (m.kind, m.family) for m in library.scan()}
    assert kinds["tiny-sd3"] == ("checkpoint", "sd3") and kinds["tiny-flux"] == ("checkpoint", "flux")
    assert kinds["comfy-flux"] == ("checkpoint", "flux") and kinds["comfy-sd3"] == ("checkpoint", "sd3")
    assert kinds["comfy-sd3_clip_g"] == ("text-encoder", "clip") and kinds["comfy-flux_t5xxl"] == ("text-encoder", "t5")
    assert kinds["tiny-flux-lora"] == ("lora", "flux") and kinds["tiny-flux-kohya"] == ("lora", "flux")
    assert kinds["tiny-sd3-lora"] == ("lora", "sd3")


# --- missing parts: one sentence naming the part and its folder ----------------------------------------------

def test_a_missing_text_encoder_or_tokenizer_is_named_with_its_folder(tmp_path, sd3_folder, flux_folder):
    import shutil

    from factories import build_comfy_layout

    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.errors import ModelNotFound
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    files = build_comfy_layout(flux_folder, tmp_path / "comfy", "flux1")
    shutil.move(files["diffusion_models"], home.model_dir("checkpoint") / "flux1.safetensors")
    engine = Engine(ModelLibrary(home, Database(home.db_path)), EngineOptions(dtype="float32"))
    with pytest.raises(ModelNotFound) as missing:
        engine.prepare(Recipe(**BASE, model="flux1"))
    assert str(home.model_dir("text-encoder")) in missing.value.message and "T5-XXL (t5xxl)" in missing.value.message
    for role in ("t5xxl", "clip_l"):
        shutil.copy(files[role], home.model_dir("text-encoder") / files[role].name)
    shutil.copy(files["vae"], home.model_dir("vae") / "ae.safetensors")
    with pytest.raises(ModelNotFound) as tokenizer:
        engine.prepare(Recipe(**BASE, model="flux1"))
    assert "t5_tokenizer" in tokenizer.value.message and str(home.model_dir("text-encoder")) in tokenizer.value.message
    shutil.copytree(tmp_path / "comfy" / "text_encoders" / "t5_tokenizer", home.model_dir("text-encoder") / "t5_tokenizer")
    prepared = engine.prepare(Recipe(**BASE, model="flux1"))
    assert prepared.parts.text["t5xxl"].name == "flux1_t5xxl" and prepared.parts.vae.name == "ae"


# --- samplers, guidance, prompts -------------------------------------------------------------------------------

def test_flux_defaults_and_refusals(flow_engine):
    from localdiffusion.errors import BadInput

    recipe = flow_engine.prepare(Recipe(**BASE, model="tiny-flux")).recipe
    assert (recipe.sampler_name, recipe.scheduler, recipe.cfg_scale, recipe.distilled_cfg_scale) == ("Euler", "Simple", 1.0, 3.5)
    with pytest.raises(BadInput) as sampler:
        flow_engine.prepare(Recipe(**BASE, model="tiny-flux", sampler_name="DPM++ 2M"))
    assert sampler.value.field == "sampler_name" and "'DPM++ 2M'" in sampler.value.message
    with pytest.raises(BadInput) as size:
        flow_engine.prepare(Recipe(**{**BASE, "width": 136}, model="tiny-flux"))
    assert size.value.field == "width" and "multiple of 16" in size.value.message
    with pytest.raises(BadInput) as sd3_size:  # SD 3.5 patches the latent the same way
        flow_engine.prepare(Recipe(**{**BASE, "width": 72}, model="tiny-sd3"))
    assert sd3_size.value.field == "width" and "SD 3.5 models need a width" in sd3_size.value.message
    with pytest.raises(BadInput) as mode:
        flow_engine.prepare(Recipe(**BASE, model="tiny-sd3", enable_hr=True))
    assert mode.value.field == "enable_hr"
    with pytest.raises(BadInput) as inpaint:
        flow_engine.prepare(Recipe(**BASE, model="tiny-flux", mode="inpaint", init_image="in.png", mask="mask.png"))
    assert inpaint.value.field == "mode" and "txt2img and img2img" in inpaint.value.message
    sd3 = flow_engine.prepare(Recipe(**BASE, model="tiny-sd3", distilled_cfg_scale=4.0)).recipe
    assert sd3.distilled_cfg_scale is None and sd3.cfg_scale == 7.0


def test_other_families_neither_use_nor_record_distilled_cfg(engine):
    result = engine.generate(Recipe(**BASE, model="tiny-sd1", sampler_name="DEIS", distilled_cfg_scale=3.5))
    assert result.recipes[0].distilled_cfg_scale is None and "Distilled" not in result.infotexts[0]


def test_distilled_cfg_and_beta_schedule_change_the_image_and_reproduce(flow_engine, raw_flux):
    base = flow_engine.generate(Recipe(**BASE, model="tiny-flux")).images[0]
    assert same(base, raw_flux)
    assert not same(flow_engine.generate(Recipe(**BASE, model="tiny-flux", distilled_cfg_scale=6.0)).images[0], base)
    beta = flow_engine.generate(Recipe(**BASE, model="tiny-flux", scheduler="Beta"))
    assert not same(beta.images[0], base) and "Schedule type: Beta" in beta.infotexts[0]


def test_flux_true_cfg_matches_diffusers_true_cfg(flow_engine, flux_folder):
    pipe = raw(FluxPipeline, flux_folder)
    expected = pipe("a photo of a cat", negative_prompt="blurry", true_cfg_scale=3.0, num_inference_steps=4, height=128,
                    width=128, guidance_scale=3.5, generator=torch.Generator("cpu").manual_seed(42)).images[0]
    result = flow_engine.generate(Recipe(**BASE, negative_prompt="blurry", cfg_scale=3.0, model="tiny-flux"))
    assert same(result.images[0], expected)


def test_weights_reach_clip_and_t5_reads_the_plain_text(flow_engine):
    plain = flow_engine.generate(Recipe(**BASE, cfg_scale=5.0, model="tiny-sd3")).images[0]
    weighted = flow_engine.generate(Recipe(**{**BASE, "prompt": "a photo of a (cat:1.5)"}, cfg_scale=5.0, model="tiny-sd3"))
    assert not same(weighted.images[0], plain)
    encoder = flow_engine._encoder_for(flow_engine.pipeline(flow_engine.checkpoint("tiny-sd3")), 1, False)
    assert encoder.t5_ids("a photo of a (cat:1.5) BREAK [red]") == encoder.t5_ids("a photo of a cat red")


def test_forge_infotext_reads_back_and_modules_are_named(flow_engine):
    from localdiffusion.infotext import recipe_from_infotext

    result = flow_engine.generate(Recipe(**BASE, model="comfy-flux"))
    text = result.infotexts[0]
    assert "Module 1: comfy-flux_ae, Module 2: comfy-flux_clip_l, Module 3: comfy-flux_t5xxl" in text
    back = recipe_from_infotext(text)
    assert (back.sampler_name, back.scheduler, back.cfg_scale, back.distilled_cfg_scale) == ("Euler", "Simple", 1.0, 3.5)
    forge = ("a cat\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 1, "
             "Size: 896x1152, Model hash: abc, Model: flux1-dev-bnb-nf4-v2, Version: f2.0.1v1.10.1, Module 1: ae, "
             "Module 2: clip_l, Module 3: t5xxl_fp16")
    assert recipe_from_infotext(forge).distilled_cfg_scale == 3.5


def test_anatomy_says_what_each_encoder_receives(flow_engine):
    from localdiffusion.explain.anatomy import prompt_anatomy

    pipe = flow_engine.pipeline(flow_engine.checkpoint("tiny-flux"))
    anatomy = prompt_anatomy("a photo of a (cat:1.4)", pipe)
    names = [(e.name, e.token_limit) for e in anatomy.encoders]
    assert names == [("CLIP-L", 75), ("T5-XXL", 512)]
    assert "plain text" in anatomy.encoders[-1].receives and anatomy.encoders[-1].token_count == 6
    sd3 = prompt_anatomy("a cat", flow_engine.pipeline(flow_engine.checkpoint("tiny-sd3")))
    assert [(e.name, e.token_limit) for e in sd3.encoders] == [("CLIP-L", 75), ("CLIP-G", 75), ("T5-XXL", 256)]


# --- LoRAs -------------------------------------------------------------------------------------------------------

def test_a_diffusers_lora_matches_raw_diffusers_and_comes_off_again(flow_engine, flux_folder, raw_flux):
    pipe = raw(FluxPipeline, flux_folder)
    pipe.load_lora_weights(str(flow_engine.library.get("tiny-flux-lora", kind="lora").path))
    expected = pipe("a photo of a cat", num_inference_steps=4, height=128, width=128, guidance_scale=3.5,
                    generator=torch.Generator("cpu").manual_seed(42)).images[0]
    for model in ("tiny-flux", "comfy-flux"):
        result = flow_engine.generate(Recipe(**{**BASE, "prompt": "a photo of a cat <lora:tiny-flux-lora:1>"}, model=model))
        assert same(result.images[0], expected) and not same(expected, raw_flux)
        assert "Lora hashes: " in result.infotexts[0]
    assert same(flow_engine.generate(Recipe(**BASE, model="tiny-flux")).images[0], raw_flux)


@pytest.mark.parametrize(("model", "lora"), [("tiny-flux", "tiny-flux-kohya"), ("tiny-sd3", "tiny-sd3-lora")])
def test_kohya_flux_and_sd3_loras_change_the_image(flow_engine, model, lora):
    plain = flow_engine.generate(Recipe(**BASE, model=model)).images[0]
    result = flow_engine.generate(Recipe(**{**BASE, "prompt": f"a photo of a cat <lora:{lora}:0.8>"}, model=model))
    assert not same(result.images[0], plain)


def test_explanations_run_and_say_why_word_heatmaps_are_missing(flow_engine):
    import json

    from localdiffusion.explain.report import explain_files

    recipe = Recipe(**BASE, negative_prompt="blurry", cfg_scale=3.0, model="tiny-sd3")
    files = explain_files(flow_engine, recipe, timeline=True, default_cfg=True, attention=True, frames=True)
    summary = json.loads(files["explain.json"])
    assert "timeline.png" in files and summary["cfg"] and "timeline/sample-004.png" in files
    assert "joint" in summary["attention"]["unavailable"]


def test_progress_has_previews_and_cancel_stops(flow_engine):
    from localdiffusion.errors import Cancelled

    events = []
    flow_engine.generate(Recipe(**BASE, model="tiny-flux"), on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and events[-1].preview.size == (16, 16)
    with pytest.raises(Cancelled):
        flow_engine.generate(Recipe(**BASE, model="tiny-sd3"), cancel=lambda: True)


def test_fp8_weights_halve_the_transformer_and_stay_close(tmp_path, flux_folder, raw_flux):
    import json

    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    (home.model_dir("checkpoint") / "tiny-flux").symlink_to(flux_folder, target_is_directory=True)
    home.settings_path.write_text(json.dumps({"fp8_weights": True}))
    engine = Engine(ModelLibrary(home, Database(home.db_path)), EngineOptions(dtype="float32"))
    image = engine.generate(Recipe(**BASE, model="tiny-flux")).images[0]
    transformer = engine.pipeline(engine.checkpoint("tiny-flux")).transformer
    assert torch.float8_e4m3fn in {p.dtype for p in transformer.parameters()}
    difference = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(raw_flux, dtype=np.int16))
    assert not same(image, raw_flux) and difference.mean() < 8


def test_an_all_in_one_flux_file_matches_raw_diffusers(tmp_path, flux_folder, raw_flux):
    import shutil

    from factories import build_all_in_one

    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path / "home").ensure()
    build_all_in_one(flux_folder, home.model_dir("checkpoint") / "flux1-all.safetensors")
    shutil.copytree(flux_folder / "tokenizer_2", home.model_dir("text-encoder") / "t5_tokenizer")
    engine = Engine(ModelLibrary(home, Database(home.db_path)), EngineOptions(dtype="float32"))
    result = engine.generate(Recipe(**BASE, model="flux1-all"))
    assert same(result.images[0], raw_flux) and "Module 1" not in result.infotexts[0]


def test_a_t5_file_that_keeps_only_the_encoders_embedding_loads(tmp_path, flux_folder):
    from factories import load_folder
    from safetensors.torch import save_file

    from localdiffusion.models.flow import Part, family_configs, load_t5

    t5 = load_folder(flux_folder).text_encoder_2
    state = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "shared.weight"}
    save_file(state, str(tmp_path / "t5.safetensors"))
    loaded = load_t5(Part(tmp_path / "t5.safetensors"), family_configs("flux")["text_encoder_2"], torch.float32)
    ids = torch.tensor([[3, 4, 5, 1]])
    assert torch.equal(loaded(ids)[0], t5(ids)[0])


def test_sdxl_embeddings_reach_sd3s_two_clip_encoders(tmp_path, flow_engine):
    """An SDXL textual inversion (clip_l and clip_g vectors) splices into CLIP-L and CLIP-G by their own widths."""
    from safetensors.torch import save_file

    from localdiffusion.prompts import FlowPromptEncoder

    path = tmp_path / "tiny-style.safetensors"
    save_file({"clip_l": torch.randn(2, 64), "clip_g": torch.randn(2, 128)}, str(path))
    pipe = flow_engine.pipeline(flow_engine.checkpoint("tiny-sd3"))
    encoder = FlowPromptEncoder.from_pipeline(pipe, embeddings={"tiny-style": path})
    with_embedding = encoder.encode("a photo of tiny-style")
    assert with_embedding.embeds.shape == encoder.encode("a photo of a cat").embeds.shape
    assert not torch.equal(with_embedding.embeds, FlowPromptEncoder.from_pipeline(pipe).encode("a photo of tiny-style").embeds)


def test_the_anatomy_report_names_the_encoders_from_the_family_alone(tmp_path):
    from localdiffusion.explain.anatomy import anatomy_report
    from localdiffusion.models.tokenizer import load_tokenizer

    report = anatomy_report("a (cat:1.2) in the snow", load_tokenizer(tmp_path), family="flux", model="flux1-dev")
    assert [(e.name, e.token_limit, e.token_count) for e in report.prompt.encoders] == [("CLIP-L", 75, 5), ("T5-XXL", 512, None)]
    assert not anatomy_report("a cat", load_tokenizer(tmp_path), family="sdxl").prompt.encoders


@pytest.mark.parametrize(("model", "pipeline"), [("tiny-sd3", "StableDiffusion3Img2ImgPipeline"), ("comfy-flux", "FluxImg2ImgPipeline")])
def test_img2img_is_bit_identical_to_raw_diffusers(flow_engine, sd3_folder, flux_folder, tmp_path, model, pipeline):
    import diffusers
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (128, 128), (40, 90, 160))
    ImageDraw.Draw(picture).ellipse((30, 30, 100, 100), fill=(230, 200, 40))
    picture.save(tmp_path / "input.png")
    folder = sd3_folder if "sd3" in model else flux_folder
    pipe = raw(getattr(diffusers, pipeline), folder)
    cfg = 5.0 if "sd3" in model else 3.5
    expected = pipe("a photo of a cat", image=picture, strength=0.6, num_inference_steps=5, height=128, width=128,
                    guidance_scale=cfg, generator=torch.Generator("cpu").manual_seed(42)).images[0]
    recipe = Recipe(**{**BASE, "steps": 5}, mode="img2img", init_image=str(tmp_path / "input.png"), denoising_strength=0.6,
                    model=model, **({"cfg_scale": 5.0} if "sd3" in model else {}))
    result = flow_engine.generate(recipe)
    assert same(result.images[0], expected)
