"""Peak RSS of a full SD1.5 pipeline on the CPU, in bf16, at 512x512: the goal is at most 4 GB.

The full-size SD1.5 architecture with random weights is built from the shipped configs (nothing is
downloaded; `localdiffusion.bench.build_model`, saved in fp16 as the bench saves it). A child process then
does what a student's `localdiffusion generate` does: an Engine on a home that holds the model, bf16, one
512x512 image with CFG through the full VAE (a few steps: the peak does not grow with them), saved as a PNG.
The parent reads the child's peak RSS from the kernel (getrusage of the children), so the build's memory is
not counted.

    python benchmarks/memory.py            # about 1-2 minutes on 2 cores
    python benchmarks/memory.py --steps 1 --dtype float32
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
GOAL_MB = 4096

CHILD = """
import sys, time
from localdiffusion.engine import Engine, EngineOptions
from localdiffusion.models.library import ModelLibrary
from localdiffusion.recipe import Recipe
from localdiffusion.store.db import Database
from localdiffusion.store.home import Home
from localdiffusion.store.png import save_png

home = Home(sys.argv[1]).ensure()
engine = Engine(ModelLibrary(home, Database(home.db_path)), EngineOptions(device="cpu", dtype=sys.argv[2], previews=False))
started = time.perf_counter()
result = engine.generate(Recipe(prompt="a lighthouse at dawn", model="sd15", steps=int(sys.argv[3]), width=512, height=512, seed=1))
save_png(result.images[0], home.root / "out.png", result.infotexts[0], None)
print(f"generate: {time.perf_counter() - started:.1f} s (load {result.timings['load']:.1f} s), dtype {engine.dtype}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    from localdiffusion.bench import build_model
    from localdiffusion.store.home import Home

    with tempfile.TemporaryDirectory(prefix="memory-bench-") as temp:
        home = Home(Path(temp) / "home").ensure()
        started = time.perf_counter()
        build_model("sd1", home.model_dir("checkpoint") / "sd15")
        print(f"built the random-weight SD1.5 in {time.perf_counter() - started:.0f} s")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        subprocess.run([sys.executable, "-c", CHILD, str(home.root), args.dtype, str(args.steps)], check=True, env=env)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    verdict = "within" if peak_mb <= GOAL_MB else "OVER"
    print(f"peak RSS of the pipeline process: {peak_mb:.0f} MB ({args.dtype}, 512x512, {args.steps} steps, full VAE) - "
          f"{verdict} the {GOAL_MB} MB goal")


if __name__ == "__main__":
    main()
