"""`localdiffusion comic`: render a STORY.yaml into a finished comic, start a project, export one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli import options
from localdiffusion.cli.common import HomeOption, app, err, open_engine, out
from localdiffusion.errors import BadInput

comic_app = typer.Typer(help="Graphic novels: pages, panels, cast, lettering; PDF, CBZ and PNG export.", no_args_is_help=True)
app.add_typer(comic_app, name="comic")


@comic_app.command("render")
def render(
    story: Path = typer.Argument(..., help="The story: a STORY.yaml with a title, style, characters and pages of panels."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Folder for comic.pdf, comic.cbz, page-N.png, panels/ and project/."),
    model: Optional[str] = options.MODEL,
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (default: the story's style, else 20)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="A1111 sampler name (default: the story's style)."),
    size: Optional[int] = typer.Option(None, "--base-size", help="Panels aim at this many pixels squared (default: the model's native size)."),
    dpi: Optional[int] = typer.Option(None, "--dpi", help="Resolution of pages and PDF images (default 300, print)."),
    candidates: int = typer.Option(1, "--candidates", min=1, max=8, help="Images per panel; the first is used, the others stay in the project."),
    bleed: float = typer.Option(0.0, "--bleed", min=0.0, max=10.0, help="Bleed around each PDF page, in mm (3 is usual for print)."),
    trim_marks: bool = typer.Option(False, "--trim-marks", help="Draw trim marks in the bleed (needs --bleed)."),
    shared_attention: Optional[float] = typer.Option(
        None, "--shared-attention", min=0.0, max=1.0,
        help="Share of the first panel's attention tokens the other panels look at, to keep the cast alike (0.5 is usual; 0: off; default: the story's style)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, mps or cpu (default: the best available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Turn a STORY.yaml into a complete comic: every panel generated, lettered and exported."""
    from localdiffusion.cli.models import human_size
    from localdiffusion.comic.book import render_book, shared_attention_bytes
    from localdiffusion.comic.prompts import consistency_notes
    from localdiffusion.comic.story import load_story
    from localdiffusion.comic.fonts import lettering_font

    project = load_story(story)
    changes = {k: v for k, v in {"model": model, "steps": steps, "sampler": sampler, "base_size": size,
                                 "shared_attention": shared_attention}.items() if v is not None}
    if changes:
        project.style = project.style.model_copy(update=changes)
        project.style = type(project.style).model_validate(project.style.model_dump())
    if dpi is not None:
        project.dpi = dpi
    if trim_marks and bleed <= 0:
        raise BadInput("Trim marks sit in the bleed; give --bleed 3 (millimetres) with --trim-marks.", field="trim_marks")
    engine = open_engine(home, device=device, dtype=dtype)
    for note in consistency_notes(project, engine.home.root, engine.library) + ([lettering_font().note] if lettering_font().note else []):
        err.print(f"[dim]{note}[/dim]", highlight=False)
    if kept := shared_attention_bytes(engine, project, out_dir / "project"):
        err.print(f"Shared attention keeps about {human_size(kept)} of the first panel's tokens while the others render.",
                  highlight=False, soft_wrap=True)

    def on_panel(i: int, total: int, panel) -> None:
        err.print(f"panel {i + 1}/{total}: {panel.action or panel.id}", highlight=False)

    book = render_book(engine, project, out_dir, candidates, bleed, trim_marks, on_panel)
    for path in [book.pdf, book.cbz, *book.pages]:
        out.print(str(path), highlight=False)
    err.print(f"[dim]project saved in {book.project}; {len(book.panels)} panel PNGs in {out_dir / 'panels'}[/dim]")


@comic_app.command("new")
def new(
    folder: Path = typer.Argument(..., help="Folder for the new project (project.json and assets/)."),
    title: str = typer.Option("Untitled comic", "--title"),
    template: str = typer.Option("grid-2x2", "--template", help="Layout of the first page: splash, grid-2x2, manga-5, ..."),
    page: str = typer.Option("A4", "--page", help="A4, Letter or square."),
    rtl: bool = typer.Option(False, "--rtl", help="Read right to left (manga)."),
) -> None:
    """Start an empty project with one page laid out from a template."""
    from localdiffusion.comic import Project, new_page, page_size, save_project

    if (folder / "project.json").exists():
        raise BadInput(f"The folder '{folder}' already holds a project; choose a new folder.", field="folder")
    project = Project(title=title, page_size=page_size(page), direction="rtl" if rtl else "ltr")
    project.pages.append(new_page(project, template))
    save_project(project, folder)
    out.print(str(folder / "project.json"), highlight=False)


@comic_app.command("export")
def export(
    project_dir: Path = typer.Argument(..., help="A project folder (with project.json)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Folder for comic.pdf, comic.cbz, page-N.png and panels/."),
    bleed: float = typer.Option(0.0, "--bleed", min=0.0, max=10.0, help="Bleed around each PDF page, in mm."),
    trim_marks: bool = typer.Option(False, "--trim-marks", help="Draw trim marks in the bleed."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="Also pack the project into this .ldcomic (or .zip) file."),
) -> None:
    """Export a saved project (no generation): PDF, CBZ, page PNGs and panel PNGs."""
    from localdiffusion.comic.book import export_all
    from localdiffusion.comic.storage import export_archive, open_project

    project = open_project(project_dir)
    book = export_all(project, project_dir, out_dir, bleed, trim_marks)
    for path in [book.pdf, book.cbz, *book.pages]:
        out.print(str(path), highlight=False)
    if archive is not None:
        out.print(str(export_archive(project_dir, archive)), highlight=False)
