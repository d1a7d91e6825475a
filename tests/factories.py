"""Tiny random-weight Stable Diffusion models, built locally for the tests.

Each builder writes a diffusers folder. The shapes keep to the rules that the single-file
loader relies on for what tensors cannot show (SD1: 8 UNet heads; SD2/SDXL: UNet head width 64;
CLIP heads = width / 64; GroupNorm with 32 groups), so that a single-file twin of each folder
loads back to the same architecture.

`torch.manual_seed(0)` before building gives identical weights every time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from localdiffusion.models.tokenizer import PAD_OPENCLIP, PAD_SD1, load_tokenizer

TEXT_WIDTH = 64  # one CLIP head of width 64

SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    steps_offset=1, timestep_spacing="leading", clip_sample=False, set_alpha_to_one=False,
)


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=32, sample_size=128,
    )


def _text_config(act: str, projection: int | None = None, layers: int = 3) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_attention_heads=TEXT_WIDTH // 64,
        num_hidden_layers=layers, vocab_size=49408, max_position_embeddings=77, hidden_act=act,
        projection_dim=projection or TEXT_WIDTH, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407 if act == "quick_gelu" else 0,
    )


def _scheduler(prediction_type: str = "epsilon") -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(prediction_type=prediction_type, **{k: v for k, v in SD_SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")})


def _save(pipe, folder: Path) -> Path:
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_sd1(folder: Path, cache_dir: Path, inpaint: bool = False) -> Path:
    """A tiny SD 1.x (or SD 1.x inpainting) model as a diffusers folder."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9 if inpaint else 4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8, norm_num_groups=32,
    )
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(
        unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config("quick_gelu")),
        tokenizer=load_tokenizer(cache_dir, PAD_SD1), scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return _save(pipe, folder)


def build_sd2(folder: Path, cache_dir: Path, v_prediction: bool = True) -> Path:
    """A tiny SD 2.x model (v-prediction by default) as a diffusers folder."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128), layers_per_block=1, cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=(1, 2), use_linear_projection=True, norm_num_groups=32,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config("gelu")),
        tokenizer=load_tokenizer(cache_dir, PAD_OPENCLIP),
        scheduler=_scheduler("v_prediction" if v_prediction else "epsilon"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return _save(pipe, folder)


def build_sdxl(folder: Path, cache_dir: Path, refiner: bool = False) -> Path:
    """A tiny SDXL base (or refiner) model as a diffusers folder."""
    torch.manual_seed(0)
    time_dim = 8
    text_2 = CLIPTextModelWithProjection(_text_config("gelu", projection=TEXT_WIDTH))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 128), layers_per_block=1, transformer_layers_per_block=(1, 2),
        attention_head_dim=(1, 2), use_linear_projection=True, norm_num_groups=32,
        cross_attention_dim=TEXT_WIDTH if refiner else 2 * TEXT_WIDTH,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=(5 if refiner else 6) * time_dim + TEXT_WIDTH,
    )
    scheduler = _scheduler()
    tok_2 = load_tokenizer(cache_dir, PAD_OPENCLIP)
    if refiner:
        pipe = StableDiffusionXLImg2ImgPipeline(
            unet=unet, vae=_vae(), text_encoder=None, tokenizer=None, text_encoder_2=text_2, tokenizer_2=tok_2,
            scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            unet=unet, vae=_vae(), text_encoder=CLIPTextModel(_text_config("quick_gelu")),
            tokenizer=load_tokenizer(cache_dir, PAD_SD1), text_encoder_2=text_2, tokenizer_2=tok_2, scheduler=scheduler,
        )
    return _save(pipe, folder)


def folder_config(folder: Path, component: str) -> dict:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((Path(folder) / component / name).read_text())
