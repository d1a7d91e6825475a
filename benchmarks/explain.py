"""Explanation benchmarks, each a ratio of two timings taken in one invocation.

1. Compare: a 3x3 `compare` (CFG x seed) against nine separate `Engine.generate` calls of the
   same cells, in the same process on the same warm engine. `compare` runs cells that differ only
   by seed as one batch, so the goal is <= 0.8 on a CPU (lower on a GPU). The compare side also
   writes its grid, cell PNGs and JSON, and that time counts against it.
2. Attention capture: one generation with word-heatmap capture against the same generation
   without it (goal <= 1.25). Its CPU-time ratio is printed too: on a machine shared with other
   work, wall-clock medians swing, while the CPU time this process spends is steadier.

    python benchmarks/explain.py [--size 128] [--steps 8] [--repeats 3] [--only compare|attention]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builders

import torch  # noqa: E402
from factories import build_sd1  # noqa: E402

from localdiffusion.engine import Engine  # noqa: E402
from localdiffusion.engine.attention import AttentionRecorder  # noqa: E402
from localdiffusion.explain.compare import compare  # noqa: E402
from localdiffusion.models.library import ModelLibrary  # noqa: E402
from localdiffusion.recipe import Recipe  # noqa: E402
from localdiffusion.store.db import Database  # noqa: E402
from localdiffusion.store.home import Home  # noqa: E402


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cpu_timed(run) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def compare_vs_separate(engine: Engine, recipe: Recipe, repeats: int, scratch: Path) -> tuple[float, float]:
    cfgs, seeds = [3.0, 7.0, 12.0], [1, 2, 3]

    def separate() -> None:
        for cfg in cfgs:
            for seed in seeds:
                engine.generate(recipe.model_copy(update={"cfg_scale": cfg, "seed": seed}))

    def grid(i: int) -> None:
        compare(recipe, "cfg_scale=3,7,12", "seed=1-3", out_dir=scratch / f"grid-{i}", engine=engine)

    grid(-1), separate()  # warm up both paths
    ours, theirs = [], []
    for i in range(repeats):
        ours.append(timed(lambda: grid(i)))
        theirs.append(timed(separate))
    return statistics.median(ours), statistics.median(theirs)


def attention_overhead(engine: Engine, recipe: Recipe, repeats: int, clock=timed) -> tuple[float, float]:
    """One generation with word-heatmap capture (both halves: the recipe has a negative prompt) against
    the same generation without it (medians)."""
    with_capture, without = [], []
    for _ in range(repeats + 1):  # the first pair warms up
        with_capture.append(clock(lambda: engine.generate(recipe, attention=AttentionRecorder(recipe.steps))))
        without.append(clock(lambda: engine.generate(recipe)))
    return statistics.median(with_capture[1:]), statistics.median(without[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["compare", "attention"], help="run one of the two figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home").ensure()
        build_sd1(home.model_dir("checkpoint") / "tiny-sd1", Path(tmp) / "tokenizer")
        engine = Engine(ModelLibrary(home, Database(home.db_path)))
        recipe = Recipe(prompt="a lighthouse at dusk, oil painting", negative_prompt="blurry", steps=args.steps,
                        width=args.size, height=args.size, sampler_name="Euler", model="tiny-sd1")
        print("\n| figure | ours (s) | reference (s) | ratio | goal |\n| --- | ---: | ---: | ---: | --- |")
        if args.only != "attention":
            ours, theirs = compare_vs_separate(engine, recipe, args.repeats, Path(tmp))
            print(f"| 3x3 compare (CFG x seed) vs 9 generate calls, tiny-sd1 {args.size}px {args.steps} steps "
                  f"| {ours:.3f} | {theirs:.3f} | {ours / theirs:.3f} | <= 0.8 |")
        if args.only != "compare":
            capture, plain = attention_overhead(engine, recipe, args.repeats)
            print(f"| attention capture vs plain generate | {capture:.3f} | {plain:.3f} | {capture / plain:.3f} | <= 1.25 |")
            capture, plain = attention_overhead(engine, recipe, args.repeats, clock=cpu_timed)
            print(f"| same, CPU time of this process | {capture:.3f} | {plain:.3f} | {capture / plain:.3f} | <= 1.25 |")
    print(f"\nload at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
