"""What this API remembers for one app: options set by clients, the chosen checkpoint, jobs it waits on."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from localdiffusion.server.deps import CALLER_SCOPE_KEY

DEFAULT_OPTIONS: dict[str, Any] = {
    "samples_format": "png",
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "randn_source": "CPU",  # A1111's default is GPU; ours draws noise on the CPU so recipes reproduce
    "eta_noise_seed_delta": 0,
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
    "sgm_noise_multiplier": False,
    "pad_cond_uncond": False,
    "live_previews_enable": True,
    "show_progress_every_n_steps": 1,
    "enable_pnginfo": True,
    "samples_save": True,
    "sd_checkpoints_limit": 1,
}


@dataclass
class A1111State:
    checkpoint: str | None = None  # the model chosen with sd_model_checkpoint; None: the library's default
    options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    pending: set[int] = field(default_factory=set)  # jobs submitted here and not answered yet
    stopped: dict[int, str] = field(default_factory=dict)  # job id -> "interrupted" or "skipped"
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATE_LOCK = threading.Lock()


def a1111_state(request: Request) -> A1111State:
    """The caller's A1111 state in this app (one per app, so that two apps in one process never share a model
    choice; with accounts, one per user, so that each keeps their own options and checkpoint)."""
    caller = getattr(request, "scope", {}).get(CALLER_SCOPE_KEY)  # a signed-in user; None: the home's owner
    with _STATE_LOCK:
        if caller is not None and caller.role != "owner":
            users = getattr(request.app.state, "a1111_users", None)
            if users is None:
                users = request.app.state.a1111_users = {}
            return users.setdefault(caller.owner_id, A1111State())
        state = getattr(request.app.state, "a1111", None)
        if state is None:
            state = request.app.state.a1111 = A1111State()
        return state
