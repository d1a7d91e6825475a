"""Load LoRA files (kohya/A1111 or diffusers/peft format) into a pipeline as named adapters."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from localdiffusion.errors import UnsupportedModel

# diffusers converts a kohya text-encoder LoRA to its old `to_q_lora` naming, and then recognises
# that naming only when output projections are present; files that adapt only q/v (common) fail.
# Renaming to the `q_proj.lora_linear_layer` form, which diffusers takes as-is, loads them all.
_OLD_TEXT_KEY = re.compile(r"\.to_(q|k|v|out)_lora\.")


def _text_key(key: str) -> str:
    if not key.startswith("text_encoder"):
        return key
    return _OLD_TEXT_KEY.sub(lambda m: f".{'out' if m.group(1) == 'out' else m.group(1)}_proj.lora_linear_layer.", key)


def load_lora(pipe: Any, path: Path, adapter_name: str, model_name: str) -> None:
    """Load one LoRA file as `adapter_name`; a file that does not fit the model is refused in one sentence."""
    try:
        if getattr(pipe, "transformer", None) is not None:
            # SD3.5 and FLUX: diffusers' own loader reads their layouts (peft/diffusers `transformer.*`, kohya
            # `lora_unet_*`, ComfyUI `diffusion_model.*`, ...) through its lora_conversion_utils
            pipe.load_lora_weights(str(path), adapter_name=adapter_name)
            return
        # kohya's SDXL LoRAs name the original (sgm) UNet's blocks; diffusers maps them only given the UNet's config
        state_dict, alphas = pipe.lora_state_dict(str(path), unet_config=pipe.unet.config)
        state_dict = {_text_key(k): v for k, v in state_dict.items()}
        alphas = {_text_key(k): v for k, v in alphas.items()} if alphas else alphas
        pipe.load_lora_weights(state_dict, network_alphas=alphas, adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError) as e:
        if adapter_name in _adapter_names(pipe):
            pipe.delete_adapters(adapter_name)
        raise UnsupportedModel(
            f"The LoRA '{Path(path).stem}' does not fit the model '{model_name}' ({str(e).splitlines()[0][:160]}); "
            "use a LoRA made for this model's family."
        ) from e


def _adapter_names(pipe: Any) -> set[str]:
    try:
        return {name for names in pipe.get_list_adapters().values() for name in names}
    except (AttributeError, ValueError):
        return set()
