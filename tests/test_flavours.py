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
