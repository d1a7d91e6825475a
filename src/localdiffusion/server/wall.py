"""The class wall: images and comics their owners share with the whole class (`store/shares.py`).

- `POST`/`DELETE /api/images/{id}/share` and `/api/comics/{id}/share`: share or unshare one's own image or
  comic (a facilitator anyone's); others get 404, as for the thing itself. `GET .../share` says whether it is.
- `GET /api/wall`: every signed-in user; the shared things, newest first, with the owner's name, an image's
  stored recipe (for "Use these settings") and the wall's own addresses of its picture. A hidden share is
  left out for participants and marked `hidden` for facilitators.
- `GET /api/wall/{share_id}/file` and `/thumb`: the picture of a shared thing (an image's file; a comic's
  first page), readable by the whole class. The owner-only image routes stay owner-only.
- `POST /api/wall/{share_id}/hide` and `/unhide`: facilitators; both go in the audit log.
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, Response
from PIL import Image

from localdiffusion.comic.export import page_png_bytes
from localdiffusion.comic.storage import HomeComics
from localdiffusion.server.api import find_image, image_file
from localdiffusion.server.comic import ComicsDep, load
from localdiffusion.server.deps import Caller, CallerDep, ManagerDep, get_studio
from localdiffusion.server.studio import Studio
from localdiffusion.store.shares import Share, ShareTable
from localdiffusion.store.thumbnails import ensure_thumbnail

router = APIRouter(tags=["wall"])
StudioDep = Annotated[Studio, Depends(get_studio)]
THUMB_SIDE = 256


def shares(studio: Studio) -> ShareTable:
    return ShareTable(studio.db)


def share_json(share: Share | None) -> dict[str, Any]:
    if share is None:
        return {"shared": False, "share_id": None, "hidden": False}
    return {"shared": True, "share_id": share.id, "hidden": share.hidden, "shared_at": share.shared_at}


# --- sharing --------------------------------------------------------------------------------------


@router.get("/api/images/{image_id}/share")
def image_share(image_id: int, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """Whether the image is on the class wall."""
    find_image(studio, caller, image_id)
    return share_json(shares(studio).find("image", image_id))


@router.post("/api/images/{image_id}/share", status_code=201)
def share_image(image_id: int, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """Put the image (with its recipe) on the class wall; sharing it again changes nothing."""
    row = find_image(studio, caller, image_id)
    return share_json(shares(studio).share("image", image_id, row.owner_id))


@router.delete("/api/images/{image_id}/share")
def unshare_image(image_id: int, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    find_image(studio, caller, image_id)
    shares(studio).unshare("image", image_id)
    return share_json(None)


@router.get("/api/comics/{project_id}/share")
def comic_share(project_id: str, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> dict[str, Any]:
    """Whether the comic is on the class wall."""
    load(store, caller, project_id, read=True)
    return share_json(shares(studio).find("comic", project_id))


@router.post("/api/comics/{project_id}/share", status_code=201)
def share_comic(project_id: str, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> dict[str, Any]:
    """Put the comic (its first page) on the class wall."""
    project = load(store, caller, project_id).project
    return share_json(shares(studio).share("comic", project_id, project.owner_id))


@router.delete("/api/comics/{project_id}/share")
def unshare_comic(project_id: str, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> dict[str, Any]:
    load(store, caller, project_id)
    shares(studio).unshare("comic", project_id)
    return share_json(None)


# --- the wall -------------------------------------------------------------------------------------


def visible(studio: Studio, caller: Caller, share_id: int) -> Share:
    """The share, if it exists and the caller may see it (hidden ones: facilitators only); 404 otherwise."""
    share = shares(studio).get(share_id) if 0 < share_id < 2**62 else None
    if share is None or (share.hidden and not caller.manages):
        raise HTTPException(404, f"There is nothing on the class wall with the number {share_id}.")
    return share


def item_json(studio: Studio, store: HomeComics, share: Share, names: dict[int, str], manager: bool) -> dict[str, Any] | None:
    """One wall item; None when the shared thing is gone (deleted image, removed comic)."""
    item: dict[str, Any] = {"id": share.id, "kind": share.kind, "owner": names.get(share.owner_id, "?"),
                            "shared_at": share.shared_at, "hidden": share.hidden,
                            "url": f"/api/wall/{share.id}/file", "thumb": f"/api/wall/{share.id}/thumb"}
    if manager:
        item["hidden_by"] = share.hidden_by
    if share.kind == "image":
        row = studio.db.get_image(int(share.item_id))
        if row is None or row.deleted:
            return None
        return {**item, "image_id": row.id, "prompt": row.prompt, "width": row.width, "height": row.height,
                "recipe": json.loads(row.recipe_json), "infotext": row.infotext}
    stored = store.get(share.item_id)
    if stored is None:
        return None
    project = stored.project
    return {**item, "project_id": project.id, "title": project.title, "authors": project.authors,
            "pages": len(project.pages), "class_comic": project.class_comic, "recipe": None}


@router.get("/api/wall")
def wall(studio: StudioDep, store: ComicsDep, caller: CallerDep) -> dict[str, Any]:
    """What the class shared, newest first (hidden items only for facilitators, marked `hidden`)."""
    names = studio.db.owner_names()
    items = (item_json(studio, store, s, names, caller.manages) for s in shares(studio).listed(with_hidden=caller.manages))
    return {"items": [item for item in items if item is not None]}


SCREEN_DPI, THUMB_DPI = 150, 36  # a shared comic's first page on the wall: for a screen, not for print


def _first_page_png(store: HomeComics, share: Share, dpi: int) -> bytes:
    stored = store.get(share.item_id)
    if stored is None or not stored.project.pages:
        raise HTTPException(404, "The shared comic is no longer in the studio.")
    return page_png_bytes(stored.project.model_copy(update={"dpi": dpi}), 0, stored.folder)


@router.get("/api/wall/{share_id}/file")
def wall_file(share_id: int, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> Response:
    """The shared image's file, or the shared comic's first page as PNG."""
    share = visible(studio, caller, share_id)
    if share.kind == "comic":
        return Response(_first_page_png(store, share, SCREEN_DPI), media_type="image/png")
    row = studio.db.get_image(int(share.item_id))
    if row is None or row.deleted:
        raise HTTPException(404, "The shared image is no longer in the studio.")
    return FileResponse(image_file(row), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/api/wall/{share_id}/thumb")
def wall_thumb(share_id: int, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> Response:
    share = visible(studio, caller, share_id)
    if share.kind == "comic":
        page = Image.open(io.BytesIO(_first_page_png(store, share, THUMB_DPI)))
        page.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buffer = io.BytesIO()
        page.convert("RGB").save(buffer, format="WEBP", quality=80)
        return Response(buffer.getvalue(), media_type="image/webp")
    row = studio.db.get_image(int(share.item_id))
    if row is None or row.deleted:
        raise HTTPException(404, "The shared image is no longer in the studio.")
    thumb = ensure_thumbnail(image_file(row), studio.home.cache, row.id)
    return FileResponse(thumb, media_type="image/webp", headers={"Cache-Control": "private, max-age=3600"})


def _hide(studio: Studio, caller: Caller, share_id: int, hide: bool) -> dict[str, Any]:
    share = visible(studio, caller, share_id)
    shares(studio).hide(share.id, caller.name if hide else None)
    studio.db.record_action(caller.name, "hide" if hide else "unhide", f"wall {share.id}",
                            {"kind": share.kind, "item": share.item_id, "owner_id": share.owner_id})
    return share_json(shares(studio).get(share.id))


@router.post("/api/wall/{share_id}/hide")
def hide(share_id: int, studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    """Hide a wall item from the participants (facilitators still see it, marked hidden)."""
    return _hide(studio, caller, share_id, True)


@router.post("/api/wall/{share_id}/unhide")
def unhide(share_id: int, studio: StudioDep, caller: ManagerDep) -> dict[str, Any]:
    return _hide(studio, caller, share_id, False)
