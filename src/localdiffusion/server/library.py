"""The reference library over HTTP (`HOME/library.sqlite`, see `localdiffusion.library`).

- `GET /api/library/search?q=...&semantic=true&limit=20` (+ facet filters `source`, `licence`, `model`, `sampler`,
  `has_image`, `size`): `{"entries": [...], "facets": {...}}`, best first; each entry as `library search --json`
  prints it, plus its page (`url`), model, thumbnail address and source details;
- `GET /api/library/similar?prompt=...` ("prompts like yours": the 5 nearest and the typical settings among the
  nearest 100 with settings) or `?id=N` (more like this entry);
- `GET /api/library/sources`; `GET /api/library/styles`, `POST /api/library/styles` ("Save as style");
- `POST /api/library/imports`: an uploaded file (multipart `file`, with `kind`, `source_name`, `licence`, `column`)
  or a path on the server (JSON `{"path", ...}`); on a class server, facilitators only;
- `GET`/`PUT /api/library/settings`: the NSFW threshold (facilitators change it);
- `GET /api/library/images/{id}/thumb`: an entry's thumbnail.
"""

from __future__ import annotations

import re
import threading
import secrets
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from localdiffusion.errors import BadInput
from localdiffusion.library import Filters, Library
from localdiffusion.server.api import MAX_ID
from localdiffusion.server.deps import ManagerDep, get_studio
from localdiffusion.server.studio import Studio
from localdiffusion.store.files import atomic_path

router = APIRouter(prefix="/api/library", tags=["library"])
StudioDep = Annotated[Studio, Depends(get_studio)]
_libraries: dict[str, Library] = {}
_lock = threading.Lock()


def library_of(studio: Studio) -> Library:
    """One open Library per home for the server's life."""
    key = str(studio.home.root)
    with _lock:
        if key not in _libraries:
            _libraries[key] = Library(studio.home.root)
        return _libraries[key]


def get_library(studio: StudioDep) -> Library:
    return library_of(studio)


LibraryDep = Annotated[Library, Depends(get_library)]


def entry_json(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    out["thumb"] = f"/api/library/images/{entry['image_id']}/thumb" if entry.get("image_id") else None
    return out


@router.get("/search")
def search(library: LibraryDep, q: str = Query("", max_length=2000), semantic: bool = False,
           limit: int = Query(20, ge=1, le=200), source: Optional[str] = None,
           licence: Optional[str] = None, model: Optional[str] = None, sampler: Optional[str] = None,
           has_image: Optional[bool] = None, size: Optional[str] = None) -> dict[str, Any]:
    """Search by words (bm25), or with `semantic` by words and meaning; facets count the values among the results."""
    if size is not None and not re.fullmatch(r"\d+x\d+", size):
        raise BadInput(f"The size '{size[:40]}' is not allowed: write WIDTHxHEIGHT, e.g. 512x768.", field="size")
    filters = Filters(source, licence, model, sampler, has_image, size)
    result = library.search(q, semantic=semantic, limit=limit, filters=filters, facets=True)
    return {"entries": [entry_json(e) for e in result.entries], "facets": result.facets}


@router.get("/similar")
def similar(library: LibraryDep, prompt: str = "", id: Optional[int] = None, count: int = 5) -> dict[str, Any]:
    """Prompts like yours (the nearest `count` and the typical settings), or more like entry `id`."""
    if not 1 <= count <= 50:
        raise BadInput(f"The count {count} is not allowed: ask for 1 to 50 entries.", field="count")
    if id is not None:
        if not 0 < id <= MAX_ID:
            raise HTTPException(404, f"There is no library entry {id}.")
        return {"entries": [entry_json(e) for e in library.more_like(id, count)], "typical": {}}
    result = library.similar(prompt[:2000], count)
    result["entries"] = [entry_json(e) for e in result["entries"]]
    return result


@router.get("/sources")
def sources(library: LibraryDep) -> list[dict[str, Any]]:
    return [{k: s[k] for k in ("name", "kind", "licence", "entries", "address", "attribution")} for s in library.sources()]


@router.get("/styles")
def styles(library: LibraryDep) -> list[dict[str, str]]:
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in library.styles()]


class StyleBody(BaseModel):
    name: str
    prompt: str = ""
    negative_prompt: str = ""


@router.post("/styles", status_code=201)
def save_style(body: StyleBody, library: LibraryDep, caller: ManagerDep) -> dict[str, str]:
    library.save_style(body.name[:200], body.prompt, body.negative_prompt)
    return {"name": body.name.strip()[:200]}


class ImportBody(BaseModel):
    path: str
    kind: Optional[str] = None
    source_name: Optional[str] = None
    licence: Optional[str] = None
    column: Optional[str] = None


@router.post("/imports", status_code=201)
async def imports(request: Request, studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    """Import an uploaded file (multipart) or a file or folder on the server (JSON {"path"}); idempotent."""
    import asyncio

    library = library_of(studio)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise BadInput("Send the file to import as the multipart field 'file'.", field="file")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(upload.filename or "upload").name)[:100] or "upload"
        target = studio.home.root / "cache" / "library" / "uploads" / secrets.token_hex(8) / name  # two uploads never share a file
        target.parent.mkdir(parents=True, exist_ok=True)
        data = await upload.read()
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        fields = {k: (str(form.get(k)) if form.get(k) else None) for k in ("kind", "source_name", "licence", "column")}
        path = target
        fields["source_name"] = fields["source_name"] or None
    else:
        try:
            body = ImportBody.model_validate(await request.json())
        except Exception:
            raise BadInput("Send a file (multipart 'file') or JSON {\"path\": a file or folder on the server}.", field="path") from None
        if caller.role != "owner":
            # a facilitator account must not publish a file of the server to the class: uploads only
            raise HTTPException(403, "On a class server only the server's owner imports from a path on it; upload the file instead.")
        path = Path(body.path).expanduser()
        fields = body.model_dump(exclude={"path"})
    if fields.get("kind") == "gallery" and caller.role != "owner":
        raise HTTPException(403, "Everyone's gallery is private on a class server, so it cannot be imported into the "
                                 "shared library; share pictures on the Wall instead.")
    result = await asyncio.to_thread(library.import_path, path, fields.get("kind"), source_name=fields.get("source_name"),
                                     licence=fields.get("licence"), column=fields.get("column"))
    studio.db.record_action(caller.name, "library-import", result["source"], {"kind": result["kind"], "added": result["added"]})
    return result


class SettingsBody(BaseModel):
    nsfw_threshold: float


@router.get("/settings")
def get_settings(library: LibraryDep) -> dict[str, Any]:
    return {"nsfw_threshold": library.nsfw_threshold}


@router.put("/settings")
def put_settings(body: SettingsBody, studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    library = library_of(studio)
    library.set_nsfw_threshold(body.nsfw_threshold)
    studio.db.record_action(caller.name, "library-settings", "nsfw_threshold", {"value": body.nsfw_threshold})
    return {"nsfw_threshold": library.nsfw_threshold}


@router.get("/images/{image_id}/thumb")
def thumb(image_id: int, library: LibraryDep) -> FileResponse:
    found = library.image_of(image_id) if 0 < image_id <= MAX_ID else None
    if found is None or found[1] is None or not found[1].exists():
        raise HTTPException(404, f"There is no picture of library entry {image_id}.")
    return FileResponse(found[1], media_type="image/webp")
