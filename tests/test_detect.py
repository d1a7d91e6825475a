"""Detection of model kind, family, format and prediction type, from tensors and configs only."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from factories import build_zoo, load_folder
from localdiffusion.errors import UnsupportedModel
from localdiffusion.models import detect as detect_module
from localdiffusion.models.detect import Detected, detect, read_tensor_shapes
from localdiffusion.models.single_file import save_single_file

CHECKPOINTS = {
    "sd1": "epsilon", "sd2": "epsilon", "sd2-v": "v_prediction", "sdxl": "epsilon", "sdxl-refiner": "epsilon",
    "sd1-inpaint": "epsilon", "sd2-inpaint": "epsilon", "sdxl-inpaint": "epsilon",
}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.getbasetemp() / "zoo")


def _save(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
    return path


@pytest.mark.parametrize("family", list(CHECKPOINTS))
def test_checkpoint_folder(zoo, family):
    expected = CHECKPOINTS[family]
    assert detect(zoo[family]) == Detected("checkpoint", family, "diffusers", expected)


@pytest.mark.parametrize("family", list(CHECKPOINTS))
def test_checkpoint_single_file(zoo, family, monkeypatch):
    if family == "sd2":
        # The tiny epsilon SD2 carries no marker, so detection runs A1111's heuristic on its random UNet.
        monkeypatch.setattr(detect_module, "sd2_uses_v_prediction", lambda *a, **k: False)
    assert detect(zoo[f"{family}.file"]) == Detected("checkpoint", family, "safetensors", CHECKPOINTS[family])


def test_misleading_names_do_not_matter(zoo, tmp_path):
    lying_file = tmp_path / "sdxl_refiner_inpainting_v_pred_lora.safetensors"
    shutil.copy(zoo["sd1.file"], lying_file)
    assert detect(lying_file).family == "sd1"
    lying_folder = tmp_path / "sd1-embedding"
    shutil.copytree(zoo["sdxl"], lying_folder)
    assert detect(lying_folder).family == "sdxl"
    lying_lora = tmp_path / "checkpoint_vae.safetensors"
    shutil.copy(zoo["lora"], lying_lora)
    assert detect(lying_lora).kind == "lora"


def test_sd2_heuristic_runs_only_for_sd2_files_without_marker(zoo, monkeypatch):
    calls = []
    monkeypatch.setattr(detect_module, "sd2_uses_v_prediction", lambda path, *a, **k: calls.append(path) or True)
    for family in ("sd1", "sd2-v", "sdxl", "sd2-inpaint"):
        detect(zoo[f"{family}.file"])
    assert calls == []
    assert detect(zoo["sd2.file"]).family == "sd2-v"
    assert calls == [zoo["sd2.file"]]


def test_sd2_heuristic_on_a_real_unet(zoo, tmp_path):
    """A1111's test: at t=999 a v-model's output sits far below a constant input; an epsilon model's does not."""
    pipe = load_folder(zoo["sd2"])
    assert detect(save_single_file(pipe, tmp_path / "a.safetensors")).family == "sd2"
    with torch.no_grad():
        pipe.unet.conv_out.bias.fill_(-5.0)  # force the output mean far below the input, as a v-model's is
    found = detect(save_single_file(pipe, tmp_path / "b.safetensors"))
    assert (found.family, found.prediction_type) == ("sd2-v", "v_prediction")


def test_tiny_lora(zoo):
    # The tiny SD1 widths (64) match no real family, so the family stays unknown.
    assert detect(zoo["lora"]) == Detected("lora", "unknown", "safetensors")


@pytest.mark.parametrize(
    ("shapes", "family"),
    [
        ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
          "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
          "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": ()}, "sd1"),
        ({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1024),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (1024, 4)}, "sd2"),
        ({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768),
          "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (768, 4)}, "sdxl"),
        ({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 2048),
          "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (640, 4)}, "sdxl"),
    ],
)
def test_lora_family_from_rank_matrix_widths(tmp_path, shapes, family):
    assert detect(_save(tmp_path / "x.safetensors", shapes)) == Detected("lora", family, "safetensors")


def test_embeddings(zoo, tmp_path):
    assert detect(zoo["embedding"]) == Detected("embedding", "unknown", "safetensors")
    assert detect(zoo["embedding.pt"], allow_pickle=True) == Detected("embedding", "unknown", "ckpt")
    assert detect(_save(tmp_path / "a.safetensors", {"emb_params": (2, 768)})).family == "sd1"
    assert detect(_save(tmp_path / "b.safetensors", {"emb_params": (3, 1024)})).family == "sd2"
    assert detect(_save(tmp_path / "c.safetensors", {"clip_l": (2, 768), "clip_g": (2, 1280)})).family == "sdxl"


def test_vae(zoo):
    assert detect(zoo["vae"]) == Detected("vae", "unknown", "safetensors")
    assert detect(zoo["sd1"] / "vae") == Detected("vae", "unknown", "diffusers")


def test_controlnet(zoo, tmp_path):
    assert detect(zoo["controlnet"]) == Detected("controlnet", "sd1", "diffusers")
    diffusers_file = tmp_path / "cn.safetensors"
    shutil.copy(zoo["controlnet"] / "diffusion_pytorch_model.safetensors", diffusers_file)
    assert detect(diffusers_file) == Detected("controlnet", "sd1", "safetensors")
    # The LDM layout: the UNet's input half under `control_model.`, as A1111's ControlNet files have it.
    ldm = {k.replace("model.diffusion_model.", "control_model."): s for k, s in read_tensor_shapes(zoo["sd2-v.file"]).items()
           if k.startswith("model.diffusion_model.input_blocks.") or k.startswith("model.diffusion_model.middle_block.")}
    ldm["control_model.input_hint_block.0.weight"] = (16, 3, 3, 3)
    assert detect(_save(tmp_path / "ldm.safetensors", ldm)) == Detected("controlnet", "sd2", "safetensors")
    ldm_sdxl = {"control_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048)}
    assert detect(_save(tmp_path / "xl.safetensors", ldm_sdxl)).family == "sdxl"


def test_not_stable_diffusion(tmp_path):
    random_file = _save(tmp_path / "weights.safetensors", {"layer.weight": (3, 3), "layer.bias": (3,)})
    with pytest.raises(UnsupportedModel, match="weights.safetensors"):
        detect(random_file)
    text = tmp_path / "notes.safetensors"
    text.write_text("just some text, not a model\n")
    with pytest.raises(UnsupportedModel, match="notes.safetensors"):
        detect(text)
    other = tmp_path / "readme.txt"
    other.write_text("hello")
    with pytest.raises(UnsupportedModel, match="readme.txt"):
        detect(other)
    with pytest.raises(UnsupportedModel, match="missing"):
        detect(tmp_path / "missing.safetensors")
    empty_folder = tmp_path / "folder"
    empty_folder.mkdir()
    with pytest.raises(UnsupportedModel, match="folder"):
        detect(empty_folder)


def test_pickles_refused_by_default_and_read_with_opt_in(zoo, tmp_path):
    ckpt = save_single_file(load_folder(zoo["sdxl"]), tmp_path / "model.ckpt")
    with pytest.raises(UnsupportedModel, match="allow_pickle") as refused:
        detect(ckpt)
    assert "run code" in str(refused.value) and "--allow-pickle" in str(refused.value)
    with pytest.raises(UnsupportedModel, match="allow_pickle"):
        read_tensor_shapes(ckpt)
    assert detect(ckpt, allow_pickle=True) == Detected("checkpoint", "sdxl", "ckpt", "epsilon")
    assert read_tensor_shapes(ckpt, allow_pickle=True) == read_tensor_shapes(zoo["sdxl.file"])
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(UnsupportedModel, match="broken.ckpt"):
        detect(broken, allow_pickle=True)


def test_header_is_read_without_loading_weights(zoo, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("weights were loaded"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    shapes = read_tensor_shapes(zoo["sd1.file"])
    assert shapes["model.diffusion_model.input_blocks.0.0.weight"] == (32, 4, 3, 3)
    assert detect(zoo["sdxl.file"]).family == "sdxl"
