"""Where training writes: its working folder (checkpoints, state) and the finished file in the library, under
the owner's name; and the provenance record every trained file carries.

A finished LoRA goes to `models/Lora/<owner>/<name>.safetensors`, an embedding to
`embeddings/<owner>/<name>.safetensors`: a folder per owner keeps the prompt's name short (`<lora:mira:1>`,
`mira` for an embedding, as A1111 names files by their stem) while two owners' files of the same name stay
apart (the library then names them `alice/mira` and `bob/mira`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from localdiffusion.errors import BadInput
from localdiffusion.store.home import Home

PROVENANCE_KEY = "localdiffusion.provenance"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


def check_name(name: str, field: str = "out") -> str:
    if not _SAFE.fullmatch(name) or name.endswith("."):
        raise BadInput(f"The name '{name}' cannot be a file name; use letters, digits, '_', '-' and '.' (up to 100), "
                       "starting with a letter or digit.", field=field)
    return name


def library_target(home: Home, kind: str, owner: str, name: str) -> Path:
    """The finished file's place: models/Lora/<owner>/<name>.safetensors or embeddings/<owner>/<name>.safetensors."""
    folder = home.model_dir("lora" if kind == "lora" else "embedding")
    return folder / check_name(owner, "owner") / f"{check_name(name)}.safetensors"


def work_folder(home: Home, kind: str, owner: str, name: str) -> Path:
    """The run's checkpoints and state: HOME/training/<owner>/<kind>-<name>/ (the same command resumes there)."""
    return home.root / "training" / check_name(owner, "owner") / f"{kind}-{check_name(name)}"


def provenance(*, kind: str, owner: str, dataset: Any, source: str, base: Any, state: Any, device: str,
               extra: dict[str, Any] | None = None) -> str:
    """The `localdiffusion.provenance` JSON: who trained it, on which dataset, from which base model, when and
    for how long."""
    from localdiffusion import __version__

    record = {
        "kind": kind,
        "trained_by": owner,
        "dataset": {"pictures": len(dataset), "source": source, "content_hash": dataset.content_hash,
                    "folder": dataset.folder.name, "trigger": dataset.trigger},
        "base_model": {"name": base.info.name, "sha256": base.info.sha256, "family": base.family},
        "steps": state.step,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "gpu_seconds" if device.startswith("cuda") else "cpu_seconds": round(state.seconds, 1),
        "device": device,
        "tool": f"localdiffusion {__version__}",
        **(extra or {}),
    }
    return json.dumps(record, sort_keys=True)
