"""The base checkpoint, loaded for training through the library's own loader (diffusers folders and single
files alike), with what every training step needs: the noise schedule, the prediction type, caption encoding
and the pictures' latents.

Training loads its own copy of the pipeline (never the engine's cached one), because it changes it: adapters on
the UNet, new words in the tokenizer.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from localdiffusion.errors import UnsupportedModel
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.models.loader import load_pipeline

TRAINABLE_FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")
# kohya's ss_base_model_version for each family
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sd2-v": "sd_v2_v", "sdxl": "sdxl_base_v1-0"}


@dataclass
class TrainBase:
    info: ModelInfo
    pipe: Any
    family: str
    device: torch.device
    weight_dtype: torch.dtype  # the frozen weights' dtype
    autocast_dtype: torch.dtype | None  # mixed precision on a GPU, else None
    prediction_type: str
    noise_scheduler: Any

    @property
    def sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def text_encoders(self) -> list[Any]:
        return [e for e in (self.pipe.text_encoder, getattr(self.pipe, "text_encoder_2", None)) if e is not None]

    @property
    def tokenizers(self) -> list[Any]:
        return [t for t in (self.pipe.tokenizer, getattr(self.pipe, "tokenizer_2", None)) if t is not None]

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """The UNet's text conditioning for these captions (with gradients where something trains):
        SD1/SD2 the text encoder's last hidden state; SDXL both encoders' penultimate states side by side and
        the second encoder's pooled output."""
        states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(self.device)
            out = encoder(ids, output_hidden_states=self.sdxl)
            if self.sdxl:
                states.append(out.hidden_states[-2])
                if encoder is self.text_encoders[-1]:
                    pooled = out[0]
            else:
                states.append(out[0])
        cond = {"encoder_hidden_states": torch.cat(states, dim=-1)}
        if self.sdxl:
            cond["pooled"] = pooled
        return cond

    def unet_kwargs(self, cond: dict[str, torch.Tensor], sizes: list[tuple[int, int]]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"encoder_hidden_states": cond["encoder_hidden_states"]}
        if self.sdxl:  # SDXL's size conditioning: original size, crop corner, target size (as height, width)
            time_ids = torch.tensor([[h, w, 0, 0, h, w] for w, h in sizes], dtype=torch.float32, device=self.device)
            kwargs["added_cond_kwargs"] = {"text_embeds": cond["pooled"], "time_ids": time_ids.to(cond["pooled"].dtype)}
        return kwargs

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """A picture (3, H, W) in [-1, 1] to its scaled latent (4, H/8, W/8), in float32 (the VAE runs in float32)."""
        vae = self.pipe.vae
        sample = pixels.unsqueeze(0).to(self.device, vae.dtype)
        latent = vae.encode(sample).latent_dist.mean * vae.config.scaling_factor
        return latent[0].float()


def load_base(library: Any, model: str | None, device: torch.device, mixed_precision: str = "auto") -> TrainBase:
    """The checkpoint named `model` (or the default one), loaded for training on `device`."""
    from diffusers import DDPMScheduler

    info = library.ensure_hash(library.get(model) if model else library.default_checkpoint())
    family = info.family
    if family not in TRAINABLE_FAMILIES:
        raise UnsupportedModel(f"The model '{info.name}' is a {family} model; training works on SD 1.x, SD 2.x and "
                               f"SDXL base checkpoints ({', '.join(TRAINABLE_FAMILIES)}), not on "
                               f"{'inpainting models' if info.inpaint else 'this family'}.")
    autocast_dtype = None
    if device.type == "cuda" and mixed_precision != "no":
        bf16 = torch.cuda.is_bf16_supported()
        autocast_dtype = torch.bfloat16 if mixed_precision == "bf16" or (mixed_precision == "auto" and bf16) else torch.float16
    weight_dtype = autocast_dtype or torch.float32
    pipe = load_pipeline(info, library.home.cache, weight_dtype, allow_pickle=library.settings.allow_pickle)
    pipe.to(device)
    pipe.vae.to(torch.float32)  # encoding the pictures once, in full precision (SDXL's VAE overflows in fp16)
    for part in (pipe.unet, pipe.vae, *[e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]):
        part.requires_grad_(False)
        part.eval()
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = scheduler.config.prediction_type
    return TrainBase(info, pipe, base_family(family), device, weight_dtype, autocast_dtype, prediction, scheduler)


def min_snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float | None, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR for noise prediction,
    min(SNR, gamma) / (SNR + 1) for v-prediction; ones when gamma is None."""
    if not gamma:
        return torch.ones(timesteps.shape, dtype=torch.float32)
    alphas = scheduler.alphas_cumprod.to(torch.float32)[timesteps.cpu()]
    snr = alphas / (1.0 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1.0) if prediction_type == "v_prediction" else clipped / snr
