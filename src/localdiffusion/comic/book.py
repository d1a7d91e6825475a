"""A whole comic in one call: generate the panels that have no image yet, save the project, export."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdiffusion.comic.export import export_cbz, export_pages, export_panels, export_pdf, pages_png
from localdiffusion.comic.generate import candidate_recipes, generate_panel
from localdiffusion.comic.layouts import ordered_panels
from localdiffusion.comic.model import Panel, Project
from localdiffusion.comic.render import check_render_size
from localdiffusion.comic.storage import save_project
from localdiffusion.engine.shared_attention import SharedAttention, estimate_bytes
from localdiffusion.models.single_file import unet_config


@dataclass
class Book:
    project: Path
    pdf: Path
    cbz: Path
    pages: list[Path] = field(default_factory=list)
    panels: list[Path] = field(default_factory=list)


def generate_missing(engine: Any, project: Project, folder: Path, candidates: int = 1,
                     on_panel: Callable[[int, int, Panel], None] | None = None) -> int:
    """Generate candidates for every panel without a chosen image, in reading order; returns how many panels."""
    todo = [panel for page in project.pages for panel in ordered_panels(project, page) if panel.chosen_candidate() is None]
    shared = SharedAttention(project.style.shared_attention) if project.style.shared_attention and len(todo) > 1 else None
    for i, panel in enumerate(todo):
        if on_panel is not None:
            on_panel(i, len(todo), panel)
        if shared is not None and shared.writing:  # the first panel's first candidate is the look the others keep
            generate_panel(engine, project, panel, folder, 1, shared=shared)
            shared.writing = False
            generate_panel(engine, project, panel, folder, candidates - 1, shared=shared)
        else:
            generate_panel(engine, project, panel, folder, candidates, shared=shared)
        save_project(project, folder)  # a long run keeps what it has made so far
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
    folder = Path(out_dir) / "project"
    save_project(project, folder)
    generate_missing(engine, project, folder, candidates, on_panel)
    save_project(project, folder)
    return export_all(project, folder, out_dir, bleed_mm, trim_marks)
