"""ModelInfo: what the library knows about one model file or folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

Kind = Literal["checkpoint", "lora", "embedding", "vae", "controlnet", "upscaler", "ipadapter", "vae-approx", "text-encoder"]
# "vae-approx": TAESD, a tiny approximate VAE decoder (diffusers AutoencoderTiny), for previews and fast decoding;
# its family is "sd1" (TAESD, for SD1 and SD2 latents) or "sdxl" (TAESDXL).
# "text-encoder": a text encoder kept apart from its model (ComfyUI's models/clip or models/text_encoders, Forge's
# models/text_encoder), for SD3.5 and FLUX transformer-only files; its family is "clip" or "t5".
# Base families; inpaint variants are the base family with `inpaint=True` and a "-inpaint" suffix in `family`.
Family = Literal[
    "sd1", "sd2", "sd2-v", "sdxl", "sdxl-refiner",
    "sd1-inpaint", "sd2-inpaint", "sdxl-inpaint",
    "sd3", "flux",  # flow-matching transformers: Stable Diffusion 3/3.5, FLUX.1 (dev and schnell)
    "clip", "t5",  # text encoders kept apart (kind "text-encoder")
    "unknown",
]
Format = Literal["diffusers", "safetensors", "ckpt"]

# The pixel size each family was trained at; width and height default to it.
NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024, "sdxl-refiner": 1024, "sd3": 1024, "flux": 1024}
FLOW_FAMILIES = ("sd3", "flux")  # sampled by flow matching (engine/flow.py)


def base_family(family: str) -> str:
    """'sd1-inpaint' -> 'sd1'; other families are their own base."""
    return family.removesuffix("-inpaint")


class ModelInfo(BaseModel):
    """One model as the library sees it."""

    model_config = ConfigDict(extra="forbid")

    name: str  # what users type, unique within its kind: the file name without extension, or the folder name (see library.name_models)
    path: Path
    kind: Kind
    family: Family = "unknown"
    format: Format
    short_hash: str | None = None  # A1111's: the first 10 hex digits of the file's sha256
    sha256: str | None = None
    size: int = 0  # bytes on disk
    prediction_type: Literal["epsilon", "v_prediction"] | None = None

    @property
    def inpaint(self) -> bool:
        return self.family.endswith("-inpaint")

    @property
    def native_size(self) -> int:
        return NATIVE_SIZE.get(base_family(self.family), 512)
