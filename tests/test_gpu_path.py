"""The GPU path's decisions (no GPU needed: the decision functions and a CPU Engine with a counting compiler):
bf16 or fp16 on CUDA, TF32 for fp32 work, channels-last, SDPA, SDXL's VAE upcast and the fp16-fix VAE, and
`--compile` without recompiles when only the prompt, seed or sampler change."""

from __future__ import annotations

import logging

import pytest
import torch

from localdiffusion.engine import compile as compiling
from localdiffusion.engine import device
from localdiffusion.engine.device import cuda_default_dtype, pick_dtype, tf32_for, use_channels_last
from localdiffusion.recipe import Recipe

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_cuda_defaults_to_bf16_where_supported_else_fp16(monkeypatch):
    assert cuda_default_dtype(True) == torch.bfloat16
    assert cuda_default_dtype(False) == torch.float16
    monkeypatch.setattr(device, "cuda_bf16_supported", lambda: True)
    assert pick_dtype(CUDA) == torch.bfloat16
    monkeypatch.setattr(device, "cuda_bf16_supported", lambda: False)
    assert pick_dtype(CUDA) == torch.float16
    assert pick_dtype(CUDA, "float32") == torch.float32  # --dtype and the settings still decide


def test_tf32_is_for_fp32_work_on_cuda_only():
    assert tf32_for(CUDA, torch.float32)
    assert not tf32_for(CUDA, torch.float16)
    assert not tf32_for(CPU, torch.float32)


def test_channels_last_on_cuda_only():
    assert use_channels_last(CUDA) and not use_channels_last(CPU) and not use_channels_last(torch.device("mps"))


def test_the_unet_attends_through_sdpa(engine):
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = engine.pipeline(engine.checkpoint("tiny-sd1"))
    processors = pipe.unet.attn_processors
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors.values())


def test_sdxl_vae_upcasts_in_fp16_unless_it_is_the_fp16_fix():
    from factories import _vae

    from localdiffusion.engine.backend import _upcast_vae

    for force_upcast, expected in ((True, torch.float32), (False, torch.float16)):
        vae = _vae(0.13025)
        vae.register_to_config(force_upcast=force_upcast)
        vae.to(torch.float16)
        with _upcast_vae(vae):
            assert vae.dtype == expected
        assert vae.dtype == torch.float16


def test_compile_mode_is_autotuned_on_cuda_only():
    assert compiling.compile_mode(CUDA) == "max-autotune-no-cudagraphs"
    assert compiling.compile_mode(CPU) == "default"


def test_steady_timestep_has_one_float_per_row():
    sample = torch.zeros(2, 4, 8, 8)
    for t in (999, 999.0, torch.tensor(999), torch.tensor([999, 999]), torch.tensor(999.0, dtype=torch.float64)):
        steady = compiling.steady_timestep(t, sample)
        assert steady.dtype == torch.float32 and steady.shape == (2,) and steady.tolist() == [999.0, 999.0]


@pytest.fixture()
def compiled_engine(model_home, monkeypatch, tmp_path):
    """An Engine with compile=True whose compiler counts its compilations and runs the graphs eagerly."""
    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    compiles = []

    def counting(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    monkeypatch.setattr(compiling, "BACKEND", counting)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    engine = Engine(ModelLibrary(model_home, Database(model_home.db_path)), EngineOptions(dtype="float32", compile=True))
    yield engine, compiles
    torch._dynamo.reset()


def test_compile_does_not_recompile_for_another_prompt_seed_or_sampler(compiled_engine, engine):
    compiled, compiles = compiled_engine
    first = Recipe(prompt="a red cube", model="tiny-sd1", steps=3, width=64, height=64, seed=1, sampler_name="Euler a")
    image = compiled.generate(first).images[0]
    assert compiles, "the UNet was not compiled"
    after_first = len(compiles)
    for recipe in (first.model_copy(update={"prompt": "a blue sphere on a table", "seed": 7}),
                   first.model_copy(update={"sampler_name": "DPM++ 2M", "seed": 3}),
                   first.model_copy(update={"sampler_name": "DDIM", "negative_prompt": "blurry"})):
        compiled.generate(recipe)
    assert len(compiles) == after_first
    # The compiled UNet computes the plain UNet's image.
    plain = engine.generate(first).images[0]
    assert image.tobytes() == plain.tobytes()


def test_attention_capture_runs_uncompiled_and_says_so(compiled_engine, caplog):
    from localdiffusion.engine.attention import AttentionRecorder

    compiled, compiles = compiled_engine
    recipe = Recipe(prompt="a red cube", model="tiny-sd1", steps=2, width=64, height=64, seed=1)
    with caplog.at_level(logging.WARNING, logger="localdiffusion.engine"):
        compiled.generate(recipe, attention=AttentionRecorder(recipe.steps))
    assert not compiles
    lines = [r.getMessage() for r in caplog.records if "torch.compile is off" in r.getMessage()]
    assert len(lines) == 1 and "attention capture" in lines[0]
    unet = compiled.pipeline(compiled.checkpoint("tiny-sd1")).unet
    assert unet.__dict__[compiling.ATTR].enabled  # the next run may compile again


def test_off_reasons_name_each_cause():
    assert compiling.off_reasons() == []
    reasons = compiling.off_reasons(loras=True, controls=True, cpu_offload=True)
    assert [r.split()[0] for r in reasons] == ["LoRAs", "ControlNet", "CPU"]
