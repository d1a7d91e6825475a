"""`localdiffusion models ...`: list, add, download and rescan models."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from localdiffusion.cli.common import HomeOption, app, err, home_from, out
from localdiffusion.models.hub import pull as hub_pull
from localdiffusion.models.hub import target_path
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.library import ModelLibrary
from localdiffusion.models.provenance import provenance
from localdiffusion.store.db import Database
from localdiffusion.store.home import add_models_help

models_app = typer.Typer(help="List, add and download models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@contextmanager
def open_library(home_dir: Optional[Path]) -> Iterator[ModelLibrary]:
    home = home_from(home_dir)
    with Database(home.db_path) as db:
        yield ModelLibrary(home, db)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _format_label(info: ModelInfo) -> str:
    # Pickled files can run code when loaded; say so where people choose models.
    return "ckpt (pickle)" if info.format == "ckpt" else info.format


def _show_problems(library: ModelLibrary) -> None:
    for problem in library.problems:
        err.print(f"[yellow]Skipped:[/yellow] {problem}", highlight=False, soft_wrap=True)


def _describe(info: ModelInfo) -> str:
    family = "" if info.family == "unknown" else f"{info.family} "
    return f"{info.name} ({family}{info.kind}, {_format_label(info)}, {human_size(info.size)})"


@models_app.command("list")
def list_models(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind: checkpoint, lora, embedding, vae, controlnet, upscaler, ipadapter or vae-approx."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of models instead of a table."),
    home: Optional[Path] = HomeOption,
) -> None:
    """List the models in the library, with their A1111-compatible hashes (computed once, then cached)."""
    with open_library(home) as library:
        models = library.list(kind)
        with err.status("Hashing models (once per file)..."):
            for info in models:
                library.ensure_hash(info)
        _show_problems(library)
        if as_json:
            typer.echo(json.dumps([{**m.model_dump(mode="json"), "provenance": provenance(m)} for m in models], indent=2))
            return
        if not models:
            where = f"{kind} models" if kind else "models"
            out.print(f"No {where} yet. {add_models_help(library.home)}", highlight=False, soft_wrap=True)  # the commands stay whole
            return
        show_models(models)


COLUMNS = ("name", "kind", "family", "format", "hash", "size")


def show_models(models: list[ModelInfo]) -> None:
    """A table whose names are never cut: the other columns wrap; where even that does not fit the
    terminal, one model per entry, its name on a line of its own."""
    rows = [(m.name, m.kind, m.family, _format_label(m), m.short_hash or "", human_size(m.size)) for m in models]
    widths = [max(len(word) for text in [header, *(row[i] for row in rows)] for word in text.split() or [""])
              for i, header in enumerate(COLUMNS)]
    widths[0] = max(len(row[0]) for row in rows)
    if sum(widths) + 3 * len(COLUMNS) + 1 > out.width:  # each column's padding and border, and the last border
        for name, *details in rows:
            out.print(Text(name, style="bold"), soft_wrap=True)  # whole: the terminal wraps it, if it must
            out.print(Text("  " + ", ".join(d for d in details if d)), highlight=False)
        return
    table = Table()
    table.add_column(COLUMNS[0], no_wrap=True, min_width=widths[0])
    for header, width in zip(COLUMNS[1:], widths[1:]):
        table.add_column(header, min_width=width)
    for row in rows:
        table.add_row(*row)
    out.print(table)


@models_app.command("add")
def add_model(
    path: Path = typer.Argument(..., help="A .safetensors or .ckpt file, or a diffusers folder; it is read in place, not copied."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Add one model file or diffusers folder to the library, where it is (nothing is copied)."""
    with open_library(home) as library:
        info = library.ensure_hash(library.add(path))
        out.print(f"Added {_describe(info)} from {info.path}, hash {info.short_hash}.", highlight=False, soft_wrap=True)
        origin = provenance(info)
        out.print(f"Licence: {origin['licence']}; source: {origin['source'] or 'unknown'}.", highlight=False, soft_wrap=True)


@models_app.command("pull")
def pull_model(
    repo_id: str = typer.Argument(..., help="A Hugging Face repository, OWNER/NAME, e.g. stabilityai/sd-turbo."),
    file: Optional[str] = typer.Option(None, "--file", help="Download just this file of the repository (e.g. a single .safetensors)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit (default: main)."),
    fp16: bool = typer.Option(False, "--fp16", help="Prefer the fp16 weights where the repository has both."),
    kind: str = typer.Option("checkpoint", "--kind", help="Which model folder to download into (with --file, or vae-approx for TAESD): checkpoint, lora, vae, vae-approx, ..."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Download a model from the Hugging Face Hub into the home folder (the only command that uses the network)."""
    home_dir = home_from(home)
    target = target_path(repo_id, home_dir, filename=file, kind=kind)
    existed = target.exists()
    if not existed:
        err.print(f"Downloading {repo_id} to {target} ...", highlight=False, soft_wrap=True)
    path = hub_pull(repo_id, home_dir, revision, filename=file, variant="fp16" if fp16 else None, kind=kind)
    with Database(home_dir.db_path) as db:
        library = ModelLibrary(home_dir, db)
        verb = "Already present" if existed else "Downloaded"
        try:
            info = library.inspect(path)
        except Exception as e:  # the files stay; say why they will not show up as a model
            err.print(f"[yellow]Warning:[/yellow] {path} is not a model the library can use: {e}", highlight=False, soft_wrap=True)
            return
        out.print(f"{verb}: {_describe(info)} at {path}.", highlight=False, soft_wrap=True)


@models_app.command("rescan")
def rescan_models(home: Optional[Path] = HomeOption) -> None:
    """Look through every model folder again and report what was found and what was skipped."""
    with open_library(home) as library:
        models = library.rescan()
        counts = Counter(m.kind for m in models)
        summary = ", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in sorted(counts.items())) or "no models"
        out.print(f"Found {summary}.", highlight=False)
        _show_problems(library)
