"""A trained LoRA in the kohya layout (kohya-ss/sd-scripts `networks/lora.py`), the one A1111, Forge and ComfyUI load.

Keys: `<prefix>_<module path with '.' as '_'>.lora_down.weight` / `.lora_up.weight` / `.alpha`, where the prefix
is `lora_unet` for the UNet, `lora_te` for an SD1/SD2 text encoder and `lora_te1` / `lora_te2` for SDXL's two.
kohya trains SD1/SD2 on a UNet with diffusers' module names (`down_blocks_0_attentions_0_...`) and SDXL on the
original (sgm) UNet, so SDXL keys use its names (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`); text
encoder paths start with `text_model_` as in transformers 4. The `ss_*` metadata follows sd-scripts'
`train_network.py`; every value is a string, as safetensors requires.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import torch

from localdiffusion.train.base import BASE_MODEL_VERSION

_DOWN = re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.")
_UP = re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.")


def sgm_unet_path(path: str, layers_per_block: int) -> str:
    """A diffusers UNet attention module path as kohya's SDXL UNet names it (the inverse of diffusers'
    `_maybe_map_sgm_blocks_to_diffusers`)."""
    if m := _DOWN.match(path):
        block, layer = int(m.group(1)), int(m.group(2))
        return f"input_blocks.{1 + block * (layers_per_block + 1) + layer}.1." + path[m.end():]
    if m := _UP.match(path):
        block, layer = int(m.group(1)), int(m.group(2))
        return f"output_blocks.{block * (layers_per_block + 1) + layer}.1." + path[m.end():]
    if path.startswith("mid_block.attentions.0."):
        return "middle_block.1." + path.removeprefix("mid_block.attentions.0.")
    raise ValueError(f"no sgm name for the UNet module {path}")


def kohya_name(part: str, path: str, family: str, unet_config: dict | None = None) -> str:
    """The kohya LoRA module name for module `path` of `part` ('unet', 'text_encoder', 'text_encoder_2')."""
    if part == "unet":
        if family == "sdxl":
            layers = (unet_config or {}).get("layers_per_block", 2)
            path = sgm_unet_path(path, layers if isinstance(layers, int) else layers[0])
        return "lora_unet_" + path.replace(".", "_")
    prefix = "lora_te" if family != "sdxl" else ("lora_te1" if part == "text_encoder" else "lora_te2")
    if not path.startswith("text_model."):  # transformers 5 dropped the `text_model.` level kohya's names keep
        path = "text_model." + path
    return f"{prefix}_" + path.replace(".", "_")


def lora_modules(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module path -> (down, up) weights of every peft LoRA layer (adapter 'default') in `model`."""
    found = {}
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if lora_a is not None and "default" in lora_a:
            found[name] = (lora_a["default"].weight, lora_b["default"].weight)
    return found


def kohya_state_dict(parts: dict[str, torch.nn.Module], alpha: float, family: str) -> dict[str, torch.Tensor]:
    """The kohya state dict (float16, as sd-scripts saves by default) of the LoRA layers in these parts."""
    state: dict[str, torch.Tensor] = {}
    for part, model in parts.items():
        config = dict(model.config) if part == "unet" else None
        for path, (down, up) in lora_modules(model).items():
            key = kohya_name(part, path, family, config)
            state[f"{key}.lora_down.weight"] = down.detach().to("cpu", torch.float16).contiguous()
            state[f"{key}.lora_up.weight"] = up.detach().to("cpu", torch.float16).contiguous()
            state[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    return state


def tensors_hash(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sd-scripts' `sshs_model_hash`: the sha256 of the file's tensor data (after the header), which is what
    A1111 shows as the LoRA's hash (models/hashing.py `addnet_hash`) and what editing metadata leaves unchanged."""
    from safetensors.torch import save

    data = save(state, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header = 8 + int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[header:]).hexdigest()


def ss_metadata(*, family: str, base_name: str, base_sha256: str | None, base_legacy_hash: str | None, rank: int,
                alpha: float, steps: int, resolution: tuple[int, int], tag_frequency: dict[str, dict[str, int]],
                images: int, output_name: str, started_at: str, finished_at: str, learning_rate: float,
                min_snr_gamma: float | None, train_text_encoder: bool, seed: int, mixed_precision: str,
                batch_size: int, buckets: bool) -> dict[str, str]:
    """kohya's training metadata (`ss_*`), as sd-scripts' train_network.py writes it."""
    return {
        "ss_session_id": str(int(hashlib.sha256(f"{output_name} {started_at}".encode()).hexdigest()[:8], 16) % 2**31),
        "ss_training_started_at": started_at,
        "ss_training_finished_at": finished_at,
        "ss_output_name": output_name,
        "ss_learning_rate": str(learning_rate),
        "ss_unet_lr": str(learning_rate),
        "ss_text_encoder_lr": str(learning_rate) if train_text_encoder else "0.0",
        "ss_num_train_images": str(images),
        "ss_num_reg_images": "0",
        "ss_num_epochs": "1",
        "ss_epoch": "1",
        "ss_steps": str(steps),
        "ss_max_train_steps": str(steps),
        "ss_batch_size_per_device": str(batch_size),
        "ss_total_batch_size": str(batch_size),
        "ss_gradient_checkpointing": "True",
        "ss_gradient_accumulation_steps": "1",
        "ss_lr_scheduler": "constant",
        "ss_lr_warmup_steps": "0",
        "ss_optimizer": "torch.optim.AdamW",
        "ss_max_grad_norm": "1.0",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_train_unet_only": str(not train_text_encoder),
        "ss_mixed_precision": mixed_precision,
        "ss_full_fp16": "False",
        "ss_v2": str(family in ("sd2", "sd2-v")),
        "ss_v_parameterization": str(family == "sd2-v"),
        "ss_base_model_version": BASE_MODEL_VERSION[family],
        "ss_sd_model_name": base_name,
        "ss_sd_model_hash": base_legacy_hash or "",
        "ss_new_sd_model_hash": base_sha256 or "",
        "ss_clip_skip": "None",
        "ss_seed": str(seed),
        "ss_min_snr_gamma": str(min_snr_gamma) if min_snr_gamma else "None",
        "ss_noise_offset": "None",
        "ss_cache_latents": "True",
        "ss_caption_dropout_rate": "0.0",
        "ss_prior_loss_weight": "1.0",
        "ss_resolution": f"({resolution[0]}, {resolution[1]})",
        "ss_enable_bucket": str(buckets),
        "ss_tag_frequency": json.dumps(tag_frequency),
        "ss_dataset_dirs": json.dumps({name: {"n_repeats": 1, "img_count": images} for name in tag_frequency}),
        "ss_training_comment": "trained with Local Diffusion",
    }


def metadata_with_hash(state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> dict[str, str]:
    meta = {k: str(v) for k, v in metadata.items()}
    meta["sshs_model_hash"] = tensors_hash(state, meta)
    return meta
