"""`localdiffusion bench`: what this machine can do, measured against raw diffusers (localdiffusion/bench.py)."""

from __future__ import annotations

from typing import Optional

import typer

from localdiffusion.cli.common import app, err, out

COLUMNS = ("case", "backend", "dtype", "decoder", "steps", "size", "s/image", "it/s", "peak MB", "diffusers fp32 s", "ratio")


@app.command("bench")
def bench(
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    family: Optional[str] = typer.Option(None, "--family", help="Only this family's case: sd1 (sd15-512), sd2 (turbo-512) or sdxl (sdxl-1024, GPU only)."),
    backend: str = typer.Option("torch", "--backend", help="What runs our networks: torch or openvino."),
    quick: bool = typer.Option(False, "--quick", help="Time 2 of the 20 steps on each side and add the rest at the measured rate (a few minutes on a laptop CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object: {\"machine\": {...}, \"cases\": [...]}."),
) -> None:
    """Measure this machine: full-size models with random weights (nothing downloaded), our engine against raw diffusers."""
    from localdiffusion.bench import check, run_bench

    check(device, family, backend)  # a bad value is one sentence before anything is built
    result = run_bench(device, family, backend, quick, log=lambda line: err.print(f"[dim]{line}[/dim]", highlight=False))
    for line in result.skipped:
        err.print(f"[yellow]Skipped[/yellow] {line}", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(result.to_json())
        return
    m = result.machine
    out.print(f"{m['cpu']}, {m['cores']} cores, {m['device']}, torch {m['torch']}, diffusers {m['diffusers']}"
              f"{', native bf16' if m['cpu_bf16'] else ''}; load average {m['load_average']}", highlight=False)
    typer.echo(table(result.cases))
    if result.quick:
        out.print("--quick: 2 of the 20 steps were timed on each side and the others added at the measured per-step time.",
                  highlight=False)
    out.print("ratio: raw diffusers fp32 with the full VAE, seconds per image, divided by this row's.", highlight=False)


def table(cases: list) -> str:
    """The cases as a plain text table (it reads the same in a terminal of any width and in the README)."""
    rows = [COLUMNS] + [(c.name, c.backend, c.dtype, c.decoder, str(c.steps), f"{c.width}x{c.height}", f"{c.seconds:.2f}",
                         f"{c.its:.2f}", f"{c.peak_mb:.0f}", f"{c.baseline_seconds:.2f}", f"{c.ratio:.2f}x") for c in cases]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    return "\n".join(lines)
