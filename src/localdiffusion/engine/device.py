"""Pick where and in what precision to run: CUDA, then MPS, then the CPU; fp16 on a GPU."""

from __future__ import annotations

import torch

from localdiffusion.errors import BadInput, one_of

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(name: str | None = None) -> torch.device:
    if name:
        try:
            return torch.device(name)
        except RuntimeError:
            raise BadInput(f"Unknown device '{name}'; use 'cuda', 'cuda:N', 'mps' or 'cpu'.") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    if name:
        if name not in DTYPES:
            raise BadInput(f"Unknown precision '{name}'; use {one_of(list(DTYPES))}.")
        return DTYPES[name]
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def memory_budget(device: torch.device, budget_gb: float) -> int:
    """Bytes of loaded pipelines to keep: the setting, or about half of the device's memory."""
    if budget_gb > 0:
        return int(budget_gb * 2**30)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def device_name(device: torch.device) -> str:
    """The device as a person names it: 'cuda:0 (NVIDIA H100 80GB HBM3)', 'mps', 'cpu'."""
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
