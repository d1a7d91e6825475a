"""Tell what a model file or folder is, from its tensors and configs only (never its name, except TAESD's
family: see `taesd_family`).

Single files are judged by their tensor names and shapes, read from the header without loading
weights. The one exception is SD2: whether an SD2 checkpoint predicts v or epsilon is not visible
in its shapes, so (like A1111) we run its UNet once on a fixed input, lazily and only for SD2
files that carry no `v_pred` marker key. The tiny random-weight test models carry that marker
(ComfyUI writes it too), because the heuristic only means something for trained weights.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from localdiffusion.errors import UnsupportedModel
from localdiffusion.models.architecture import unet_from_tensors
from localdiffusion.models.keys import (
    CONTROL,
    FAMILY_BY_CROSS_WIDTH,
    FAMILY_BY_TEXT_WIDTH,
    SD1_TEXT,
    SD2_TEXT,
    SDXL_TEXT,
    UNET,
    V_PRED_KEY,
    Shapes,
    first_shape,
    flow_transformer,
    has_prefix,
    text_encoder_family,
    vae_prefix,
)

DetectedKind = Literal["checkpoint", "lora", "embedding", "vae", "controlnet", "ipadapter", "vae-approx", "text-encoder"]
PredictionType = Literal["epsilon", "v_prediction"]

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Detected:
    kind: DetectedKind
    family: str  # a models.info.Family value
    format: Literal["diffusers", "safetensors", "ckpt"]
    prediction_type: PredictionType | None = None


def pickle_refused(path: Path) -> UnsupportedModel:
    return UnsupportedModel(
        f"'{path.name}' is a pickled model file, and pickles can run code when loaded, so it is refused unless you "
        "opt in with \"allow_pickle\": true in settings.json (or --allow-pickle when generating)."
    )


def is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


# ---------------------------------------------------------------------------------------------
# Reading tensors


def _safetensors_header(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        return header
    except RecursionError:  # JSON nested deeper than the parser's stack: no real header is
        raise UnsupportedModel(f"'{path.name}' is not a readable .safetensors file (its header is nested too deeply).") from None
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise UnsupportedModel(f"'{path.name}' is not a readable .safetensors file ({exc}).") from exc


def _flatten(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors (A1111 embeddings keep theirs under 'string_to_param') to dotted keys."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            flat[prefix + str(key)] = value
        elif isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        try:
            tree = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            tree = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure means the file cannot be used
        raise UnsupportedModel(f"'{path.name}' cannot be read as a PyTorch checkpoint ({type(exc).__name__}).") from exc
    while isinstance(tree, dict) and isinstance(tree.get("state_dict"), dict):
        tree = tree["state_dict"]
    if not isinstance(tree, dict):
        raise UnsupportedModel(f"'{path.name}' holds no tensors that a Stable Diffusion model would have.")
    return _flatten(tree)


def read_tensor_shapes(path: Path, allow_pickle: bool = False) -> Shapes:
    """Tensor name -> shape, without loading weights (safetensors) or with memory-mapping (pickles)."""
    path = Path(path)
    if is_pickle(path):
        if not allow_pickle:
            raise pickle_refused(path)
        return {k: tuple(v.shape) for k, v in _load_pickle(path).items()}
    header = _safetensors_header(path)
    try:
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (TypeError, KeyError) as exc:
        raise UnsupportedModel(f"'{path.name}' has a malformed .safetensors header.") from exc


def read_tensors(path: Path, prefix: str = "", allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix` (all when empty), on the CPU."""
    path = Path(path)
    if is_pickle(path):
        if not allow_pickle:
            raise pickle_refused(path)
        return {k: v for k, v in _load_pickle(path).items() if k.startswith(prefix)}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# Shape helpers


def _structural_family(shapes: Shapes, prefix: str) -> str:
    """SD1 vs SD2 vs SDXL from the UNet's own layout, when widths are not the standard ones.

    SDXL has the text-time embedding (`label_emb`/`add_embedding`); SD1 projects into its
    transformers with 1x1 convolutions, SD2 with linear layers.
    """
    if has_prefix(shapes, prefix + "label_emb.") or has_prefix(shapes, prefix + "add_embedding."):
        return "sdxl"
    proj_in = first_shape(shapes, prefix, "proj_in.weight")
    if proj_in is None:
        return "unknown"
    return "sd1" if len(proj_in) == 4 else "sd2"


def _width_family(shapes: Shapes, prefix: str) -> str | None:
    to_k = first_shape(shapes, prefix, "attn2.to_k.weight")
    return FAMILY_BY_CROSS_WIDTH.get(to_k[-1]) if to_k else None


# ---------------------------------------------------------------------------------------------
# Single files


def _checkpoint_base_family(shapes: Shapes) -> str:
    if has_prefix(shapes, SDXL_TEXT):
        has_clip_l = has_prefix(shapes, SDXL_TEXT + "0.transformer.")
        refiner = has_prefix(shapes, SDXL_TEXT + "0.model.") and not has_clip_l
        return "sdxl-refiner" if refiner else "sdxl"
    if has_prefix(shapes, SD1_TEXT):
        return "sd1"
    if has_prefix(shapes, SD2_TEXT):
        return "sd2"
    family = _width_family(shapes, UNET) or _structural_family(shapes, UNET)
    if family == "unknown":
        raise UnsupportedModel("The checkpoint's UNet matches no Stable Diffusion family (SD1, SD2 or SDXL).")
    return family


def _checkpoint(shapes: Shapes, path: Path, fmt: str, allow_pickle: bool) -> Detected:
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None or len(conv_in) != 4:
        raise UnsupportedModel(f"'{path.name}' has a UNet without the input convolution a Stable Diffusion model has.")
    try:
        family = _checkpoint_base_family(shapes)
    except UnsupportedModel as exc:
        raise UnsupportedModel(f"'{path.name}': {exc}") from exc
    inpaint = conv_in[1] == 9
    if V_PRED_KEY in shapes:
        prediction: PredictionType = "v_prediction"
    elif family == "sd2" and not inpaint and sd2_uses_v_prediction(path, shapes, allow_pickle):
        prediction = "v_prediction"
    else:
        prediction = "epsilon"
    if family == "sd2" and prediction == "v_prediction" and not inpaint:
        family = "sd2-v"
    if inpaint:
        family = f"{family}-inpaint" if family in ("sd1", "sd2", "sdxl") else family
    return Detected("checkpoint", family, fmt, prediction)  # type: ignore[arg-type]


# LoRAs for the flow-matching transformers: kohya's and ComfyUI's names for the original blocks, diffusers'.
FLOW_LORA_WORDS = {"flux": ("double_blocks", "single_blocks", "single_transformer_blocks"), "sd3": ("joint_blocks",)}


def _flow_lora_family(keys: list[str], shapes: Shapes | None = None) -> str | None:
    for family, words in FLOW_LORA_WORDS.items():
        if any(w in k for k in keys for w in words):
            return family
    joint = [k for k in keys if k.startswith(("transformer.transformer_blocks.", "transformer_blocks."))]
    if joint:  # diffusers' joint blocks without FLUX's single blocks: SD3, unless as wide as FLUX (3072)
        width = first_shape({k: shapes[k] for k in joint}, "", "lora_A.weight") if shapes else None
        return "flux" if width and width[-1] == 3072 else "sd3"
    return None


def _lora_family(shapes: Shapes) -> str:
    keys = list(shapes)
    flow = _flow_lora_family(keys, shapes)
    if flow is not None:
        return flow
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl"
    for suffix in ("attn2_to_k.lora_down.weight", "attn2.to_k.lora_A.weight", "attn2.to_k.lora.down.weight",
                   "attn2.to_k.lora_down.weight"):
        shape = first_shape(shapes, "", suffix)
        if shape and shape[-1] in FAMILY_BY_CROSS_WIDTH:
            return FAMILY_BY_CROSS_WIDTH[shape[-1]]
    for suffix in ("q_proj.lora_down.weight", "q_proj.lora_A.weight", "q_proj.lora.down.weight"):
        shape = first_shape(shapes, "", suffix)
        if shape and shape[-1] in FAMILY_BY_TEXT_WIDTH:
            return FAMILY_BY_TEXT_WIDTH[shape[-1]]
    return "unknown"


def _is_lora(shapes: Shapes) -> bool:
    markers = (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.")
    return any(m in k for k in shapes for m in markers)


def _embedding_family(shapes: Shapes) -> str:
    if "clip_l" in shapes and "clip_g" in shapes:
        return "sdxl"
    vectors = shapes.get("emb_params") or first_shape(shapes, "string_to_param.", "")
    return FAMILY_BY_TEXT_WIDTH.get(vectors[-1], "unknown") if vectors else "unknown"


def _is_embedding(shapes: Shapes) -> bool:
    return "emb_params" in shapes or has_prefix(shapes, "string_to_param.") or ("clip_l" in shapes and "clip_g" in shapes)


def _controlnet_prefix(shapes: Shapes) -> str | None:
    if has_prefix(shapes, CONTROL):
        return CONTROL
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        return ""
    return None


def is_ip_adapter(shapes: Shapes) -> bool:
    return has_prefix(shapes, "image_proj.") and has_prefix(shapes, "ip_adapter.")


def ip_adapter_family(shapes: Shapes) -> str:
    """The family an IP-Adapter was made for: its image keys project into the UNet's cross-attention width."""
    to_k = first_shape(shapes, "ip_adapter.", "to_k_ip.weight")
    return FAMILY_BY_CROSS_WIDTH.get(to_k[-1], "unknown") if to_k else "unknown"


# TAESD (diffusers AutoencoderTiny) in a single file: diffusers' layout (`decoder.layers.N.*`, with or without
# `encoder.layers.N.*`) or madebyollin's original decoder (`taesd_decoder.*`: a Sequential whose first layer,
# a clamp, has no weights, so its first convolution is `1.weight`, from the latent channels).
TAESD_DECODER = "decoder.layers."


def taesd_layout(shapes: Shapes) -> str | None:
    """'diffusers', 'decoder' (the original decoder file), 'encoder' (the original encoder file) or None."""
    first = shapes.get(TAESD_DECODER + "0.weight")
    if first is not None and len(first) == 4 and all(k.startswith(("decoder.layers.", "encoder.layers.")) for k in shapes):
        return "diffusers"
    if not shapes or not all(k.split(".", 1)[0].isdigit() for k in shapes):
        return None
    if "1.weight" in shapes and len(shapes["1.weight"]) == 4 and first_shape(shapes, "3.", "conv.0.weight"):
        return "decoder"
    if "0.weight" in shapes and len(shapes["0.weight"]) == 4 and shapes["0.weight"][1] == 3 and "1.conv.0.weight" in shapes:
        return "encoder"
    return None


def taesd_latent_channels(shapes: Shapes) -> int:
    first = shapes.get(TAESD_DECODER + "0.weight") or shapes.get("1.weight") or (0, 0)
    return first[1]


def taesd_family(path: Path, latent_channels: int = 4) -> str:
    """TAESD's family. TAESD (SD1 and SD2 latents) and TAESDXL share one architecture and differ in their
    trained weights only, so, as A1111 does (`taesd_decoder` / `taesdxl_decoder`), the name tells them apart:
    'xl' in the file or folder name means SDXL. Versions for other latent spaces (SD3, FLUX: 16 channels) are
    refused."""
    if latent_channels != 4:
        raise UnsupportedModel(f"'{path.name}' is a TAESD for {latent_channels}-channel latents (SD3 or FLUX), which "
                               "this studio does not run; use taesd (SD1, SD2) or taesdxl (SDXL).")
    return "sdxl" if "xl" in path.name.lower() else "sd1"


def detect_shapes(shapes: Shapes, path: Path, fmt: str, allow_pickle: bool = False) -> Detected:
    """What a single file is, given its tensor shapes (see `detect`)."""
    layout = taesd_layout(shapes)
    if layout == "encoder":
        raise UnsupportedModel(f"'{path.name}' is TAESD's encoder only; previews and fast decoding need its decoder "
                               "(taesd_decoder or the diffusers folder).")
    if layout is not None:
        return Detected("vae-approx", taesd_family(path, taesd_latent_channels(shapes)), fmt)  # type: ignore[arg-type]
    flow = flow_transformer(shapes)
    if flow is not None:  # SD3/3.5 or FLUX: the transformer alone, or all-in-one
        return Detected("checkpoint", flow[0], fmt)  # type: ignore[arg-type]
    if has_prefix(shapes, UNET):
        return _checkpoint(shapes, path, fmt, allow_pickle)
    if is_ip_adapter(shapes):
        return Detected("ipadapter", ip_adapter_family(shapes), fmt)  # type: ignore[arg-type]
    control = _controlnet_prefix(shapes)
    if control is not None:
        family = _width_family(shapes, control) or _structural_family(shapes, control)
        return Detected("controlnet", family, fmt)  # type: ignore[arg-type]
    if _is_lora(shapes):
        return Detected("lora", _lora_family(shapes), fmt)  # type: ignore[arg-type]
    if _is_embedding(shapes):
        return Detected("embedding", _embedding_family(shapes), fmt)  # type: ignore[arg-type]
    text = text_encoder_family(shapes)
    if text is not None:  # CLIP-L, CLIP-G or T5 kept apart, for SD3.5 and FLUX (models/flow.py picks by widths)
        return Detected("text-encoder", text, fmt)  # type: ignore[arg-type]
    if vae_prefix(shapes) is not None:
        # SD1, SD2 and SDXL VAEs share one architecture, so the family cannot be told.
        return Detected("vae", "unknown", fmt)  # type: ignore[arg-type]
    raise UnsupportedModel(
        f"'{path.name}' is not a Stable Diffusion checkpoint, LoRA, embedding, VAE, ControlNet, IP-Adapter or text encoder."
    )


def sd2_uses_v_prediction(path: Path, shapes: Shapes, allow_pickle: bool = False) -> bool:
    """A1111's `is_using_v_parameterization_for_sd2`, on a diffusers UNet built from the file's shapes.

    A v-model's output at t=999 for a constant input sits far below the input (mean difference
    under -1); an epsilon model's does not. Ported from AUTOMATIC1111/stable-diffusion-webui
    (modules/sd_models_config.py).
    """
    unet = unet_from_tensors(read_tensors(path, UNET, allow_pickle), shapes, family="sd2")
    with torch.no_grad():
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5)
        context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5)
        out = unet(x, torch.tensor([999]), encoder_hidden_states=context).sample
    return (out - x).mean().item() < -1


# ---------------------------------------------------------------------------------------------
# Diffusers folders


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise UnsupportedModel(f"'{path}' is not a readable JSON config (it is nested too deeply).") from None
    except (OSError, ValueError) as exc:
        raise UnsupportedModel(f"'{path}' is not a readable JSON config ({exc}).") from exc


def _folder_family(folder: Path, index: dict) -> tuple[str, PredictionType]:
    unet = _read_json(folder / "unet" / "config.json")
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler = _read_json(scheduler_file) if scheduler_file.exists() else {}
    prediction: PredictionType = scheduler.get("prediction_type") or "epsilon"
    has_text_1 = (index.get("text_encoder") or [None])[0] is not None
    if unet.get("addition_embed_type") == "text_time":
        family = "sdxl" if has_text_1 else "sdxl-refiner"
    else:
        text = _read_json(folder / "text_encoder" / "config.json") if has_text_1 else {}
        act = text.get("hidden_act")
        family = {"quick_gelu": "sd1", "gelu": "sd2"}.get(act or "") or FAMILY_BY_CROSS_WIDTH.get(
            unet.get("cross_attention_dim"), "sd2" if unet.get("use_linear_projection") else "sd1"
        )
        if family == "sd2" and prediction == "v_prediction" and unet.get("in_channels") != 9:
            family = "sd2-v"
    if unet.get("in_channels") == 9 and family in ("sd1", "sd2", "sdxl"):
        family += "-inpaint"
    return family, prediction


FLOW_PIPELINES = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}


def _detect_folder(folder: Path) -> Detected:
    if (folder / "model_index.json").exists():
        index = _read_json(folder / "model_index.json")
        flow = FLOW_PIPELINES.get(index.get("_class_name", ""))
        if flow is not None:
            if not (folder / "transformer" / "config.json").exists():
                raise UnsupportedModel(f"The diffusers folder '{folder.name}' has no transformer, so it is not a whole {flow} model.")
            return Detected("checkpoint", flow, "diffusers")
        if not (folder / "unet" / "config.json").exists():
            raise UnsupportedModel(f"The diffusers folder '{folder.name}' has no UNet, so it is not a Stable Diffusion model.")
        family, prediction = _folder_family(folder, index)
        return Detected("checkpoint", family, "diffusers", prediction)  # type: ignore[arg-type]
    if (folder / "config.json").exists():
        config = _read_json(folder / "config.json")
        name = config.get("_class_name")
        if name == "ControlNetModel":
            if config.get("addition_embed_type") == "text_time":
                family = "sdxl"
            else:
                family = FAMILY_BY_CROSS_WIDTH.get(config.get("cross_attention_dim"), "sd2" if config.get("use_linear_projection") else "sd1")
            return Detected("controlnet", family, "diffusers")  # type: ignore[arg-type]
        if name == "AutoencoderKL":
            return Detected("vae", "unknown", "diffusers")
        if name == "AutoencoderTiny":
            return Detected("vae-approx", taesd_family(folder, config.get("latent_channels", 4)), "diffusers")  # type: ignore[arg-type]
    raise UnsupportedModel(f"The folder '{folder.name}' is not a diffusers Stable Diffusion model, ControlNet, VAE or TAESD.")


def detect(path: Path, allow_pickle: bool = False) -> Detected:
    """What a model file or diffusers folder is: kind, family, format and prediction type."""
    path = Path(path)
    if path.is_dir():
        return _detect_folder(path)
    if not path.is_file():
        raise UnsupportedModel(f"'{path}' does not exist or is not a file.")
    fmt = "ckpt" if is_pickle(path) else "safetensors"
    if not is_pickle(path) and path.suffix.lower() != ".safetensors":
        # Content decides, not the name, but only these two containers can hold weights.
        try:
            shapes = read_tensor_shapes(path)
        except UnsupportedModel:
            raise UnsupportedModel(f"'{path.name}' is neither a .safetensors file nor an allowed pickle (.ckpt, .pt, .pth, .bin).") from None
    else:
        shapes = read_tensor_shapes(path, allow_pickle)
    if not shapes:
        raise UnsupportedModel(f"'{path.name}' holds no tensors.")
    return detect_shapes(shapes, path, fmt, allow_pickle)
