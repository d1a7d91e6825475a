"""Single-file checkpoints: offline loading from inferred configs, and the reverse converter."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from factories import build_zoo, load_folder
from localdiffusion.errors import UnsupportedModel
from localdiffusion.models.architecture import PIPELINE_CLASSES, standard_configs
from localdiffusion.models.detect import Detected, detect_shapes
from localdiffusion.models.single_file import (
    derive_configs,
    load_single_file,
    load_vae_file,
    save_single_file,
    to_single_file_state_dict,
)

FAMILIES = ["sd1", "sd2", "sd2-v", "sdxl", "sdxl-refiner", "sd1-inpaint", "sd2-inpaint", "sdxl-inpaint"]
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.getbasetemp() / "zoo")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _detected(family: str, fmt: str = "safetensors") -> Detected:
    prediction = "v_prediction" if family == "sd2-v" else "epsilon"
    return Detected("checkpoint", family, fmt, prediction)  # type: ignore[arg-type]


def assert_same_weights(a, b) -> None:
    for name in COMPONENTS:
        left, right = getattr(a, name, None), getattr(b, name, None)
        assert (left is None) == (right is None), name
        if left is None:
            continue
        sa, sb = left.state_dict(), right.state_dict()
        assert sa.keys() == sb.keys(), name
        different = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not different, f"{name}: {different[:3]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_loads_same_weights_as_folder(zoo, family):
    pipe = load_single_file(zoo[f"{family}.file"], zoo["cache"], detected=_detected(family))
    assert type(pipe).__name__ == PIPELINE_CLASSES[family]
    folder_pipe = load_folder(zoo[family])
    assert_same_weights(pipe, folder_pipe)
    assert pipe.scheduler.config.prediction_type == folder_pipe.scheduler.config.prediction_type


@pytest.mark.parametrize("family", ["sd1", "sd2-v", "sdxl"])
def test_single_file_generates_the_same_image(zoo, family):
    pipes = [load_single_file(zoo[f"{family}.file"], zoo["cache"]), load_folder(zoo[family])]
    # A file cannot carry the latent scaling factor; the loader uses the family's (0.13025 for SDXL),
    # while the tiny SDXL factory kept diffusers' default 0.18215. Align the folder twin to the standard.
    pipes[1].vae.register_to_config(scaling_factor=pipes[0].vae.config.scaling_factor)
    images = []
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
        out = pipe("a photo of a cat", num_inference_steps=2, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(0), output_type="np")
        images.append(out.images[0])
    assert np.array_equal(images[0], images[1])


def test_inpaint_single_file_generates_the_same_image(zoo):
    image = Image.new("RGB", (64, 64), (120, 80, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    images = []
    for pipe in (load_single_file(zoo["sd1-inpaint.file"], zoo["cache"]), load_folder(zoo["sd1-inpaint"])):
        pipe.set_progress_bar_config(disable=True)
        out = pipe("a cat", image=image, mask_image=mask, num_inference_steps=2, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(0), output_type="np")
        images.append(out.images[0])
    assert np.array_equal(images[0], images[1])


def test_one_config_folder_per_architecture(zoo, tmp_path):
    cache = tmp_path / "cache"
    load_single_file(zoo["sd1.file"], cache)
    load_single_file(zoo["sd1.file"], cache)
    load_single_file(zoo["sdxl.file"], cache)
    assert len(list((cache / "single-file-configs").iterdir())) == 2


def test_ckpt_refused_by_default_and_loadable_with_opt_in(zoo, tmp_path):
    ckpt = save_single_file(load_folder(zoo["sd1"]), tmp_path / "model.ckpt")
    with pytest.raises(UnsupportedModel, match="allow_pickle"):
        load_single_file(ckpt, zoo["cache"])
    pipe = load_single_file(ckpt, zoo["cache"], allow_pickle=True)
    assert_same_weights(pipe, load_folder(zoo["sd1"]))


def test_fp16_load(zoo):
    pipe = load_single_file(zoo["sd1.file"], zoo["cache"], torch_dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder.dtype == torch.float16


def test_non_checkpoints_are_refused(zoo):
    with pytest.raises(UnsupportedModel, match="lora"):
        load_single_file(zoo["lora"], zoo["cache"])


def test_vae_file(zoo):
    vae = load_vae_file(zoo["vae"], zoo["cache"])
    expected = load_folder(zoo["sd1"]).vae
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), expected.state_dict().values()))
    assert vae.state_dict().keys() == expected.state_dict().keys()
    assert vae.config.scaling_factor == 0.18215
    assert load_vae_file(zoo["vae"], zoo["cache"], family="sdxl").config.scaling_factor == 0.13025
    with pytest.raises(UnsupportedModel, match="not a VAE"):
        load_vae_file(zoo["embedding"], zoo["cache"])


def test_save_is_atomic(zoo, tmp_path, monkeypatch):
    import safetensors.torch

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        save_single_file(load_folder(zoo["sd1"]), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


# Full-size architectures on the meta device: no memory, only names and shapes.

REAL_KEYS = {
    "sd1": ["model.diffusion_model.output_blocks.11.0.skip_connection.weight",
            "model.diffusion_model.input_blocks.1.1.proj_in.weight",
            "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
            "first_stage_model.decoder.up.3.block.0.conv1.weight", "first_stage_model.encoder.mid.attn_1.q.weight"],
    "sd2-v": ["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
              "cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"],
    "sdxl": ["conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
             "conditioner.embedders.1.model.positional_embedding", "conditioner.embedders.1.model.text_projection",
             "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
             "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.middle_block.1.transformer_blocks.9.attn1.to_q.weight"],
    "sdxl-refiner": ["conditioner.embedders.0.model.text_projection", "model.diffusion_model.output_blocks.8.2.conv.weight"],
}
SHAPE_FIELDS = {
    "unet": ["block_out_channels", "layers_per_block", "transformer_layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim", "in_channels",
             "use_linear_projection", "attention_head_dim", "addition_time_embed_dim", "projection_class_embeddings_input_dim"],
    "vae": ["block_out_channels", "layers_per_block", "latent_channels", "scaling_factor"],
    "text_encoder": ["hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "hidden_act"],
    "text_encoder_2": ["hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "projection_dim"],
}


def _meta_pipeline(family: str):
    import diffusers
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = standard_configs(family)
    with init_empty_weights():
        parts = {"unet": diffusers.UNet2DConditionModel.from_config(configs["unet"]),
                 "vae": diffusers.AutoencoderKL.from_config(configs["vae"])}
        if "text_encoder" in configs:
            parts["text_encoder"] = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        if "text_encoder_2" in configs:
            parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
    scheduler = diffusers.EulerDiscreteScheduler.from_config(configs["scheduler"])

    class Parts:  # only what the converter reads
        pass

    pipe = Parts()
    for name, value in parts.items():
        setattr(pipe, name, value)
    if family.startswith("sdxl"):
        pipe.text_encoder = parts.get("text_encoder")
        pipe.text_encoder_2 = parts.get("text_encoder_2")
    pipe.scheduler = scheduler
    return pipe, configs


@pytest.mark.parametrize("family", ["sd1", "sd2-v", "sdxl", "sdxl-refiner", "sdxl-inpaint"])
def test_full_size_layout_and_config_inference(family, tmp_path):
    pipe, configs = _meta_pipeline(family)
    shapes = {k: tuple(v.shape) for k, v in to_single_file_state_dict(pipe).items()}
    for key in REAL_KEYS.get(family, []):
        assert key in shapes, key
    detected = detect_shapes(shapes, tmp_path / "x.safetensors", "safetensors")
    assert detected == _detected(family)
    derived = derive_configs(shapes, detected)
    for component, fields in SHAPE_FIELDS.items():
        if component not in configs:
            continue
        for field in fields:
            if field in configs[component]:
                assert derived[component][field] == configs[component][field], (component, field)
