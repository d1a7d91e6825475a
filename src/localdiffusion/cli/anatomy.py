"""`localdiffusion anatomy PROMPT`: how a prompt becomes tokens, chunks and a schedule, and what it is made of."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Optional

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from localdiffusion.cli.common import HomeOption, app, home_from, out
from localdiffusion.explain.anatomy import (
    Anatomy,
    AnatomyReport,
    ChunkView,
    StructureReport,
    anatomy_report,
    library_context,
    load_lexicon,
)
from localdiffusion.models.library import ModelLibrary
from localdiffusion.models.tokenizer import load_tokenizer
from localdiffusion.store.db import Database

ENDS = {"end": "end of prompt", "full": "full", "break": "ended by BREAK", "comma": "ended at a comma",
        "embedding": "ended before an embedding"}
MAX_SCHEDULE_ROWS = 8


@app.command("anatomy")
def anatomy(
    prompt: str = typer.Argument(..., help="The prompt, in A1111 syntax: (word:1.3), [from:to:when], [a|b], BREAK, <lora:name:0.8>."),
    negative: str = typer.Option("", "--negative", "-n", help="The negative prompt, shown as tokens and chunks too."),
    steps: int = typer.Option(20, "--steps", help="Sampling steps, for the schedule of [from:to:when] and [a|b] edits."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A checkpoint name, to note how its family reads prompts (optional)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON (the same as POST /api/anatomy)."),
    home_dir: Optional[Path] = HomeOption,
) -> None:
    """Show a prompt's tokens, weights, 75-token chunks and schedule, then check its structure and suggest what is missing."""
    home = home_from(home_dir)
    with Database(home.db_path) as db:
        embeddings, family, model_name = library_context(ModelLibrary(home, db), model)
    report = anatomy_report(prompt, load_tokenizer(home.cache), negative_prompt=negative, steps=steps,
                            embeddings=embeddings, lexicon=load_lexicon(home), model=model_name, family=family)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        out.print(render(report))


def render(report: AnatomyReport) -> Group:
    parts = [*token_view("Prompt", report.prompt, report)]
    if report.negative is not None:
        parts += ["", *token_view("Negative prompt", report.negative, report)]
    return Group(*parts, "", *structure_view(report.structure))


def token_view(title: str, anatomy: Anatomy, report: AnatomyReport) -> list:
    where = f" · model {report.model} ({report.family})" if report.model else ""
    chunks = f"{anatomy.chunk_count} chunk{'s' if anatomy.chunk_count != 1 else ''}"
    parts: list = [Text.assemble((title, "bold underline"), f"  {anatomy.token_count} tokens · {chunks} · {anatomy.steps} steps{where}")]
    if anatomy.loras:
        parts.append(Text("LoRA: " + ", ".join(f"{lora.name} ×{lora.weight:g}" for lora in anatomy.loras), style="magenta"))
    if len(anatomy.schedule) > 1:
        parts.append(schedule_table(anatomy))
    for view in anatomy.texts:
        if len(anatomy.texts) > 1:
            ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in view.steps[:6])
            parts.append(Text(f"Steps {ranges}{' …' if len(view.steps) > 6 else ''}", style="bold"))
        for chunk in view.chunks:
            parts += [chunk_header(chunk), Text.assemble("  ", chunk_tokens(chunk))]
    parts += [Text(f"• {note}", style="dim") for note in anatomy.notes]
    return parts


def schedule_table(anatomy: Anatomy) -> Table:
    table = Table(title="Schedule", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("steps", no_wrap=True)
    table.add_column("text", overflow="fold")
    for entry in anatomy.schedule[:MAX_SCHEDULE_ROWS]:
        steps = str(entry.first_step) if entry.first_step == entry.last_step else f"{entry.first_step}-{entry.last_step}"
        table.add_row(steps, escape(entry.text))
    if len(anatomy.schedule) > MAX_SCHEDULE_ROWS:
        table.add_row("…", f"{len(anatomy.schedule) - MAX_SCHEDULE_ROWS} more")
    return table


def chunk_header(chunk: ChunkView) -> Text:
    moved = f", {chunk.moved_to_next} tokens moved on" if chunk.moved_to_next else ""
    return Text.assemble((f"Chunk {chunk.index + 1}", "bold cyan"), f"  {chunk.token_count}/75 tokens · {ENDS[chunk.ends_by]}{moved}")


def chunk_tokens(chunk: ChunkView) -> Text:
    """The chunk's tokens: sub-word tokens joined by '·', weighted runs coloured and marked ×w."""
    text = Text()
    for (piece, weight, embedding), run in groupby(chunk.tokens, key=lambda t: (t.piece, t.weight, t.embedding)):
        run = list(run)
        style = "magenta" if embedding else "bold yellow" if weight > 1 else "cyan" if weight < 1 else ""
        if text:
            text.append(" ")
        if embedding:
            text.append(f"⟨{embedding}: {len(run)} vectors⟩", style=style)
        else:
            last = len(run) - 1
            text.append("".join(t.text + ("" if i == last else " " if t.word_end else "·") for i, t in enumerate(run)), style=style)
        if weight != 1.0:
            text.append(f"×{weight:.2f}", style="dim")
    return text or Text("(empty)", style="dim")


def structure_view(structure: StructureReport) -> list:
    table = Table(title="Structure", title_justify="left", show_header=False, show_edge=False, pad_edge=False)
    table.add_column("category", style="bold", no_wrap=True)
    table.add_column("phrases", overflow="fold")
    for name, phrases in structure.categories.items():
        shown = ", ".join(escape(p) for p in phrases) if phrases else "[dim]—[/dim]"
        table.add_row(structure.labels.get(name, name), shown)
    parts: list = [table]
    if structure.suggestions:
        parts += ["", Text("Suggestions", style="bold"), *[Text(f"• {s}") for s in structure.suggestions]]
    if structure.warnings:
        parts += ["", Text("Warnings", style="bold yellow"), *[Text(f"• {w.message}", style="yellow") for w in structure.warnings]]
    return parts
