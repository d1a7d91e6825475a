"""The facilitator's console: the join code (on, off, its QR code), the class's usage, and exports.

- `GET/PUT /api/class/join`: the join code that lets a person make a participant account, and the address to
  join at; kept in the `class_policy` table, so it survives a restart (`serve --join-code` sets it at start).
- `GET /api/class/join/qr.svg`: that address as a QR code (SVG made by `segno`), to project on the wall.
- `GET /api/class/usage`: GPU-seconds today per device and the class total, with an energy estimate
  (server/usage.py says where the power figure comes from).
- `GET /api/workers`: the workers that run jobs (local devices or Ray actors), what each holds and runs now.
- `GET /api/class/export` (facilitators) and `GET /api/me/export` (anyone, their own): one zip, streamed entry
  by entry as it is written (`zip_stream`), never built in memory or on disk: per person their images (the PNG
  files as stored, metadata and all) and their comics as PDF and CBZ (comic/export.py).
"""

from __future__ import annotations

import io
import re
import secrets
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.comic.export import cbz_bytes, pdf_bytes
from localdiffusion.errors import BadInput
from localdiffusion.server.accounts import accounts_state
from localdiffusion.server.class_users import start_of_today
from localdiffusion.server.comic import home_comics
from localdiffusion.server.deps import Caller, get_caller, get_studio
from localdiffusion.server.studio import Studio
from localdiffusion.server.usage import energy_wh, power
from localdiffusion.store.db import LOCAL_OWNER, Database

router = APIRouter(prefix="/api", tags=["class"])

JOIN_KEY, ADDRESS_KEY = "join_code", "join_address"
CHUNK = 1 << 18  # what one read of a file, and at most one piece of the answer, holds


# --- the join code ---------------------------------------------------------------------------------------


def stored_join_code(db: Database) -> str | None:
    code = db.policy(JOIN_KEY)
    return code if isinstance(code, str) and code else None


class JoinSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(description="whether a person with the code may make a participant account")
    code: str | None = Field(None, min_length=4, max_length=200, description="the code; left out, the current one or a new one")
    address: str | None = Field(None, max_length=300, description="the studio's address as the room reaches it (http://…); "
                                                                 "left out, the one this page was opened at")


def join_address(request: Request) -> str:
    stored = get_studio(request).db.policy(ADDRESS_KEY)
    return (stored if isinstance(stored, str) and stored else str(request.base_url)).rstrip("/") + "/"


def join_json(request: Request) -> dict[str, Any]:
    code = accounts_state(request).join_code
    base = join_address(request)
    return {"enabled": bool(code), "code": code, "address": base, "url": f"{base}#join={code}" if code else None}


@router.get("/class/join")
def get_join(request: Request) -> dict[str, Any]:
    """Whether joining is on, the code, and the address to join at (with the code in it, for the QR code)."""
    return join_json(request)


@router.put("/class/join")
def put_join(body: JoinSettings, request: Request) -> dict[str, Any]:
    """Turn joining on (with the given code, else the current one, else a new readable one) or off."""
    state, studio = accounts_state(request), get_studio(request)
    if body.address is not None:
        if body.address and not re.match(r"https?://[^\s/]+", body.address):
            raise BadInput(f"The address '{body.address[:60]}' is not an http:// or https:// address.", field="address")
        studio.db.set_policy(ADDRESS_KEY, body.address)
    code = (body.code or state.join_code or f"class-{secrets.randbelow(10**6):06d}") if body.enabled else None
    if code is not None and not code.strip():
        raise BadInput("The join code is blank; use at least 4 characters.", field="code")
    state.join_code = code
    studio.db.set_policy(JOIN_KEY, code)
    studio.db.record_action(get_caller(request).name, "join on" if code else "join off", "", {"address": join_address(request)})
    return join_json(request)


@router.get("/class/join/qr.svg")
def join_qr(request: Request) -> Response:
    """The join address as a QR code (SVG), for the projector; 404 while joining is off."""
    import segno

    url = join_json(request)["url"]
    if url is None:
        raise HTTPException(404, "Joining is off, so there is no join address to show; turn it on first.")
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=10, border=2, xmldecl=False, title="Join the class")
    return Response(buffer.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


# --- usage ----------------------------------------------------------------------------------------------


@router.get("/class/usage")
def usage(request: Request) -> dict[str, Any]:
    """Today's jobs per device: how many, their GPU-seconds, and energy (measured power where the GPU reports it,
    else a labelled nominal estimate); the class's totals; and the queue now (paused, and its counts)."""
    db = get_studio(request).db
    rows = db.query("SELECT COALESCE(device, ''), COUNT(*), COALESCE(SUM(gpu_seconds), 0) FROM jobs "
                    "WHERE finished_at >= ? AND gpu_seconds IS NOT NULL GROUP BY device ORDER BY device", (start_of_today(),))
    devices = []
    for device, jobs, seconds in rows:
        drawn = power(device or None)
        devices.append({"device": device or "unknown", "jobs": int(jobs), "gpu_seconds": round(float(seconds), 1),
                        "watts": drawn["watts"], "measured": drawn["measured"], "note": drawn["note"],
                        "energy_wh": energy_wh(float(seconds), drawn["watts"])})
    queue = get_studio(request).queue
    return {"since": start_of_today(), "queue": {"paused": queue.paused, **queue.counts()}, "jobs": sum(d["jobs"] for d in devices),
            "gpu_seconds": round(sum(d["gpu_seconds"] for d in devices), 1),
            "energy_wh": round(sum(d["energy_wh"] for d in devices), 3),
            "estimate": not all(d["measured"] for d in devices), "devices": devices}


# --- workers --------------------------------------------------------------------------------------------


@router.get("/workers")
def workers(request: Request) -> list[dict[str, Any]]:
    """Every worker that runs jobs: `id`, `node` (its machine), `device`, `pid` (its process on that machine),
    `models` (the checkpoints it holds loaded), `job` (the id of the job it runs, or null), `jobs_done`,
    `gpu_seconds` and `last_seen` (its last heartbeat, seconds since the epoch). A lost worker is no longer listed."""
    return get_studio(request).scheduler.workers()


# --- exports --------------------------------------------------------------------------------------------


class _Pipe:
    """A write-only file for `zipfile` that keeps what was written until `take()` hands it on. It cannot seek or
    tell, so zipfile writes each entry's sizes after its data (a data descriptor) and never goes back."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


Source = Path | Callable[[], bytes]  # a file, read in pieces; or bytes made when their turn comes (a comic's PDF)


def zip_stream(entries: Iterable[tuple[str, Source]]) -> Iterator[bytes]:
    """A zip (entries stored, not compressed: PNG, PDF and CBZ are compressed already) as pieces of at most about
    CHUNK bytes, each handed on as soon as it is written; `entries` is read lazily, one at a time."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED) as archive:
        for name, source in entries:
            if isinstance(source, Path):
                try:
                    stat, handle = source.stat(), source.open("rb")
                except OSError:  # deleted since it was listed
                    continue
                info = zipfile.ZipInfo(name, time.localtime(max(stat.st_mtime, 315532800))[:6])
                with handle, archive.open(info, "w") as out:
                    while piece := handle.read(CHUNK):
                        out.write(piece)
                        yield pipe.take()
            else:
                info = zipfile.ZipInfo(name, time.localtime()[:6])
                with archive.open(info, "w") as out:
                    out.write(source())
                yield pipe.take()
    yield pipe.take()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "untitled"


def unique_folders(names: list[str]) -> list[str]:
    """A folder name per person, distinct even where a file system ignores case ("Ann" and "ann", or an
    account called "owner" beside the home's own owner): a repeat gets "-2", "-3", ..."""
    taken: set[str] = set()
    folders = []
    for name in names:
        folder, n = _safe(name), 1
        while folder.lower() in taken:
            n += 1
            folder = f"{_safe(name)}-{n}"
        taken.add(folder.lower())
        folders.append(folder)
    return folders


def work_entries(studio: Studio, owner_id: int, prefix: str = "") -> Iterator[tuple[str, Source]]:
    """One person's work: `images/<id>-<file>.png` (as stored, metadata kept) and `comics/<id>.pdf` and `.cbz`."""
    seen: set[int] = set()
    offset = 0
    while rows := studio.db.list_images(owner_id, offset, 200):
        for row in rows:
            if row.id not in seen:  # newest first: one made meanwhile moves the rest down a place
                seen.add(row.id)
                yield f"{prefix}images/{row.id}-{Path(row.path).name}", Path(row.path)
        offset += len(rows)
    store = home_comics(studio)
    for summary in store.summaries(owner_id):
        stored = store.get(summary.id)
        if stored is None:
            continue
        base = f"{prefix}comics/{_safe(summary.id)}"
        yield f"{base}.pdf", lambda s=stored: pdf_bytes(s.project, s.folder)
        yield f"{base}.cbz", lambda s=stored: cbz_bytes(s.project, s.folder)


def zip_answer(entries: Iterable[tuple[str, Source]], filename: str) -> StreamingResponse:
    return StreamingResponse(zip_stream(entries), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


def _today() -> str:
    return datetime.now().strftime("%Y-%m-%d")


@router.get("/me/export", response_class=StreamingResponse)
@router.get("/me/work.zip", response_class=StreamingResponse)  # the first name of this download, kept for links to it
def my_export(request: Request) -> StreamingResponse:
    """All your work as one zip, streamed: `images/` (your gallery's PNG files, their settings inside) and
    `comics/` (each comic as PDF and CBZ)."""
    studio, caller = get_studio(request), get_caller(request)
    name = caller.name if caller.name != LOCAL_OWNER else "my"
    return zip_answer(work_entries(studio, caller.owner_id), f"{_safe(name)}-work-{_today()}.zip")


def class_people(request: Request, caller: Caller) -> list[tuple[str, int]]:
    """(folder name, owner id) for every account; the home's own owner too when they made anything."""
    studio = get_studio(request)
    people = [(u.name, u.owner_id) for u in accounts_state(request).accounts.list()]
    owner = studio.owner_id
    if owner not in {o for _, o in people} and (studio.db.list_images(owner, 0, 1) or home_comics(studio).summaries(owner)):
        people.append((studio.owner_name if studio.owner_name != LOCAL_OWNER else "owner", owner))
    return people


@router.get("/class/export", response_class=StreamingResponse)
def class_export(request: Request) -> StreamingResponse:
    """The whole class's work as one zip, streamed: a folder per person with their `images/` and `comics/`."""
    studio, caller = get_studio(request), get_caller(request)
    people = class_people(request, caller)
    studio.db.record_action(caller.name, "export", "class", {"people": len(people)})

    def entries() -> Iterator[tuple[str, Source]]:
        for folder, (_, owner) in zip(unique_folders([name for name, _ in people]), people):
            yield from work_entries(studio, owner, f"{folder}/")

    return zip_answer(entries(), f"class-work-{_today()}.zip")
