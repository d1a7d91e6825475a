"""Load a checkpoint into a diffusers pipeline, from a diffusers folder or a single file, offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from localdiffusion.errors import UnsupportedModel
from localdiffusion.models.info import ModelInfo


def load_pipeline(info: ModelInfo, cache_dir: Path, dtype: torch.dtype, allow_pickle: bool = False, parts=None):
    """The diffusers pipeline for a checkpoint, on the CPU, in `dtype`. `parts`: a single-file SD3 or FLUX model's
    text encoders and VAE (models/flow.py `find_parts`)."""
    _quiet_loading()
    if info.kind != "checkpoint":
        raise UnsupportedModel(f"'{info.name}' is a {info.kind}, not a checkpoint; pick a Stable Diffusion checkpoint as the model.")
    if info.format == "diffusers":
        return _load_folder(Path(info.path), dtype)
    if parts is not None:
        from localdiffusion.models.flow import load_flow_file

        try:
            return load_flow_file(parts, cache_dir, dtype, allow_pickle)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise UnsupportedModel(f"'{info.name}' could not be loaded as a {info.family} model ({str(e).splitlines()[0]}).") from e
    from localdiffusion.models.single_file import load_single_file

    return load_single_file(Path(info.path), cache_dir, torch_dtype=dtype, allow_pickle=allow_pickle)


def _quiet_loading() -> None:
    """Our own progress display replaces the libraries' loading bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _load_folder(folder: Path, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    index = json.loads((folder / "model_index.json").read_text("utf-8"))
    extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
    try:
        return DiffusionPipeline.from_pretrained(str(folder), dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError, EnvironmentError) as e:
        raise UnsupportedModel(f"The model folder '{folder}' could not be loaded ({str(e).splitlines()[0]}).") from e


def pipeline_bytes(pipe) -> int:
    """Memory the pipeline's weights take, for the cache's budget."""
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in component.parameters())
    return total
