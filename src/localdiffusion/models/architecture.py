"""A checkpoint's architecture as diffusers configs: the family standards, and what the tensor shapes show.

`standard_configs(family)` reads the shipped full-size configs (`configs/<family>/`); the `infer_*`
functions start from them and replace everything an LDM-layout file's shapes show (block widths
and depths, attention placement, transformer depth, cross-attention width, projection kind, text
encoder and VAE sizes). Detection uses `unet_from_tensors` for A1111's SD2 v-prediction test; the
single-file loader (`single_file.py`) writes the derived configs as a folder and loads the weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from localdiffusion.errors import UnsupportedModel
from localdiffusion.models.keys import SD2_TEXT, UNET, Shapes, first_shape

CONFIG_ROOT = Path(__file__).parent / "configs"
FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl", "sdxl-refiner", "sd1-inpaint", "sd2-inpaint", "sdxl-inpaint", "sd3", "flux")
PIPELINE_CLASSES = {
    "sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sd2-v": "StableDiffusionPipeline",
    "sd1-inpaint": "StableDiffusionInpaintPipeline", "sd2-inpaint": "StableDiffusionInpaintPipeline",
    "sdxl": "StableDiffusionXLPipeline", "sdxl-inpaint": "StableDiffusionXLInpaintPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
}
HEAD_WIDTH = 64  # SD2/SDXL UNet heads and every CLIP text encoder's heads are 64 wide
SD1_UNET_HEADS = 8


# ---------------------------------------------------------------------------------------------
# Standard (full-size) configs per family


def _template_family(family: str) -> str:
    """The shipped folder a family's configs start from: inpaint variants share their base's."""
    base = family.removesuffix("-inpaint")
    if family not in FAMILIES:
        raise UnsupportedModel(f"There is no standard configuration for family '{family}'; use one of {', '.join(FAMILIES)}.")
    return base


def standard_configs(family: str) -> dict[str, dict]:
    """The full-size diffusers configs of a family: {'model_index', 'unet', 'vae', 'scheduler', 'text_encoder', ...}."""
    folder = CONFIG_ROOT / _template_family(family)
    configs = {"model_index": json.loads((folder / "model_index.json").read_text())}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = "scheduler_config.json" if sub.name == "scheduler" else "config.json"
        configs[sub.name] = json.loads((sub / name).read_text())
    if family.endswith("-inpaint"):
        configs["unet"]["in_channels"] = 9
        configs["model_index"]["_class_name"] = PIPELINE_CLASSES[family]
        if family == "sdxl-inpaint":
            configs["model_index"]["requires_aesthetics_score"] = False
    return configs


# ---------------------------------------------------------------------------------------------
# Architecture from tensor shapes


def count_children(shapes: Shapes, prefix: str) -> int:
    """How many numbered children `prefix.N.` exist (highest N + 1)."""
    ids = set()
    for key in shapes:
        if key.startswith(prefix):
            head = key[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                ids.add(int(head))
    return max(ids) + 1 if ids else 0


def require_shape(shapes: Shapes, key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise UnsupportedModel(f"The checkpoint lacks the tensor '{key}' that its architecture needs.")
    return shapes[key]


def transformer_depths(depths: list[int], mid_depth: int) -> int | list[int]:
    """Per-level transformer depth; diffusers' mid block takes the last entry, so it carries the mid depth."""
    if all(d in (0, mid_depth) for d in depths):
        return mid_depth
    return [d or 1 for d in depths[:-1]] + [depths[-1] or mid_depth]


def infer_unet(shapes: Shapes, family: str, base: dict, pooled_width: int | None, p: str = UNET) -> dict:
    """The UNet config: the family template with everything the LDM tensors show filled in."""
    conv_in = require_shape(shapes, p + "input_blocks.0.0.weight")
    inputs = count_children(shapes, p + "input_blocks.")
    ops = sorted(i for i in range(inputs) if p + f"input_blocks.{i}.0.op.weight" in shapes)
    per_block = ops[0] - 1 if ops else inputs - 1
    levels = len(ops) + 1
    channels, depths, up_attention = [], [], []
    for level in range(levels):
        first = 1 + level * (per_block + 1)
        channels.append(require_shape(shapes, p + f"input_blocks.{first}.0.out_layers.3.weight")[0])
        depths.append(count_children(shapes, p + f"input_blocks.{first}.1.transformer_blocks."))
        up_attention.append(count_children(shapes, p + f"output_blocks.{level * (per_block + 1)}.1.transformer_blocks.") > 0)
    mid_depth = count_children(shapes, p + "middle_block.1.transformer_blocks.") or 1
    to_k = first_shape(shapes, p, "attn2.to_k.weight")
    proj_in = first_shape(shapes, p, "proj_in.weight")
    if to_k is None or proj_in is None:
        raise UnsupportedModel("The checkpoint's UNet has no cross-attention, so it is not a Stable Diffusion UNet.")
    cfg = copy.deepcopy(base)
    cfg.update(
        in_channels=conv_in[1], out_channels=require_shape(shapes, p + "out.2.weight")[0],
        block_out_channels=channels, layers_per_block=per_block,
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
        # diffusers' mid block takes the last entry, so a last level without attention carries the mid depth.
        transformer_layers_per_block=transformer_depths(depths, mid_depth),
        cross_attention_dim=to_k[1], use_linear_projection=len(proj_in) == 2,
        attention_head_dim=SD1_UNET_HEADS if family.startswith("sd1") else [c // HEAD_WIDTH for c in channels],
    )
    label = shapes.get(p + "label_emb.0.0.weight")
    if label is not None:
        # text_time input = pooled text embedding + (5 refiner | 6 base) sinusoidal size/crop/score embeddings
        parts = 5 if family == "sdxl-refiner" else 6
        time_dim = (label[1] - pooled_width) // parts if pooled_width else base.get("addition_time_embed_dim", 256)
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=label[1])
    else:
        for key in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim"):
            cfg.pop(key, None)
    return cfg


def infer_vae(shapes: Shapes, base: dict, p: str) -> dict:
    ldm = p + "encoder.down.0.block.0.conv1.weight" in shapes
    down, res = (p + "encoder.down.", "block") if ldm else (p + "encoder.down_blocks.", "resnets")
    levels = count_children(shapes, down)
    cfg = copy.deepcopy(base)
    cfg.update(
        block_out_channels=[require_shape(shapes, f"{down}{i}.{res}.0.conv2.weight")[0] for i in range(levels)],
        layers_per_block=count_children(shapes, f"{down}0.{res}."),
        down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
        in_channels=require_shape(shapes, p + "encoder.conv_in.weight")[1],
        out_channels=require_shape(shapes, p + "decoder.conv_out.weight")[0],
        latent_channels=require_shape(shapes, p + "decoder.conv_in.weight")[1],
    )
    return cfg


def _clip_config(base: dict, vocab_width: tuple[int, ...], positions: int, layers: int, inner: int, projection: int | None) -> dict:
    cfg = copy.deepcopy(base)
    width = vocab_width[1]
    cfg.update(vocab_size=vocab_width[0], hidden_size=width, num_attention_heads=width // HEAD_WIDTH, num_hidden_layers=layers,
               intermediate_size=inner, max_position_embeddings=positions, projection_dim=projection or width)
    return cfg


def infer_clip(shapes: Shapes, base: dict, p: str) -> dict:
    """A transformers-layout CLIP text encoder (`...text_model.embeddings...`)."""
    return _clip_config(
        base, require_shape(shapes, p + "embeddings.token_embedding.weight"), require_shape(shapes, p + "embeddings.position_embedding.weight")[0],
        count_children(shapes, p + "encoder.layers."), require_shape(shapes, p + "encoder.layers.0.mlp.fc1.weight")[0], None,
    )


def infer_open_clip(shapes: Shapes, base: dict, p: str) -> dict:
    """An open_clip-layout text encoder (`...model.transformer.resblocks...`)."""
    layers = count_children(shapes, p + "transformer.resblocks.")
    if p == SD2_TEXT and layers == 24:
        layers = 23  # SD2 reads ViT-H's penultimate layer; diffusers drops block 23 when loading
    projection = shapes.get(p + "text_projection")
    return _clip_config(
        base, require_shape(shapes, p + "token_embedding.weight"), require_shape(shapes, p + "positional_embedding")[0], layers,
        require_shape(shapes, p + "transformer.resblocks.0.mlp.c_fc.weight")[0], projection[1] if projection else None,
    )


def unet_from_tensors(tensors: dict[str, torch.Tensor], shapes: Shapes, family: str):
    """A diffusers UNet with the weights of an LDM-layout UNet (keys under `model.diffusion_model.`)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = infer_unet(shapes, family, standard_configs(family)["unet"], None)
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(convert_ldm_unet_checkpoint(tensors, config), strict=True)
    return unet.float().eval()
