"""Load ControlNets (diffusers folders or A1111-style single files) offline, and check they fit a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from localdiffusion.errors import BadInput, UnsupportedModel
from localdiffusion.models.info import ModelInfo, base_family

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sd2-v": "SD 2.x", "sdxl": "SDXL", "sdxl-refiner": "SDXL refiner"}
# ControlNets are trained for a UNet architecture: SD2 and SD2-v share one.
_ARCHITECTURE = {"sd2-v": "sd2"}


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(base_family(family), family)


def fits(control_family: str, checkpoint_family: str) -> bool:
    """Whether a ControlNet of this family can steer a checkpoint of that one (unknown: let it try)."""
    control, checkpoint = (_ARCHITECTURE.get(f, f) for f in (base_family(control_family), base_family(checkpoint_family)))
    return "unknown" in (control, checkpoint) or control == checkpoint


def check_fits(control: ModelInfo, checkpoint: ModelInfo, field: str = "controls") -> None:
    if base_family(checkpoint.family) == "sdxl-refiner":
        raise BadInput(f"The model '{checkpoint.name}' is an SDXL refiner, which ControlNets cannot steer; choose an SDXL base model.", field="model")
    if not fits(control.family, checkpoint.family):
        wanted = family_name(checkpoint.family)
        raise BadInput(
            f"The ControlNet '{control.name}' is for {family_name(control.family)} but the model '{checkpoint.name}' is "
            f"{wanted}; choose {'an' if wanted.startswith('S') else 'a'} {wanted} ControlNet.", field=field,
        )


@dataclass
class LoadedControlNet:
    """A loaded ControlNet as the pipeline cache holds it (the cache sizes entries by their components)."""

    model: Any  # diffusers ControlNetModel

    @property
    def components(self) -> dict[str, Any]:
        return {"controlnet": self.model}


def load_controlnet(info: ModelInfo, dtype: torch.dtype, allow_pickle: bool = False, base_unet: dict | None = None):
    """A diffusers ControlNetModel on the CPU in `dtype`. `base_unet` is the checkpoint's UNet config,
    which fills in what a single file's shapes cannot show (SDXL's time-embedding width)."""
    if info.kind != "controlnet":
        raise UnsupportedModel(f"'{info.name}' is a {info.kind}, not a ControlNet; put ControlNets in models/ControlNet.")
    if info.format == "diffusers":
        return _load_folder(Path(info.path), dtype)
    from localdiffusion.models.single_file import load_controlnet_file

    return load_controlnet_file(Path(info.path), base_family(info.family), dtype, allow_pickle, base_unet)


def _load_folder(folder: Path, dtype: torch.dtype):
    from diffusers import ControlNetModel

    try:
        return ControlNetModel.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise UnsupportedModel(f"The ControlNet folder '{folder}' could not be loaded ({str(e).splitlines()[0]}).") from e
