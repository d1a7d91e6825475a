"""A whole comic in one call: generate the panels that have no image yet, save the project, export."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdiffusion.comic.export import export_cbz, export_pages, export_panels, export_pdf, pages_png
from localdiffusion.comic.generate import candidate_recipes, place_image, render_shared, result_png
from localdiffusion.comic.layouts import ordered_panels
from localdiffusion.comic.model import Candidate, Panel, Project
from localdiffusion.comic.render import check_render_size
from localdiffusion.comic.storage import ComicStore, FolderComics
from localdiffusion.engine.shared_attention import estimate_bytes
from localdiffusion.recipe import Result
from localdiffusion.models.single_file import unet_config


@dataclass
class Book:
    project: Path
    pdf: Path
    cbz: Path
    pages: list[Path] = field(default_factory=list)
    panels: list[Path] = field(default_factory=list)


def generate_missing(engine: Any, project: Project, store: ComicStore, candidates: int = 1,
                     on_panel: Callable[[int, int, Panel], None] | None = None) -> int:
    """Generate candidates for every panel without a chosen image, in reading order, into the project's
    assets; the project is saved after each panel. With `style.shared_attention` and more than one such
    panel, the first panel's first candidate is the look the others keep. Returns how many panels."""
    todo = [panel for page in project.pages for panel in ordered_panels(project, page) if panel.chosen_candidate() is None]
    folder = store.folder(project.id)
    runs = [(n, panel, recipe) for n, panel in enumerate(todo)
            for recipe in candidate_recipes(engine, project, panel, folder, candidates)]

    def start(i: int) -> None:
        n, panel, _ = runs[i]
        if on_panel is not None and (i == 0 or runs[i - 1][0] != n):
            on_panel(n, len(todo), panel)

    def keep(i: int, result: Result) -> None:
        n, panel, _ = runs[i]
        candidate = Candidate(recipe=result.recipes[0])
        panel.candidates.append(candidate)
        place_image(folder, panel, candidate, result_png(result), result.recipes[0])
        if i + 1 == len(runs) or runs[i + 1][0] != n:
            store.save(project)  # a long run keeps what it has made so far

    share = project.style.shared_attention if len(todo) > 1 else 0.0
    render_shared(engine, [recipe for _, _, recipe in runs], share, keep, on_start=start)
    return len(todo)


def shared_attention_bytes(engine: Any, project: Project, folder: Path, share: float | None = None) -> int:
    """About how much memory shared attention will keep for this render (the first missing panel's tokens),
    worked out from the model's config without loading it; 0 when it is off or there is nothing to share."""
    share = project.style.shared_attention if share is None else share
    todo = [panel for page in project.pages for panel in ordered_panels(project, page) if panel.chosen_candidate() is None]
    if not share or len(todo) < 2:
        return 0
    recipe = candidate_recipes(engine, project, todo[0], folder, 1, keep=False)[0]
    config = unet_config(engine.checkpoint(recipe.model))
    if config is None:
        return 0
    return estimate_bytes(config, recipe.width, recipe.height, recipe.steps, share=share, cfg=recipe.cfg_scale > 1,
                          element_size=engine.dtype.itemsize)


def export_all(project: Project, folder: Path, out_dir: Path, bleed_mm: float = 0.0, trim_marks: bool = False) -> Book:
    out_dir = Path(out_dir)
    pages = pages_png(project, folder)  # rendered once for the PNG pages and the CBZ
    return Book(
        project=Path(folder),
        pdf=export_pdf(project, folder, out_dir / "comic.pdf", bleed_mm, trim_marks),
        cbz=export_cbz(project, folder, out_dir / "comic.cbz", pages),
        pages=export_pages(project, folder, out_dir, pages),
        panels=export_panels(project, folder, out_dir / "panels"),
    )


def render_book(engine: Any, project: Project, out_dir: Path, candidates: int = 1, bleed_mm: float = 0.0,
                trim_marks: bool = False, on_panel: Callable[[int, int, Panel], None] | None = None) -> Book:
    """`out_dir/project/` (the saved project), `comic.pdf`, `comic.cbz`, `page-N.png` and `panels/`."""
    check_render_size(project)  # before any panel is generated, not after
    store = FolderComics(Path(out_dir) / "project")
    store.save(project)
    generate_missing(engine, project, store, candidates, on_panel)
    store.save(project)
    return export_all(project, store.folder(project.id), out_dir, bleed_mm, trim_marks)
