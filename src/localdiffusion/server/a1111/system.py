"""A1111's cmd-flags and memory answers, from this server's home, RAM and device."""

from __future__ import annotations

import os
from typing import Any

from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def command_line_flags(home: Home, hostname: str | None, port: int | None) -> dict[str, Any]:
    """A1111's command-line flags that clients read, as this server's settings and folders answer them."""
    return {
        "api": True, "nowebui": False, "listen": hostname not in _LOCAL_HOSTS,
        "port": port, "data_dir": str(home.root), "ckpt_dir": str(home.model_dir("checkpoint")),
        "lora_dir": str(home.model_dir("lora")), "vae_dir": str(home.model_dir("vae")),
        "embeddings_dir": str(home.model_dir("embedding")), "esrgan_models_path": str(home.model_dir("upscaler")),
        "api_auth": None, "api_log": False, "disable_safe_unpickle": home.load_settings().allow_pickle,
    }


def memory_report(studio: Studio) -> dict[str, Any]:
    return {"ram": _ram(), "cuda": _cuda(studio)}


def _ram() -> dict[str, Any]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return {"error": "unavailable on this system"}
    return {"free": free, "used": total - free, "total": total}


def _cuda(studio: Studio) -> dict[str, Any]:
    device = studio.engine.device
    if device.type != "cuda":
        return {"error": f"this server runs on {device.type}, not CUDA"}
    import torch

    free, total = torch.cuda.mem_get_info(device)
    stats = torch.cuda.memory_stats(device)
    pools = {
        pool: {"current": stats.get(f"{pool}_bytes.all.current", 0), "peak": stats.get(f"{pool}_bytes.all.peak", 0)}
        for pool in ("active", "allocated", "reserved")
    }
    return {"system": {"free": free, "used": total - free, "total": total}, **pools}
