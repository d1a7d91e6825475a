"""A1111-style single-file checkpoints: load them offline, and write them.

Loading: diffusers' `from_single_file` converts the weights, but it needs a diffusers config
folder to know the architecture. We derive that folder from the file's tensor shapes (block
widths, depths, attention placement, text-encoder size, ...) plus the family standards the
shapes cannot show (head counts, activations, scaling factor, scheduler), write it once per
architecture under `cache_dir/single-file-configs/<key>`, and never touch a hub.

Writing: diffusers has no writer for the LDM layout, so `to_single_file_state_dict` maps a
pipeline's weights back to it (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.*`, `conditioner.embedders.*`); the result loads back exactly.

The architecture itself (the shipped full-size configs per family, and what the tensor shapes
show) is read in `architecture.py`; the layout's key prefixes are in `keys.py`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from localdiffusion.errors import UnsupportedModel
from localdiffusion.models.architecture import (
    CONFIG_ROOT,
    HEAD_WIDTH,
    PIPELINE_CLASSES,
    SD1_UNET_HEADS,
    count_children,
    infer_clip,
    infer_open_clip,
    infer_unet,
    infer_vae,
    require_shape,
    standard_configs,
    transformer_depths,
)
from localdiffusion.models.detect import Detected, detect, is_pickle, pickle_refused, read_tensor_shapes, read_tensors
from localdiffusion.models.info import ModelInfo, base_family
from localdiffusion.models.keys import (
    CLIP_L_SDXL,
    CONTROL,
    OPEN_CLIP_REFINER,
    OPEN_CLIP_SDXL,
    SD1_TEXT,
    SD2_TEXT,
    SDXL_TEXT,
    UNET,
    V_PRED_KEY,
    Shapes,
    first_shape,
    has_prefix,
    vae_prefix,
)
from localdiffusion.models.tokenizer import PAD_OPENCLIP, PAD_SD1, write_tokenizer
from localdiffusion.store.files import atomic_path, write_text_atomic

# ---------------------------------------------------------------------------------------------
# Config folders


def write_config_folder(configs: dict[str, dict], folder: Path) -> Path:
    """Write a weightless diffusers folder (configs and tokenizers); `model_index.json` goes last."""
    folder = Path(folder)
    index = configs["model_index"]
    for name, config in configs.items():
        if name == "model_index":
            continue
        file = "scheduler_config.json" if name == "scheduler" else "config.json"
        write_text_atomic(folder / name / file, json.dumps(config, indent=2))
    for name, pad in (("tokenizer", PAD_SD1), ("tokenizer_2", PAD_OPENCLIP)):
        if (index.get(name) or [None, None])[1] == "CLIPTokenizer":  # FLUX's tokenizer_2 is T5's, which has no writer
            # SD2's single tokenizer pads with "!" like open_clip; CLIP-L's pads with the end token.
            act = configs.get("text_encoder", {}).get("hidden_act")
            write_tokenizer(folder / name, PAD_OPENCLIP if name == "tokenizer" and act == "gelu" else pad)
    write_text_atomic(folder / "model_index.json", json.dumps(index, indent=2))
    return folder


def write_standard_folder(family: str, folder: Path) -> Path:
    """A full-size weightless config folder for `family` (benchmarks build random-weight models from it)."""
    return write_config_folder(standard_configs(family), folder)


def derive_configs(shapes: Shapes, detected: Detected) -> dict[str, dict]:
    """All configs of the diffusers folder that describes this checkpoint's architecture."""
    family = detected.family
    configs = standard_configs(family)
    text: dict[str, dict] = {}
    if has_prefix(shapes, SD1_TEXT):
        text["text_encoder"] = infer_clip(shapes, configs["text_encoder"], SD1_TEXT + "text_model.")
    elif has_prefix(shapes, SD2_TEXT):
        text["text_encoder"] = infer_open_clip(shapes, configs["text_encoder"], SD2_TEXT)
    if has_prefix(shapes, CLIP_L_SDXL):
        text["text_encoder"] = infer_clip(shapes, configs["text_encoder"], CLIP_L_SDXL)
    for prefix in (OPEN_CLIP_SDXL, OPEN_CLIP_REFINER):
        if has_prefix(shapes, prefix):
            text["text_encoder_2"] = infer_open_clip(shapes, configs["text_encoder_2"], prefix)
    for name in ("text_encoder", "text_encoder_2"):
        if name in configs and name not in text:
            raise UnsupportedModel(f"The checkpoint has no weights for the {name.replace('_', ' ')} that a {family} model needs.")
    configs.update(text)
    pooled = text.get("text_encoder_2", {}).get("projection_dim")
    configs["unet"] = infer_unet(shapes, family, configs["unet"], pooled)
    prefix = vae_prefix(shapes)
    if prefix is None:
        raise UnsupportedModel(f"The checkpoint has no VAE weights; a {family} single file needs them.")
    configs["vae"] = infer_vae(shapes, configs["vae"], prefix)
    if detected.prediction_type:
        configs["scheduler"]["prediction_type"] = detected.prediction_type
    return configs


def config_folder(configs: dict[str, dict], cache_dir: Path) -> Path:
    """The derived folder for these configs, written once: its name is a hash of the configs."""
    key = hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / "single-file-configs" / key
    if not (folder / "model_index.json").exists():
        write_config_folder(configs, folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Loading


def _check_readable(path: Path, allow_pickle: bool) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UnsupportedModel(f"'{path}' does not exist or is not a file.")
    if is_pickle(path) and not allow_pickle:
        raise pickle_refused(path)
    return path


def _text_encoder_2_if_ambiguous(path: Path, shapes: Shapes, folder: Path, torch_dtype, allow_pickle: bool):
    """SDXL's second text encoder, loaded by hand when both encoders have the same width.

    diffusers picks the CLIP-L weights for *any* CLIP whose width matches theirs, so with equal
    widths (tiny test models) it would load CLIP-L into text_encoder_2. Real SDXL (768 vs 1280)
    never takes this path.
    """
    clip_l = shapes.get(CLIP_L_SDXL + "embeddings.position_embedding.weight")
    open_clip = shapes.get(OPEN_CLIP_SDXL + "positional_embedding")
    if clip_l is None or open_clip is None or clip_l[-1] != open_clip[-1]:
        return None
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModelWithProjection

    tensors = read_tensors(path, OPEN_CLIP_SDXL, allow_pickle)
    return create_diffusers_clip_model_from_ldm(
        CLIPTextModelWithProjection, tensors, subfolder="text_encoder_2", config=str(folder),
        torch_dtype=torch_dtype, local_files_only=True,
    )


def load_single_file(path: Path, cache_dir: Path, torch_dtype=torch.float32, allow_pickle: bool = False,
                     detected: Detected | None = None):
    """The diffusers pipeline for an A1111-style checkpoint, built fully offline."""
    import diffusers

    path = _check_readable(path, allow_pickle)
    detected = detected or detect(path, allow_pickle)
    if detected.kind != "checkpoint" or detected.family not in PIPELINE_CLASSES:
        raise UnsupportedModel(f"'{path.name}' is a {detected.family} {detected.kind}, not a Stable Diffusion checkpoint that can be loaded as a pipeline.")
    shapes = read_tensor_shapes(path, allow_pickle)
    folder = config_folder(derive_configs(shapes, detected), cache_dir)
    pipeline_class = getattr(diffusers, PIPELINE_CLASSES[detected.family])
    extra = {}
    if detected.family.startswith("sdxl"):
        text_encoder_2 = _text_encoder_2_if_ambiguous(path, shapes, folder, torch_dtype, allow_pickle)
        if text_encoder_2 is not None:
            extra["text_encoder_2"] = text_encoder_2
    try:
        return pipeline_class.from_single_file(str(path), config=str(folder), local_files_only=True, dtype=torch_dtype, **extra)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UnsupportedModel(f"'{path.name}' could not be loaded as a {detected.family} checkpoint ({exc}).") from exc


def load_vae_file(path: Path, cache_dir: Path, family: str = "sd1", torch_dtype=torch.float32, allow_pickle: bool = False):
    """An `AutoencoderKL` from a standalone VAE file (`models/VAE`), bare or LDM layout.

    VAE files look the same for every family, so `family` (of the checkpoint it will serve)
    picks the latent scaling factor.
    """
    from diffusers import AutoencoderKL

    path = _check_readable(path, allow_pickle)
    shapes = read_tensor_shapes(path, allow_pickle)
    prefix = vae_prefix(shapes)
    if prefix is None:
        raise UnsupportedModel(f"'{path.name}' is not a VAE: it has no encoder and decoder weights.")
    vae = infer_vae(shapes, standard_configs(family)["vae"], prefix)
    folder = Path(cache_dir) / "single-file-configs" / ("vae-" + hashlib.sha256(json.dumps(vae, sort_keys=True).encode()).hexdigest()[:16])
    if not (folder / "vae" / "config.json").exists():
        write_text_atomic(folder / "vae" / "config.json", json.dumps(vae, indent=2))
    try:
        return AutoencoderKL.from_single_file(str(path), config=str(folder), subfolder="vae", local_files_only=True, dtype=torch_dtype)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UnsupportedModel(f"'{path.name}' could not be loaded as a VAE ({exc}).") from exc


# ---------------------------------------------------------------------------------------------
# Writing: diffusers -> LDM single-file layout

RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
RESNET_VAE = {"conv_shortcut": "nin_shortcut"}
ATTENTION_VAE = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_inner(rest: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def _apply_prefix_map(state: dict[str, torch.Tensor], pairs: list[tuple[str, str, dict]], what: str) -> dict[str, torch.Tensor]:
    """Rename every key by its (diffusers prefix -> LDM prefix, inner renames) pair; all keys must map."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new, inner in pairs:
            if key.startswith(old + "."):
                out[new + "." + _rename_inner(key[len(old) + 1:], inner)] = value
                break
        else:
            raise UnsupportedModel(f"The {what} weight '{key}' has no place in the single-file layout.")
    return out


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    cfg = unet.config
    per = cfg.layers_per_block
    pairs: list[tuple[str, str, dict]] = [
        ("time_embedding.linear_1", "time_embed.0", {}), ("time_embedding.linear_2", "time_embed.2", {}),
        ("conv_in", "input_blocks.0.0", {}), ("conv_norm_out", "out.0", {}), ("conv_out", "out.2", {}),
        ("add_embedding.linear_1", "label_emb.0.0", {}), ("add_embedding.linear_2", "label_emb.0.2", {}),
        ("mid_block.resnets.0", "middle_block.0", RESNET_UNET), ("mid_block.attentions.0", "middle_block.1", {}),
        ("mid_block.resnets.1", "middle_block.2", RESNET_UNET),
    ]
    for b, block in enumerate(unet.down_blocks):
        for i in range(per):
            n = 1 + b * (per + 1) + i
            pairs += [(f"down_blocks.{b}.resnets.{i}", f"input_blocks.{n}.0", RESNET_UNET),
                      (f"down_blocks.{b}.attentions.{i}", f"input_blocks.{n}.1", {})]
        pairs.append((f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{1 + b * (per + 1) + per}.0.op", {}))
    for b, block in enumerate(unet.up_blocks):
        for i in range(per + 1):
            n = b * (per + 1) + i
            pairs += [(f"up_blocks.{b}.resnets.{i}", f"output_blocks.{n}.0", RESNET_UNET),
                      (f"up_blocks.{b}.attentions.{i}", f"output_blocks.{n}.1", {})]
        has_attention = getattr(block, "attentions", None) is not None
        pairs.append((f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{b * (per + 1) + per}.{2 if has_attention else 1}.conv", {}))
    return _apply_prefix_map(unet.state_dict(), pairs, "UNet")


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    pairs: list[tuple[str, str, dict]] = [("quant_conv", "quant_conv", {}), ("post_quant_conv", "post_quant_conv", {})]
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.conv_in", f"{part}.conv_in", {}), (f"{part}.conv_out", f"{part}.conv_out", {}),
                  (f"{part}.conv_norm_out", f"{part}.norm_out", {}),
                  (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", ATTENTION_VAE)]
        pairs += [(f"{part}.mid_block.resnets.{k}", f"{part}.mid.block_{k + 1}", RESNET_VAE) for k in range(2)]
    for i in range(levels):
        up = levels - 1 - i  # LDM numbers decoder levels from the bottom up
        pairs += [(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", RESNET_VAE)
                  for j in range(len(vae.encoder.down_blocks[i].resnets))]
        pairs += [(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{up}.block.{j}", RESNET_VAE)
                  for j in range(len(vae.decoder.up_blocks[i].resnets))]
        pairs += [(f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", {}),
                  (f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{up}.upsample.conv", {})]
    out = _apply_prefix_map(vae.state_dict(), pairs, "VAE")
    # The LDM VAE attention uses 1x1 convolutions where diffusers uses linear layers.
    return {k: (v[:, :, None, None] if ".mid.attn_1." in k and v.ndim == 2 else v) for k, v in out.items()}


def clip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    """transformers CLIP keys with the `text_model.` prefix (transformers 5.x saves them without it)."""
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
            for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}


def open_clip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    """transformers CLIP -> open_clip layout: fused q/k/v (`in_proj_*`), `resblocks`, `ln_*`, `c_fc`/`c_proj`."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}
    out = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in state:
        out["text_projection"] = state.pop("text_projection.weight").T.contiguous()
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
    for i in range(text_encoder.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([state.pop(src + f"self_attn.{x}_proj.{kind}") for x in "qkv"])
            for old, new in names.items():
                out[dst + f"{new}.{kind}"] = state.pop(src + f"{old}.{kind}")
    if state:
        raise UnsupportedModel(f"The text-encoder weight '{next(iter(state))}' has no place in the open_clip layout.")
    return out


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def to_single_file_state_dict(pipe) -> dict[str, torch.Tensor]:
    """A pipeline's weights in the A1111/LDM single-file layout (SD1, SD2, SDXL, refiner, inpaint)."""
    state = _prefixed(UNET, unet_to_ldm(pipe.unet)) | _prefixed("first_stage_model.", vae_to_ldm(pipe.vae))
    text_1 = getattr(pipe, "text_encoder", None)
    text_2 = getattr(pipe, "text_encoder_2", None)
    if hasattr(pipe, "text_encoder_2"):  # SDXL: embedder 0 is CLIP-L when present, the open_clip one follows
        if text_1 is not None:
            state |= _prefixed(SDXL_TEXT + "0.transformer.", clip_to_ldm(text_1))
        if text_2 is not None:
            state |= _prefixed(f"{SDXL_TEXT}{1 if text_1 is not None else 0}.model.", open_clip_to_ldm(text_2))
    elif text_1 is not None:
        if text_1.config.hidden_act == "quick_gelu":  # OpenAI CLIP (SD1); SD2's OpenCLIP uses gelu
            state |= _prefixed(SD1_TEXT, clip_to_ldm(text_1))
        else:
            state |= _prefixed(SD2_TEXT, open_clip_to_ldm(text_1))
    if pipe.scheduler.config.get("prediction_type") == "v_prediction":
        state[V_PRED_KEY] = torch.tensor([])  # the marker ComfyUI writes for v-prediction models
    return {k: v.detach().contiguous() for k, v in state.items()}


def save_single_file(pipe, path: Path) -> Path:
    """Write the pipeline as one `.safetensors` (or pickled `.ckpt`) file, atomically."""
    path = Path(path)
    state = to_single_file_state_dict(pipe)
    with atomic_path(path) as tmp:
        if is_pickle(path):
            torch.save({"state_dict": state}, tmp)
        else:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt"})
    return path


# ---------------------------------------------------------------------------------------------
# ControlNet: A1111 single files (`control_model.*`, the LDM layout) <-> diffusers

def _controlnet_pairs(config: dict) -> list[tuple[str, str, dict]]:
    """(diffusers prefix, LDM prefix, inner renames) for every part of a ControlNet with this config.

    A ControlNet is a UNet encoder (named as in the UNet), plus zero convolutions after each
    encoder output (`zero_convs`) and the middle block (`middle_block_out`), plus the hint encoder
    that turns the control map into a latent-sized feature (`input_hint_block`, a Sequential whose
    convolutions sit at the even indices, with activations between).
    """
    per = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    hint_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    pairs: list[tuple[str, str, dict]] = [
        ("time_embedding.linear_1", "time_embed.0", {}), ("time_embedding.linear_2", "time_embed.2", {}),
        ("add_embedding.linear_1", "label_emb.0.0", {}), ("add_embedding.linear_2", "label_emb.0.2", {}),
        ("conv_in", "input_blocks.0.0", {}),
        ("mid_block.resnets.0", "middle_block.0", RESNET_UNET), ("mid_block.attentions.0", "middle_block.1", {}),
        ("mid_block.resnets.1", "middle_block.2", RESNET_UNET),
        ("controlnet_mid_block", "middle_block_out.0", {}),
        ("controlnet_cond_embedding.conv_in", "input_hint_block.0", {}),
        ("controlnet_cond_embedding.conv_out", f"input_hint_block.{2 * (hint_blocks + 1)}", {}),
    ]
    pairs += [(f"controlnet_cond_embedding.blocks.{j}", f"input_hint_block.{2 * (j + 1)}", {}) for j in range(hint_blocks)]
    for b in range(levels):
        for i in range(per):
            n = 1 + b * (per + 1) + i
            pairs += [(f"down_blocks.{b}.resnets.{i}", f"input_blocks.{n}.0", RESNET_UNET),
                      (f"down_blocks.{b}.attentions.{i}", f"input_blocks.{n}.1", {})]
        pairs.append((f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{1 + b * (per + 1) + per}.0.op", {}))
    outputs = 1 + levels * (per + 1) - 1  # one zero convolution per encoder output, the input conv's included
    pairs += [(f"controlnet_down_blocks.{i}", f"zero_convs.{i}.0", {}) for i in range(outputs)]
    return pairs


def controlnet_to_ldm(controlnet) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel's weights under A1111's `control_model.` names."""
    state = _apply_prefix_map(controlnet.state_dict(), _controlnet_pairs(dict(controlnet.config)), "ControlNet")
    return {CONTROL + k: v.detach().contiguous() for k, v in state.items()}


def save_controlnet_file(controlnet, path: Path) -> Path:
    """Write a ControlNet as an A1111-style `control_*.safetensors` file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(controlnet_to_ldm(controlnet), str(tmp), metadata={"format": "pt"})
    return path


def _ldm_to_diffusers(state: dict[str, torch.Tensor], pairs: list[tuple[str, str, dict]]) -> dict[str, torch.Tensor]:
    """The inverse of `_apply_prefix_map`: LDM names back to diffusers names."""
    inverse = [(ldm, diffusers, {v: k for k, v in inner.items()}) for diffusers, ldm, inner in pairs]
    return _apply_prefix_map(state, inverse, "ControlNet")


def infer_controlnet(shapes: Shapes, family: str, base_unet: dict | None = None) -> dict:
    """A ControlNetModel config from the tensor shapes of an LDM ControlNet (keys without `control_model.`).

    `base_unet` (the checkpoint's UNet config) supplies what the shapes cannot show, such as
    SDXL's time-embedding width; without it the family's standard is used.
    """
    base = base_unet or standard_configs(family)["unet"]
    inputs = count_children(shapes, "input_blocks.")
    ops = sorted(i for i in range(inputs) if f"input_blocks.{i}.0.op.weight" in shapes)
    per = ops[0] - 1 if ops else inputs - 1
    levels = len(ops) + 1
    channels = [require_shape(shapes, f"input_blocks.{1 + level * (per + 1)}.0.out_layers.3.weight")[0] for level in range(levels)]
    depths = [count_children(shapes, f"input_blocks.{1 + level * (per + 1)}.1.transformer_blocks.") for level in range(levels)]
    mid_depth = count_children(shapes, "middle_block.1.transformer_blocks.") or 1
    to_k, proj_in = first_shape(shapes, "", "attn2.to_k.weight"), first_shape(shapes, "", "proj_in.weight")
    if to_k is None or proj_in is None:
        raise UnsupportedModel("The ControlNet has no cross-attention, so it is not a Stable Diffusion ControlNet.")
    hint_convs = sorted(int(k.split(".")[1]) for k in shapes if k.startswith("input_hint_block.") and k.endswith(".weight"))
    hint_out = [require_shape(shapes, f"input_hint_block.{i}.weight")[0] for i in hint_convs]
    config = {
        "_class_name": "ControlNetModel",
        "in_channels": require_shape(shapes, "input_blocks.0.0.weight")[1],
        "conditioning_channels": require_shape(shapes, "input_hint_block.0.weight")[1],
        "block_out_channels": channels, "layers_per_block": per,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "transformer_layers_per_block": transformer_depths(depths, mid_depth),
        "cross_attention_dim": to_k[1], "use_linear_projection": len(proj_in) == 2,
        "attention_head_dim": SD1_UNET_HEADS if family.startswith("sd1") else [c // HEAD_WIDTH for c in channels],
        # conv_in, then each strided block convolution (every second one) sets the next width
        "conditioning_embedding_out_channels": hint_out[:-1:2],
        "norm_num_groups": base.get("norm_num_groups", 32),
    }
    label = shapes.get("label_emb.0.0.weight")
    if label is not None:
        config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=label[1],
                      addition_time_embed_dim=base.get("addition_time_embed_dim", 256))
    return config


def load_controlnet_file(path: Path, family: str, torch_dtype=torch.float32, allow_pickle: bool = False,
                         base_unet: dict | None = None):
    """A diffusers ControlNetModel from an A1111-style single file, built offline (no config download)."""
    from diffusers import ControlNetModel

    path = _check_readable(path, allow_pickle)
    tensors = read_tensors(path, "", allow_pickle)
    prefix = CONTROL if any(k.startswith(CONTROL) for k in tensors) else ""
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "input_hint_block.0.weight" not in state:
        raise UnsupportedModel(f"'{path.name}' is not an A1111-style ControlNet file (it has no `control_model.input_hint_block` weights).")
    config = infer_controlnet({k: tuple(v.shape) for k, v in state.items()}, family, base_unet)
    controlnet = ControlNetModel.from_config(config)
    try:
        controlnet.load_state_dict(_ldm_to_diffusers(state, _controlnet_pairs(config)), strict=True)
    except (RuntimeError, UnsupportedModel) as exc:
        raise UnsupportedModel(f"'{path.name}' could not be loaded as a {family} ControlNet ({str(exc).splitlines()[0]}).") from exc
    # nn.Module's own `to`: diffusers' override warns about fp32-kept modules, which ControlNets have none of
    return torch.nn.Module.to(controlnet, torch_dtype).eval()


def unet_config(info: ModelInfo) -> dict | None:
    """The UNet's config without loading the model: a diffusers folder's own, else its family's shipped one
    (a single file's layout follows its family); None for an unknown family."""
    own = Path(info.path) / "unet" / "config.json"
    shipped = CONFIG_ROOT / base_family(info.family) / "unet" / "config.json"
    path = own if own.is_file() else shipped
    return json.loads(path.read_text()) if path.is_file() else None
