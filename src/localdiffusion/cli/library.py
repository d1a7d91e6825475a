"""`localdiffusion library import/search/sources/export-styles`: the reference library (`HOME/library.sqlite`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli.common import HomeOption, app, home_from, out, progress_bar

library_app = typer.Typer(help="The reference library: import prompts, images and styles, and search them offline.",
                          no_args_is_help=True)
app.add_typer(library_app, name="library")

KIND_HELP = "diffusiondb, styles, fooocus, prompts, wildcards, images, civitai or gallery (guessed from the file when left out)."


def say(text: str) -> None:
    out.print(text, highlight=False, soft_wrap=True, markup=False)


def open_library(home: Optional[Path]):
    from localdiffusion.library import Library

    return Library(home_from(home).root)


def result_json(entry: dict) -> dict:
    return {k: entry[k] for k in ("id", "prompt", "negative_prompt", "source", "licence", "score", "settings")}


@library_app.command("import")
def import_(
    path: Path = typer.Argument(..., help="A file or folder to import (use 'gallery' with --kind gallery for your own images)."),
    kind: Optional[str] = typer.Option(None, "--kind", help=KIND_HELP),
    source_name: Optional[str] = typer.Option(None, "--source-name", help="The source's name (default: the file's name, or DiffusionDB, Civitai)."),
    licence: Optional[str] = typer.Option(None, "--licence", help="The licence of what you import (e.g. 'CC0 1.0'); shown with every entry."),
    column: Optional[str] = typer.Option(None, "--column", help="For a CSV or parquet prompt list: the column that holds the prompts (default 'prompt')."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Import a file or folder into the library; importing it again adds nothing."""
    with open_library(home) as library, progress_bar(f"Importing {path.name}", None) as bar:
        result = library.import_path(path, kind, source_name=source_name, licence=licence, column=column,
                                     progress=lambda done, total: bar.update(completed=done, total=total))
    styles = f" and {result['styles_added']} new styles" if result["styles_added"] else ""
    say(f"Imported {result['added']} new entries{styles} from {path} ({result['kind']}) into the source "
        f"'{result['source']}', which now has {result['entries']} entries.")


@library_app.command("search")
def search(
    query: str = typer.Argument(..., help="Words to look for (or a description, with --semantic)."),
    semantic: bool = typer.Option(False, "--semantic", help="Search by meaning too (words and meaning combined)."),
    limit: int = typer.Option(10, "--limit", help="How many entries, best first (1 to 500)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {id, prompt, negative_prompt, source, licence, score, settings}."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Search the library's prompts."""
    with open_library(home) as library:
        entries = library.search(query, semantic=semantic, limit=limit).entries
    if as_json:
        out.print_json(json.dumps([result_json(e) for e in entries]))
        return
    if not entries:
        say("Nothing in the library matches.")
    for e in entries:
        settings = ", ".join(f"{k}: {v}" for k, v in e["settings"].items())
        say(f"#{e['id']}  {e['prompt']}")
        if e["negative_prompt"]:
            say(f"    Negative: {e['negative_prompt']}")
        say(f"    {e['source']} ({e['licence'] or 'licence unknown'}){'  ' + settings if settings else ''}")


@library_app.command("sources")
def sources(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {name, kind, licence, entries}."),
    home: Optional[Path] = HomeOption,
) -> None:
    """The library's sources, with their licences and how many entries each has."""
    with open_library(home) as library:
        rows = library.sources()
    if as_json:
        out.print_json(json.dumps([{k: r[k] for k in ("name", "kind", "licence", "entries")} for r in rows]))
        return
    if not rows:
        say("The library is empty: add something with 'localdiffusion library import PATH'.")
    for r in rows:
        say(f"{r['name']} ({r['kind']}): {r['entries']} entries, licence {r['licence'] or 'unknown'}"
            f"{', ' + r['address'] if r['address'] else ''}")


@library_app.command("export-styles")
def export_styles(
    file: Path = typer.Argument(..., help="Where to write: a .csv file A1111 reads (styles.csv), or a .json file Fooocus reads."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Write the library's styles to a file other tools read."""
    with open_library(home) as library:
        count = library.export_styles(file)
    say(f"Wrote {count} styles to {file}.")
