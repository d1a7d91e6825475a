"""Comic benchmark: what layout, lettering and export add on top of generating the panels.

Figure: the time to render the 4-panel example story (`render_book`: generate each panel, save the
project, letter, export PDF + CBZ + page PNGs + panel PNGs at the story's dpi) against four separate
`Engine.generate` calls of the very same panel recipes plus their export as four PNGs with metadata
(what `localdiffusion generate` writes), in the same process on the same warm engine.
Goal: a ratio <= 1.1 (layout and lettering cost almost nothing next to the images). The runs alternate
(comic, plain, plain, comic, ...) so that drift in machine load hits both sides.

On the tiny test model an image takes milliseconds, so the export at 300 dpi dominates and the ratio
says little; the full-size SD1.5 architecture (random weights, built here) is the realistic case.

Figure 2: peak memory (RSS high-water mark from /proc, after the model is loaded and warmed up, each
mode in its own subprocess) of generating the story's panels with shared attention (StoryDiffusion-style,
the first panel's tokens kept for the others) against plain generation of the same panels; with the
bank's estimated and actual size.

    python benchmarks/comic.py --quick                  # tiny model, about a minute
    python benchmarks/comic.py --steps 2 --repeats 2    # + full-size SD1.5 at 512² (about 15 min on 2 CPU cores)
    python benchmarks/comic.py --memory-only --memory-steps 20   # figure 2 on the full-size model only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from engine import build_full, build_tiny, fresh_home, library_of  # noqa: E402  (benchmarks/engine.py)

from localdiffusion.comic.book import render_book  # noqa: E402
from localdiffusion.comic.generate import candidate_recipes  # noqa: E402
from localdiffusion.comic.layouts import ordered_panels  # noqa: E402
from localdiffusion.comic.story import load_story  # noqa: E402
from localdiffusion.engine import Engine, EngineOptions  # noqa: E402
from localdiffusion.store.png import save_png  # noqa: E402

STORY = ROOT / "examples" / "story.yaml"
GOAL = 1.1


def story(steps: int, base_size: int | None, dpi: int, seeded: bool = True):
    project = load_story(STORY)
    project.style = project.style.model_copy(update={"steps": steps, "base_size": base_size, "sampler": "Euler"})
    project.dpi = dpi
    return project


def plain_generates(engine: Engine, recipes, out: Path) -> float:
    """Four separate generate calls, each image saved as a PNG with its infotext and recipe."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    for i, recipe in enumerate(recipes):
        result = engine.generate(recipe)
        save_png(result.images[0], out / f"panel-{i + 1}.png", result.infotexts[0], result.recipes[0].to_json())
    return time.perf_counter() - started


def comic_render(engine: Engine, project, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    render_book(engine, project, out)
    return time.perf_counter() - started


def run_case(name: str, model: Path, work: Path, steps: int, base_size: int | None, dpi: int, repeats: int,
             device: str | None) -> dict:
    home = fresh_home(work / "homes", name, model)
    engine = Engine(library_of(home), EngineOptions(device=device))
    project = story(steps, base_size, dpi)
    recipes = [r for page in project.pages for panel in ordered_panels(project, page)
               for r in candidate_recipes(engine, project, panel, work, 1)]
    plain_generates(engine, recipes[:1], work / "plain")  # load and warm up the model once
    ours, theirs = [], []
    for i in range(repeats):
        pair = [("comic", lambda: comic_render(engine, story(steps, base_size, dpi), work / "out")),
                ("plain", lambda: plain_generates(engine, recipes, work / "plain"))]
        for side, fn in pair if i % 2 == 0 else reversed(pair):
            (ours if side == "comic" else theirs).append(fn())
    size = f"{recipes[0].width}x{recipes[0].height}"
    return {"case": f"{name}, panels {size}, {steps} steps, pages at {dpi} dpi, median of {repeats}",
            "ours": statistics.median(ours), "theirs": statistics.median(theirs),
            "best": min(ours) / min(theirs),
            "range": f"comic {min(ours):.2f}-{max(ours):.2f} s, plain {min(theirs):.2f}-{max(theirs):.2f} s"}


# --- figure 2: shared attention's memory, one subprocess per mode -------------------------------------


def memory_child(model: Path, work: Path, steps: int, base_size: int | None, share: float) -> None:
    """Load and warm up, start the peak afresh, generate every panel; print the peak and the bank as JSON."""
    from finish import reset_peak, rss_gb  # benchmarks/finish.py

    from localdiffusion.comic.book import generate_missing, shared_attention_bytes

    home = fresh_home(work / "homes", f"memory-{share}", model)
    engine = Engine(library_of(home), EngineOptions())
    project = story(steps, base_size, 72)
    project.style = project.style.model_copy(update={"shared_attention": share})
    folder = work / f"memory-{share}" / "project"
    estimate = shared_attention_bytes(engine, project, folder)
    warm = candidate_recipes(engine, project, project.pages[0].panels[0], folder, 1)[0]
    engine.generate(warm.model_copy(update={"steps": 1}))
    loaded = rss_gb()
    reset_peak()
    generate_missing(engine, project, folder)
    print(json.dumps({"loaded_gb": round(loaded, 3), "peak_gb": round(rss_gb("VmHWM"), 3), "estimate_mb": estimate / 2**20,
                      "size": f"{warm.width}x{warm.height}"}))


def memory_case(model: Path, work: Path, steps: int, base_size: int | None, share: float) -> dict:
    rows = {}
    for mode, value in (("plain", 0.0), ("shared", share)):
        cmd = [sys.executable, __file__, "--memory-child", str(model), "--work", str(work), "--memory-steps", str(steps),
               "--share", str(value)] + (["--base-size", str(base_size)] if base_size else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def print_memory(rows: dict, steps: int, share: float) -> None:
    """Whole-process peaks, and the peaks above the loaded model (what generating adds; the loaded size
    itself varies between processes by a few hundred MB with how the weights were paged in)."""
    plain, shared = rows["plain"], rows["shared"]
    print("\n| mode | panels | steps | peak RSS (GB) | after loading (GB) | peak above loading (GB) | bank estimate (MiB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row, estimate in (("plain generation", plain, 0.0), (f"shared attention {share}", shared, shared["estimate_mb"])):
        print(f"| {name} | 4 x {row['size']} | {steps} | {row['peak_gb']:.3f} | {row['loaded_gb']:.3f} | "
              f"{row['peak_gb'] - row['loaded_gb']:.3f} | {estimate:.2f} |")
    added = (shared["peak_gb"] - shared["loaded_gb"]) - (plain["peak_gb"] - plain["loaded_gb"])
    print(f"\nshared / plain peak: {shared['peak_gb'] / plain['peak_gb']:.3f}; above loading, shared adds "
          f"{added * 1024:.0f} MiB (the bank was estimated at {shared['estimate_mb']:.2f} MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--steps", type=int, default=2, help="steps of the full-size case")
    parser.add_argument("--tiny-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dpi", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--cache", type=Path, default=None, help="keep built models here and reuse them")
    parser.add_argument("--memory-steps", type=int, default=20, help="steps per panel for figure 2")
    parser.add_argument("--share", type=float, default=0.5, help="shared-attention share for figure 2")
    parser.add_argument("--memory-only", action="store_true", help="figure 2 only (full-size model)")
    parser.add_argument("--memory-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--base-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.work, args.memory_steps, args.base_size, args.share)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.cache or Path(tempfile.mkdtemp(prefix="comic-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.memory_only:
        folder, _ = build_full(work, torch.float16)
        print_memory(memory_case(folder, work, args.memory_steps, None, args.share), args.memory_steps, args.share)
        return _cleanup(args, work)
    rows = [run_case("tiny-sd1", build_tiny(work), work, args.tiny_steps, 128, args.dpi, args.repeats, args.device)]
    if not args.quick:
        folder, _ = build_full(work, torch.float16)
        rows.append(run_case("sd15-random", folder, work, args.steps, None, args.dpi, args.repeats, args.device))
    print("\n| case | comic render (s) | 4 × generate + PNGs (s) | ratio | best-of ratio | goal | runs |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        print(f"| {row['case']} | {row['ours']:.2f} | {row['theirs']:.2f} | {row['ours'] / row['theirs']:.3f} | "
              f"{row['best']:.3f} | <= {GOAL} | {row['range']} |")
    if args.quick:
        print_memory(memory_case(build_tiny(work), work, args.tiny_steps, 128, args.share), args.tiny_steps, args.share)
    else:
        print_memory(memory_case(folder, work, args.memory_steps, None, args.share), args.memory_steps, args.share)
    return _cleanup(args, work)


def _cleanup(args: argparse.Namespace, work: Path) -> int:
    if args.cache is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
