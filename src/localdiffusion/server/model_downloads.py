"""A first model from the studio: the table of well-known public checkpoints, which of them fit this machine,
and one-click downloads with progress.

A download is the only thing in the studio that uses the network, and only when someone asks for it (on a
class server, a facilitator). It runs in a thread of its own (it needs no GPU, so it stays out of the job
queue), resumes a partial file left by an earlier try, and moves the file into the checkpoint folder only
once its SHA-256 is the published one, so the library shows it without a rescan.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from localdiffusion.errors import LocalDiffusionError
from localdiffusion.models.hub import download_verified, file_url
from localdiffusion.models.provenance import KnownModel, fits, known_by_id, known_models, machine_memory, row_json
from localdiffusion.server.deps import ManagerDep
from localdiffusion.server.studio import Studio

router = APIRouter(prefix="/api/models", tags=["studio"])


@dataclass
class Download:
    id: str
    name: str
    state: str = "running"  # running, done, failed
    done: int = 0
    total: int | None = None
    detail: str | None = None  # the sentence, when it failed
    model: str | None = None  # the library's name for it, when done


class Downloads:
    """The downloads this server started, by the table's id; one at a time per model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, Download] = {}

    def start(self, studio: Studio, row: KnownModel) -> Download:
        with self._lock:
            current = self.items.get(row.id)
            if current is not None and current.state == "running":
                return current
            item = self.items[row.id] = Download(row.id, row.name, total=row.size)
        threading.Thread(target=self._run, args=(studio, row, item), name=f"download-{row.id}", daemon=True).start()
        return item

    def _run(self, studio: Studio, row: KnownModel, item: Download) -> None:
        def progress(done: int, total: int | None) -> None:
            item.done, item.total = done, total if total is not None else item.total

        target = studio.home.model_dir("checkpoint") / row.filename
        try:
            path = download_verified(file_url(row.repo, row.filename), target, row.sha256 or "", row.size, on_progress=progress)
            stat = path.resolve().stat()
            studio.db.store_hash(path.resolve(), stat.st_size, stat.st_mtime_ns, row.sha256 or "")  # checked: no second hashing
            info = next((m for m in studio.library.scan() if m.path == path.resolve()), None)
            item.model, item.done, item.state = (info.name if info else path.stem), stat.st_size, "done"
        except LocalDiffusionError as e:
            item.detail, item.state = e.message, "failed"
        except Exception as e:  # a disk error, ...: one sentence, not a traceback
            item.detail, item.state = f"The download of {row.filename} failed ({e.__class__.__name__}: {e}).", "failed"


def downloads_of(request: Request) -> Downloads:
    state = request.app.state
    if not hasattr(state, "model_downloads"):
        state.model_downloads = Downloads()
    return state.model_downloads


def _studio(request: Request) -> Studio:
    return request.app.state.studio


class StartDownload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


@router.get("/known")
def known(request: Request) -> dict[str, Any]:
    """The table of well-known public checkpoints: licence, source, what each needs and is good for, whether it
    fits this machine, whether the library has it, and any download of it this server runs."""
    studio = _studio(request)
    device = str(studio.engine.device)
    ram, vram = machine_memory(device)
    present = {m.sha256 for m in studio.library.list("checkpoint") if m.sha256} | {
        m.path.name for m in studio.library.list("checkpoint")}
    running = downloads_of(request).items
    return {
        "machine": {"device": device, "ram_gb": round(ram, 1), "vram_gb": None if vram is None else round(vram, 1)},
        "models": [{**row_json(row), "fits": fits(row, ram, vram),
                    "present": row.filename in present or (row.sha256 in present if row.sha256 else False),
                    "download": asdict(running[row.id]) if row.id in running else None} for row in known_models()],
    }


@router.post("/downloads", status_code=202)
def start_download(body: StartDownload, request: Request, caller: ManagerDep) -> dict[str, Any]:
    """Download one of the table's checkpoints (facilitators only on a class server); follow it with GET."""
    row = known_by_id(body.id)
    if row is None:
        raise HTTPException(404, detail=f"There is no model '{body.id[:64]}' in the table of known models.")
    if not row.downloadable:
        raise HTTPException(422, detail=f"{row.name} has no published SHA-256 to check the download against, so the studio does not download it.")
    studio = _studio(request)
    if (studio.home.model_dir("checkpoint") / row.filename).exists():
        raise HTTPException(409, detail=f"{row.filename} is already in the checkpoint folder.")
    return asdict(downloads_of(request).start(studio, row))


@router.get("/downloads")
def list_downloads(request: Request, caller: ManagerDep) -> list[dict[str, Any]]:
    """The downloads this server started, with their progress (bytes done of total)."""
    return [asdict(item) for item in downloads_of(request).items.values()]

