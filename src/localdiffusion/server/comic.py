"""The comic API under /api/comics, for the studio's page editor: projects (owner-scoped, a row each in the
home's database through `comic.storage.HomeComics`), layout templates, panel prompt previews, candidate
generation through the job queue, and exports.

Every project has a version that each edit moves on by one (the editor's PUT, a layout edit, queued
candidates, a pick). A change that names the version it started from is refused with 409 when someone
saved in between, so one tab never overwrites another's edit without knowing. Finished candidates brought
in when the project is read keep the version: a job finishing is not an edit, and a tab that edits or
generates at that moment must not be refused for it (a PUT without the images loses nothing: the next
read brings them in again from their jobs).

A class comic (made by a facilitator with `"class": true`) is one project the whole class works on: every
signed-in user opens it, a facilitator assigns its panels to participants (`PUT .../panels/{id}/assignee`;
an assigned panel's `owner_id` is the participant's), and a participant changes only their own panels
(`PUT .../panels/{id}`, generate, pick): anything else answers 403 with a sentence. `load` holds that rule.
A participant's candidates are their own jobs, and come back into the project as the owner's do. Every
change to a class comic (and every candidate of one that finishes) is announced to the whole class on the
event socket as "comic-changed" {project_id, version}."""

from __future__ import annotations

import json
import logging
import threading
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localdiffusion.comic import (
    Project, apply_template, merge_panels, move_gutter, new_page, ordered_panels, page_size, set_gutter, slant_border,
    split_panel,
    templates_json,
)
from localdiffusion.comic.book import shared_attention_bytes
from localdiffusion.comic.export import cbz_bytes, page_png_bytes, pdf_bytes
from localdiffusion.comic.generate import candidate_recipes, choose, place_image, show_first
from localdiffusion.comic.model import Candidate, Page, Panel, new_id
from localdiffusion.comic.prompts import compose_prompt, consistency_notes, panel_prompt
from localdiffusion.comic.storage import ASSETS, STALE, HomeComics, StaleVersion, Stored, asset_path
from localdiffusion.errors import BadInput
from localdiffusion.jobs import Event
from localdiffusion.recipe import Recipe
from localdiffusion.server.admission import JobRequest, queue_job, queue_jobs
from localdiffusion.server.api import check_input_ref, check_recipe, job_json, may_use_input, read_upload
from localdiffusion.server.deps import Caller, CallerDep, client_id, get_studio
from localdiffusion.server.studio import Studio
from localdiffusion.store.accounts import Accounts
from localdiffusion.store.db import Database
from localdiffusion.store.files import write_atomic

router = APIRouter(prefix="/api/comics", tags=["comics"])

StudioDep = Annotated[Studio, Depends(get_studio)]
ClientDep = Annotated[str, Depends(client_id)]
MEDIA = {"pdf": "application/pdf", "cbz": "application/vnd.comicbook+zip", "png": "image/png", "ldcomic": "application/zip"}
VERSION_HELP = "the project's version this change starts from (as the last answer gave it); 409 when it has moved on"

log = logging.getLogger(__name__)

CLASS_ONLY_YOURS = ("This is the class comic: you may change only the panels assigned to you (their prompts, "
                    "candidates and pick); ask the facilitator for anything else.")
NOT_YOUR_PANEL = "Panel '{panel}' of the class comic is not assigned to you; you may change only your own panels."
CHANGED = "comic-changed"

_stores: weakref.WeakKeyDictionary[Database, HomeComics] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def home_comics(studio: StudioDep) -> HomeComics:
    """The studio's comic store, one per database; made on first use, which imports the project folders
    from before the database (and starts watching the jobs of class comics' candidates)."""
    with _stores_lock:
        if studio.db not in _stores:
            _stores[studio.db] = HomeComics.open(studio.db, studio.home.root)
            _watch_class_jobs(studio, _stores[studio.db])
        return _stores[studio.db]


ComicsDep = Annotated[HomeComics, Depends(home_comics)]


class VersionedProject(Project):
    """A project as the API sends and takes it: with its version (and, answered for a class comic, who each
    assigned panel belongs to)."""

    version: int | None = Field(None, ge=1, description=VERSION_HELP)
    assignees: dict[str, str] = Field(default_factory=dict,
                                      description="answers only: a class comic's assigned panels, panel id to user name")

    @classmethod
    def of(cls, project: Project, version: int, names: dict[int, str] | None = None) -> "VersionedProject":
        assignees = {panel.id: (names or {}).get(panel.owner_id, "?") for page in project.pages for panel in page.panels
                     if project.class_comic and panel.owner_id is not None and panel.owner_id != project.owner_id}
        return cls.model_validate({**project.model_dump(), "version": version, "assignees": assignees})

    def project(self) -> Project:
        return Project.model_validate(self.model_dump(exclude={"version", "assignees"}))


def answer(studio: Studio, project: Project, version: int) -> VersionedProject:
    """The project as answered, with its assignees' names when it is a class comic."""
    return VersionedProject.of(project, version, studio.db.owner_names() if project.class_comic else None)


class NewProject(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    title: str = Field("Untitled comic", max_length=200)
    authors: list[str] = Field(default_factory=list)
    page: str = "A4"  # A4, Letter, square or custom
    width: float | None = None
    height: float | None = None
    unit: Literal["mm", "in"] = "mm"
    direction: Literal["ltr", "rtl"] = "ltr"
    template: str = "grid-2x2"
    class_comic: bool = Field(False, alias="class", description="a class comic (facilitators only): everyone opens it")


class Assignee(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(None, max_length=64, description="the participant's user name; null: nobody's")


# What a participant may change on a panel assigned to them (`PUT .../panels/{id}`): not its shape, owner
# or candidates (those come from its jobs).
PANEL_EDITS = ("setting", "action", "characters", "shot", "controls", "prompt_override", "seed", "variation_seed",
               "view", "balloons")
PANEL_HELP = f"the panel's JSON, or some of its fields: {', '.join(PANEL_EDITS)} and `chosen` (a candidate with an image)"


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    candidates: int = Field(2, ge=1, le=8)
    version: int | None = Field(None, ge=1, description=VERSION_HELP)


class LayoutEdit(BaseModel):
    """One layout change on one page, made with the comic layer's own editing functions."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    op: Literal["template", "split", "merge", "gutter", "slant", "gutter-width", "add-page"]
    page: str  # the page changed; for add-page, the page the new one follows
    panel: str | None = None
    other: str | None = None  # merge: the neighbour
    side: Literal["left", "right", "top", "bottom"] | None = None  # gutter, slant
    direction: Literal["horizontal", "vertical"] = "vertical"  # split
    at: float = 0.5  # split: where, as a fraction
    delta_mm: float = 0.0  # gutter: how far
    amount_mm: float = 0.0  # slant: how far the ends move apart
    width_mm: float = 4.0  # gutter-width
    template: str = "grid-2x2"  # template, add-page
    version: int | None = Field(None, ge=1, description=VERSION_HELP)


class PickRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    candidate: str
    version: int | None = Field(None, ge=1, description=VERSION_HELP)


def not_found(project_id: str) -> HTTPException:
    return HTTPException(404, f"There is no comic project '{project_id[:40]}'.")


def load(store: HomeComics, caller: Caller, project_id: str, *, read: bool = False, panel: str | None = None) -> Stored:
    """The project, its version and folder, if it exists and whoever asks may see it (its owner, a facilitator;
    404 otherwise, for an id that cannot be one as well). A class comic anyone may open (`read`); a
    participant may change a panel assigned to them (`panel`, the one the change is on) and nothing else
    (403 with a sentence)."""
    stored = store.get(project_id)
    if stored is None or not (caller.sees(stored.project.owner_id) or stored.project.class_comic):
        raise not_found(project_id)
    if caller.sees(stored.project.owner_id) or read:
        return stored
    if panel is None:
        raise HTTPException(403, CLASS_ONLY_YOURS)
    if find_panel(stored.project, panel)[1].owner_id != caller.owner_id:
        raise HTTPException(403, NOT_YOUR_PANEL.format(panel=panel[:40]))
    return stored


def announce(studio: Studio, project: Project, version: int) -> None:
    """Tell the whole class that a class comic changed (its editor pages read it again)."""
    if project.class_comic:
        studio.events.publish(Event(CHANGED, 0, project.owner_id or 0, "", {"project_id": project.id, "version": version},
                                    everyone=True))


def saved(studio: Studio, store: HomeComics, project: Project, version: int | None) -> int:
    """`save`, then announced (class comics)."""
    new = save(store, project, version)
    announce(studio, project, new)
    return new


def save(store: HomeComics, project: Project, version: int | None) -> int:
    """Save, refused with 409 and one sentence when `version` is no longer the saved one; the new version."""
    try:
        return store.save(project, version)
    except StaleVersion:
        raise stale() from None


def stale() -> HTTPException:
    return HTTPException(409, STALE)


def find_panel(project: Project, panel_id: str) -> tuple[Page, Panel]:
    """The page and panel a path names; 404 when the project has no such panel."""
    try:
        return project.find_panel(panel_id)
    except BadInput as e:
        raise HTTPException(404, e.message) from None


@router.get("")
def list_comics(studio: StudioDep, store: ComicsDep, caller: CallerDep) -> list[dict[str, Any]]:
    """The caller's projects and the class comics (`class_comic` true), by title."""
    return [asdict(s) for s in store.summaries(caller.owner_id, with_class=True)]


@router.post("", status_code=201)
def create_comic(body: NewProject, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> VersionedProject:
    """A new project with one page laid out from a template; every panel belongs to whoever created it.
    With `"class": true` (facilitators), a class comic that everyone in the class opens."""
    if body.class_comic and not caller.manages:
        raise HTTPException(403, "Only a facilitator may start a class comic; start your own comic instead.")
    project = Project(title=body.title, authors=body.authors, owner_id=caller.owner_id, direction=body.direction,
                      page_size=page_size(body.page, body.width, body.height, body.unit), class_comic=body.class_comic)
    project.pages.append(new_page(project, body.template, owner_id=caller.owner_id))
    return answer(studio, project, store.save(project))


@router.get("/templates")
def templates() -> list[dict[str, Any]]:
    """Layout templates: name, title, panel count and cells as quads in fractions of the live area."""
    return templates_json()


@router.get("/{project_id}")
def get_comic(project_id: str, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> VersionedProject:
    """The project; candidates whose jobs finished since the last look get their images now (the version
    stays). Should someone save in between, their project is answered and the images come with the next look."""
    stored = load(store, caller, project_id, read=True)
    if sync_candidates(studio, stored.project, stored.folder):
        try:
            version = store.save(stored.project, stored.version, bump=False)
            announce(studio, stored.project, version)
            return answer(studio, stored.project, version)
        except StaleVersion:
            stored = load(store, caller, project_id, read=True)
    return answer(studio, stored.project, stored.version)


@router.put("/{project_id}")
def save_comic(project_id: str, body: VersionedProject, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> VersionedProject:
    """Save the editor's project (layout, balloons, prompts); the id and owner stay as they were, and so do
    whether it is a class comic and who its panels are assigned to. With `version`, a project saved by
    someone else since then is refused (409) and stays as they left it."""
    stored = load(store, caller, project_id)
    if body.id != stored.project.id:
        raise BadInput(f"The project id '{body.id}' does not match the address '{project_id}'.", field="id")
    for candidate in (c for page in body.pages for panel in page.panels for c in panel.candidates if c.image):
        asset_path(stored.folder, candidate.image)  # refuses paths that leave the project folder
    project = body.project().model_copy(update={"owner_id": stored.project.owner_id,
                                                "class_comic": stored.project.class_comic})
    owners = {panel.id: panel.owner_id for page in stored.project.pages for panel in page.panels}
    for panel in (panel for page in project.pages for panel in page.panels):
        panel.owner_id = owners.get(panel.id, project.owner_id)
    return answer(studio, project, saved(studio, store, project, body.version))


@router.put("/{project_id}/panels/{panel_id}")
def save_panel(project_id: str, panel_id: str, body: Annotated[dict[str, Any], Body(description=PANEL_HELP)],
               studio: StudioDep, store: ComicsDep, caller: CallerDep) -> VersionedProject:
    """Save one panel's own settings (setting, action, cast, shot, controls, prompt, seeds, image view,
    balloons) and its pick among its candidates: the panel's JSON as the editor has it, or only the fields
    that change; its shape, owner and candidates stay. On a class comic, the way a participant saves the
    panels assigned to them; it names no version, as one person edits a panel."""
    stored = load(store, caller, project_id, panel=panel_id)
    page, panel = find_panel(stored.project, panel_id)
    edits = {name: value for name, value in body.items() if name in PANEL_EDITS}
    try:
        edited = Panel.model_validate({**panel.model_dump(), **edits})
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise BadInput(f"The panel's '{field}' is not valid: {error['msg']}.", field=field) from None
    if any(c.id == body.get("chosen") and c.image for c in panel.candidates):
        edited.chosen = body["chosen"]
    page.panels[page.panels.index(panel)] = edited
    return answer(studio, stored.project, saved(studio, store, stored.project, stored.version))


@router.put("/{project_id}/panels/{panel_id}/assignee")
def assign_panel(project_id: str, panel_id: str, body: Assignee, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> VersionedProject:
    """Assign a panel of a class comic to a participant (`user`), or to nobody (null); facilitators only."""
    if not caller.manages:
        raise HTTPException(403, "Only a facilitator may assign the panels of a class comic.")
    stored = load(store, caller, project_id)
    project = stored.project
    if not project.class_comic:
        raise BadInput(f"The comic '{project.title[:80]}' is not a class comic; only a class comic's panels are assigned.",
                       field="project")
    _, panel = find_panel(project, panel_id)
    panel.owner_id = project.owner_id if body.user is None else Accounts(studio.db).find(body.user).owner_id
    return answer(studio, project, saved(studio, store, project, stored.version))


@router.post("/{project_id}/layout")
def edit_layout(project_id: str, body: LayoutEdit, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> VersionedProject:
    """Apply a template, split, merge, move a gutter, slant a border, set the gutter width or add a page."""
    stored = load(store, caller, project_id)
    since = _since(body.version, stored)
    apply_edit(stored.project, stored.project.find_page(body.page), body, stored.project.owner_id)
    return answer(studio, stored.project, saved(studio, store, stored.project, since))


def _since(given: int | None, stored: Stored) -> int:
    """The version a change starts from: the one the caller names, else the one just read (so that a save
    in between is never overwritten). A named version that is no longer the saved one is refused here,
    before anything is done (a job queued, say)."""
    if given is not None and given != stored.version:
        raise stale()
    return stored.version


NEEDS = {"panel": "the id of the panel to change", "other": "the id of the neighbour to merge with",
         "side": "left, right, top or bottom"}


def _given(value: str | None, name: str, op: str) -> str:
    if not value:
        raise BadInput(f"The layout change '{op}' needs '{name}': {NEEDS[name]}.", field=name)
    return value


def apply_edit(project: Project, page: Page, edit: LayoutEdit, owner_id: int) -> None:
    if edit.op == "add-page":
        project.pages.insert(project.pages.index(page) + 1, new_page(project, edit.template, owner_id=owner_id))
    elif edit.op == "template":
        apply_template(project, page, edit.template, owner_id=owner_id)
    elif edit.op == "gutter-width":
        set_gutter(page, edit.width_mm)
    else:
        panel = _given(edit.panel, "panel", edit.op)
        if edit.op == "split":
            split_panel(page, panel, edit.direction, edit.at)
        elif edit.op == "merge":
            merge_panels(page, panel, _given(edit.other, "other", edit.op))
        elif edit.op == "gutter":
            move_gutter(page, panel, _given(edit.side, "side", edit.op), edit.delta_mm)
        else:
            slant_border(page, panel, _given(edit.side, "side", edit.op), edit.amount_mm)


@router.post("/{project_id}/assets", status_code=201)
def upload_asset(project_id: str, file: UploadFile, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> dict[str, Any]:
    """Keep an image in the project's assets (a character's reference picture); refer to it by `ref`."""
    folder = load(store, caller, project_id).folder
    image = read_upload(studio, file)
    ref = f"{ASSETS}/upload-{new_id()}.png"
    write_atomic(folder / ref, lambda f: image.save(f, format="PNG"))
    return {"ref": ref, "width": image.width, "height": image.height}


@router.get("/{project_id}/panels/{panel_id}/prompt")
def prompt_preview(project_id: str, panel_id: str, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> dict[str, Any]:
    """The composed prompt (style + shot + characters + action + setting), the one used, and the recipe.
    It reads and writes nothing: reference pictures are named as the project's assets."""
    stored = load(store, caller, project_id, read=True)
    project = stored.project
    _, panel = find_panel(project, panel_id)
    recipe = candidate_recipes(studio.engine, project, panel, stored.folder, 1, keep=False)[0]
    return {"composed": compose_prompt(project, panel), "prompt": panel_prompt(project, panel),
            "override": panel.prompt_override, "recipe": recipe.model_dump(mode="json"),
            "consistency": consistency_notes(project, studio.home.root, studio.library)}


@router.post("/{project_id}/panels/{panel_id}/generate", status_code=201)
def generate_candidates(project_id: str, panel_id: str, body: GenerateRequest, studio: StudioDep, store: ComicsDep,
                        client: ClientDep, caller: CallerDep) -> list[Candidate]:
    """Queue one generate job per candidate; each candidate records its job id and gets its image when the
    job is done (see GET /api/comics/{id}). The project's version moves on by one. The jobs
    are the project owner's; a participant's on their panel of a class comic, theirs."""
    stored = load(store, caller, project_id, panel=panel_id)
    project = stored.project
    _, panel = find_panel(project, panel_id)
    since = _since(body.version, stored)
    check_panel_pictures(studio, caller, project, [panel])
    recipes = candidate_recipes(studio.engine, project, panel, stored.folder, body.candidates)
    recipes = [check_recipe(studio, recipe) for recipe in recipes]
    owner = project.owner_id if caller.sees(project.owner_id) else caller.owner_id
    jobs = queue_jobs(studio, caller, [JobRequest(recipe) for recipe in recipes], client, owner_id=owner)  # all admitted, or none queued
    made = [Candidate(recipe=job.recipe, job_id=job.id) for job in jobs]
    panel.candidates += made
    _watch(studio, project, [job.id for job in jobs])
    saved(studio, store, project, since)
    return made


def check_panel_pictures(studio: Studio, caller: Caller, project: Project, panels: list[Panel]) -> None:
    """The ControlNet pictures a panel names are uploads that the caller may use, or that the project's owner
    uploaded (a facilitator's pose map on a class comic's panel): never another participant's."""
    def usable(ref: str) -> bool:
        return may_use_input(studio, caller, ref) or studio.db.owns_input(project.owner_id, ref)

    for panel in panels:
        for i, unit in enumerate(panel.controls):
            check_input_ref(studio.home, unit.image, f"controls.{i}.image", usable)
            check_input_ref(studio.home, unit.map, f"controls.{i}.map", usable)


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    shared_attention: float = Field(0.5, gt=0.0, le=1.0)
    version: int | None = Field(None, ge=1, description=VERSION_HELP)


def panels_to_render(project: Project) -> list[Panel]:
    """Panels with no image and none on the way, in reading order."""
    return [panel for page in project.pages for panel in ordered_panels(project, page)
            if panel.chosen_candidate() is None and not any(c.image is None and c.job_id is not None and c.error is None
                                                            for c in panel.candidates)]


@router.get("/{project_id}/render")
def render_estimate(project_id: str, studio: StudioDep, store: ComicsDep, caller: CallerDep,
                    shared_attention: float = Query(0.5, gt=0.0, le=1.0)) -> dict[str, Any]:
    """Before rendering together: how many panels would be generated and the memory the shared tokens would take."""
    stored = load(store, caller, project_id, read=True)
    sync_candidates(studio, stored.project, stored.folder)
    todo = panels_to_render(stored.project)
    kept = shared_attention_bytes(studio.engine, stored.project, stored.folder, shared_attention) if len(todo) > 1 else 0
    return {"panels": len(todo), "kept_bytes": kept}


@router.post("/{project_id}/render", status_code=201)
def render_together(project_id: str, body: RenderRequest, studio: StudioDep, store: ComicsDep,
                    client: ClientDep, caller: CallerDep) -> dict[str, Any]:
    """Queue one "panels" job for every panel that has no image and none on the way, in reading order, with
    shared attention: the first one's look steers the others. Each panel gets a candidate that fills in
    when the job is done; `kept_bytes` is the memory the shared tokens will take, `version` the project's."""
    stored = load(store, caller, project_id)
    project, folder = stored.project, stored.folder
    since = _since(body.version, stored)
    sync_candidates(studio, project, folder)
    todo = panels_to_render(project)
    if len(todo) < 2:
        raise BadInput(f"Shared attention needs at least two panels without an image; {len(todo)} panel"
                       f"{'' if len(todo) == 1 else 's'} without one or a job on the way. Generate that panel on its own.",
                       field="shared_attention")
    check_panel_pictures(studio, caller, project, todo)
    kept = shared_attention_bytes(studio.engine, project, folder, body.shared_attention)
    recipes = [check_recipe(studio, candidate_recipes(studio.engine, project, panel, folder, 1)[0]) for panel in todo]
    job = queue_job(studio, caller, recipes[0], client, kind="panels", owner_id=project.owner_id,
                    params={"recipes": [r.model_dump(mode="json") for r in recipes], "share": body.shared_attention})
    recipes = [Recipe.model_validate(r) for r in job.params["recipes"]]  # as admitted (a default model named)
    made = {}
    for i, (panel, recipe) in enumerate(zip(todo, recipes)):
        made[panel.id] = Candidate(recipe=recipe, job_id=job.id, job_index=i)
        panel.candidates.append(made[panel.id])
    _watch(studio, project, [job.id])
    version = saved(studio, store, project, since)
    return {"job": job_json(studio, studio.queue.get(job.id) or job), "candidates": made, "kept_bytes": kept,
            "version": version}


@router.post("/{project_id}/panels/{panel_id}/pick")
def pick_candidate(project_id: str, panel_id: str, body: PickRequest, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> Panel:
    stored = load(store, caller, project_id, panel=panel_id)
    since = _since(body.version, stored)
    sync_candidates(studio, stored.project, stored.folder)
    _, panel = find_panel(stored.project, panel_id)
    choose(panel, body.candidate)
    saved(studio, store, stored.project, since)
    return panel


@router.get("/{project_id}/assets/{name}")
def asset(project_id: str, name: str, studio: StudioDep, store: ComicsDep, caller: CallerDep) -> FileResponse:
    folder = load(store, caller, project_id, read=True).folder
    path = asset_path(folder, f"{ASSETS}/{name}")
    if "/" in name or not path.is_file():
        raise HTTPException(404, f"The project has no asset '{name[:80]}'.")
    return FileResponse(path, media_type="image/png")


@router.get("/{project_id}/export/{fmt}")
def export(project_id: str, fmt: Literal["pdf", "cbz", "png", "ldcomic"], studio: StudioDep, store: ComicsDep, caller: CallerDep,
           page: int = Query(1, ge=1), bleed: float = Query(0.0, ge=0, le=10), trim_marks: bool = False,
           quality: Literal["print", "screen"] = "print") -> Response:
    """Download the comic as a PDF (`quality`: print, pictures at the project's dpi; screen, 150 dpi JPEG),
    a CBZ, one page as PNG (`page`, from 1) or the project archive. The answer's Content-Length is its size."""
    stored = load(store, caller, project_id, read=True)
    project, folder = stored.project, stored.folder
    if fmt == "pdf":
        data = pdf_bytes(project, folder, bleed, trim_marks, quality)
    elif fmt == "cbz":
        data = cbz_bytes(project, folder)
    elif fmt == "png":
        if page > len(project.pages):
            raise BadInput(f"The comic has {len(project.pages)} page(s), so there is no page {page}.", field="page")
        data = page_png_bytes(project, page - 1, folder)
    else:
        data = store.archive(project.id)
    name = f"{project.id}-page-{page}.png" if fmt == "png" else f"{project.id}.{fmt}"
    return Response(data, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'})


def sync_candidates(studio: Studio, project: Project, folder: Path) -> bool:
    """Bring the images of finished candidate jobs into the project; True when anything changed."""
    changed = False
    for page in project.pages:
        for panel in page.panels:
            for candidate in panel.candidates:
                if candidate.image is None and candidate.job_id is not None and candidate.error is None:
                    # the project's owner's jobs, and on a class comic the panel's participant's
                    owners = {project.owner_id, panel.owner_id} if project.class_comic else {project.owner_id}
                    changed |= _collect(studio, owners, panel, candidate, folder)
            changed |= show_first(panel)
    return changed


def _collect(studio: Studio, owners: set[int | None], panel: Panel, candidate: Candidate, folder: Path) -> bool:
    job = studio.queue.get(candidate.job_id)
    if job is None or job.owner_id not in owners:  # those owners' jobs only, whatever a saved project names
        candidate.error = "Its job is gone."
        return True
    if job.status in ("failed", "cancelled"):
        candidate.error = job.error or f"Its job was {job.status}."
        return True
    if job.status != "done" or len(job.result.get("images") or []) <= candidate.job_index:
        return False
    row = studio.db.get_image(job.result["images"][candidate.job_index])
    if row is None or not Path(row.path).is_file():
        candidate.error = "Its image is no longer in the gallery."
        return True
    place_image(folder, panel, candidate, Path(row.path).read_bytes(), Recipe.model_validate(json.loads(row.recipe_json)))
    return True


# --- class comics: candidates that finish are brought in at once and announced -------------------------

# per database: job id -> the class comic waiting for it (jobs queued before a restart are brought in on a read)
_class_jobs: weakref.WeakKeyDictionary[Database, dict[int, str]] = weakref.WeakKeyDictionary()
_class_jobs_lock = threading.Lock()


def _watch(studio: Studio, project: Project, job_ids: list[int]) -> None:
    if project.class_comic:
        with _class_jobs_lock:
            _class_jobs.setdefault(studio.db, {}).update(dict.fromkeys(job_ids, project.id))


def _watch_class_jobs(studio: Studio, store: HomeComics) -> None:
    """When a class comic's candidate job ends, bring its picture in and tell the class (on the worker's thread)."""
    def ended(event: Event) -> None:
        if event.type not in ("done", "failed", "cancelled"):
            return
        with _class_jobs_lock:
            project_id = _class_jobs.get(studio.db, {}).pop(event.job_id, None)
        stored = store.get(project_id) if project_id is not None else None
        if stored is None:
            return
        version = stored.version
        try:
            if sync_candidates(studio, stored.project, stored.folder):
                version = store.save(stored.project, stored.version, bump=False)
        except (StaleVersion, BadInput, OSError) as e:  # someone saved meanwhile: the next read brings it in
            log.info("class comic %s: finished job %s not brought in now (%s)", project_id, event.job_id, e)
        except Exception:  # this runs inside the worker's publish: it must never fail the finished job
            log.exception("class comic %s: finished job %s could not be brought in", project_id, event.job_id)
        announce(studio, stored.project, version)

    studio.events.subscribe(ended)
