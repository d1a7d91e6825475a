"""Finishing benchmarks: SD upscale memory (tiled against untiled) and ControlNet overhead per step.

1. Peak memory (RSS high-water mark, `VmHWM` from /proc, each variant in its own subprocess) of SD
   upscale to TARGET x TARGET on the CPU with the full-size SD1.5 architecture (random weights):
   - tiled: `finish.sd_upscale` (Lanczos x4, then 512-pixel tiles, overlap 64, CFG 7, one denoising
     step per tile: steps 10, denoise 0.1). Memory is flat from tile to tile (the script prints the
     RSS after each), so by default only the first `--tiles` tiles run; `--all-tiles` runs them all.
   - untiled: one img2img `Engine.generate` of the whole TARGET x TARGET image (max_side raised to
     allow it), killed when it passes `--cap-gb` of RSS or `--untiled-limit` seconds; reported as
     failed with the reason.
   Goal: the tiled peak stays under 6 GB.
2. ControlNet overhead per step: the same 512x512 txt2img (CFG 7, Euler) with and without one
   ControlNet unit (a full-size SD1.5 ControlNet, random weights, a ready-made map), the median
   time between step callbacks, as a ratio.

Models are random-weight builds made here (nothing is downloaded), in a temporary folder removed at
the end unless `--cache DIR` names one to keep.

    python benchmarks/finish.py --quick     # target 1024, 2 tiles, short untiled limit
    python benchmarks/finish.py             # target 4096
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

GOAL_GB = 6.0
TILE, OVERLAP = 512, 64
STEPS, DENOISE = 10, 0.1  # int(10 * 0.1) = 1: the smallest denoise that still runs a step
PROMPT = "a lighthouse on a cliff at dusk, detailed"


# --- models --------------------------------------------------------------------------------------


def build_models(work: Path) -> Path:
    """A home with the SD1.5 architecture (random weights) as a checkpoint and a ControlNet made from its UNet."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from localdiffusion.models.single_file import write_standard_folder
    from localdiffusion.store.home import Home

    home = Home(work / "home").ensure()
    folder = home.model_dir("checkpoint") / "sd15-random"
    control = home.model_dir("controlnet") / "sd15-random-control"
    if (folder / "model_index.json").exists() and (control / "config.json").exists():
        return home.root
    configs = write_standard_folder("sd1", work / "sd1-configs")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    pipe = StableDiffusionPipeline(
        unet=unet, vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        scheduler=EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(configs / "scheduler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    ControlNetModel.from_unet(unet).save_pretrained(str(control), safe_serialization=True)
    shutil.rmtree(work / "sd1-configs", ignore_errors=True)
    return home.root


# --- the variants, each run in its own process -----------------------------------------------------


def rss_gb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return 0.0


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux: writing 5 to clear_refs), to split loading from running."""
    Path("/proc/self/clear_refs").write_text("5")


def engine_for(home_root: Path, max_side: int | None = None):
    import torch

    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    torch.set_num_threads(os.cpu_count() or 2)
    home = Home(home_root)
    library = ModelLibrary(home, Database(home.db_path))
    if max_side:
        library.settings = library.settings.model_copy(update={"max_side": max_side})
    return Engine(library)


def source_image(target: int):
    import numpy as np
    from PIL import Image

    side = target // 4
    rng = np.random.default_rng(0)
    layers = [Image.fromarray(rng.integers(0, 255, (n, n, 3), dtype=np.uint8), "RGB").resize((side, side), Image.Resampling.BICUBIC)
              for n in (4, 16, 64)]
    return Image.blend(Image.blend(layers[0], layers[1], 0.4), layers[2], 0.25)


def recipe():
    from localdiffusion.recipe import Recipe

    return Recipe(prompt=PROMPT, steps=STEPS, denoising_strength=DENOISE, cfg_scale=7.0, sampler_name="Euler", seed=1,
                  model="sd15-random")


def run_tiled(home_root: Path, target: int, tiles: int | None, tile: int) -> dict:
    from localdiffusion.errors import Cancelled
    from localdiffusion.finish.sd_upscale import sd_upscale

    engine = engine_for(home_root)
    engine.pipeline(engine.checkpoint("sd15-random"))
    load_peak = rss_gb("VmHWM")
    reset_peak()
    per_tile: list[float] = []
    started = time.perf_counter()

    def progress(p) -> None:
        if p.phase == "sd-upscale" and p.step == p.total and len(per_tile) == p.iteration:
            per_tile.append(round(rss_gb(), 2))
            print(f"  tile {p.iteration + 1}/{p.iterations}: RSS {per_tile[-1]:.2f} GB, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)

    stop = (lambda: len(per_tile) >= tiles) if tiles else None
    try:
        done = sd_upscale(engine, source_image(target), recipe(), "Lanczos", 4, tile=tile, overlap=OVERLAP,
                          on_progress=progress, cancel=stop)
        size, count = done.image.size, len(done.tiles)
    except Cancelled:
        size, count = None, None
    return {"tiles_run": len(per_tile), "tiles_total": count, "rss_after_each_tile_gb": per_tile, "size": size,
            "seconds": round(time.perf_counter() - started, 1), "load_peak_gb": round(load_peak, 2),
            "run_peak_gb": round(rss_gb("VmHWM"), 2)}


def run_untiled(home_root: Path, target: int) -> dict:
    from localdiffusion.engine.images import as_rgb

    engine = engine_for(home_root, max_side=target)
    big = as_rgb(source_image(target)).resize((target, target))
    path = home_root / "untiled-input.png"
    big.save(path)
    started = time.perf_counter()
    engine.generate(recipe().model_copy(update={"mode": "img2img", "init_image": str(path), "width": target, "height": target}))
    return {"seconds": round(time.perf_counter() - started, 1)}


def run_control(home_root: Path, steps: int) -> dict:
    from PIL import Image, ImageDraw

    from localdiffusion.recipe import ControlUnit

    engine = engine_for(home_root)
    edges = Image.new("RGB", (512, 512), "black")
    ImageDraw.Draw(edges).rectangle((100, 100, 400, 400), outline="white", width=4)
    edges.save(home_root / "edges.png")
    base = recipe().model_copy(update={"steps": steps, "width": 512, "height": 512, "mode": "txt2img"})
    controlled = base.model_copy(update={"controls": [ControlUnit(model="sd15-random-control", image=str(home_root / "edges.png"),
                                                                  module="none", resize_mode="Just Resize")]})

    def per_step(r) -> float:
        stamps: list[float] = []
        engine.generate(r, on_progress=lambda p: stamps.append(time.perf_counter()))
        return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))

    per_step(base.model_copy(update={"steps": 2}))  # load and warm up
    per_step(controlled.model_copy(update={"steps": 2}))
    plain, control = per_step(base), per_step(controlled)
    return {"plain_step_s": round(plain, 2), "control_step_s": round(control, 2), "ratio": round(control / plain, 3)}


def child(args: argparse.Namespace) -> None:
    home_root = Path(args.home)
    if args.variant == "tiled":
        result = run_tiled(home_root, args.target, None if args.all_tiles else args.tiles, args.tile)
    elif args.variant == "untiled":
        result = run_untiled(home_root, args.target)
    else:
        result = run_control(home_root, args.steps)
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: one subprocess per variant, watched ------------------------------------------------


def watch(cmd: list[str], limit_s: float, cap_gb: float) -> dict:
    """Run `cmd`, polling its RSS; kill it past `limit_s` seconds or `cap_gb` of RSS. Peak = VmHWM."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    started, peak, failure = time.monotonic(), 0.0, None
    while proc.poll() is None:
        status = _status(proc.pid)
        rss, hwm = status.get("VmRSS", 0.0), status.get("VmHWM", 0.0)
        peak = max(peak, hwm, rss)
        if rss > cap_gb:
            failure = f"stopped at {rss:.1f} GB of RSS, over the {cap_gb:g} GB cap, after {time.monotonic() - started:.0f} s"
        elif time.monotonic() - started > limit_s:
            failure = f"stopped after the {limit_s:g} s limit (RSS then {rss:.1f} GB)"
        if failure:
            proc.kill()
            break
        time.sleep(0.2)
    out = proc.communicate()[0]
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][7:]) if lines else {}
    if not failure and proc.returncode != 0:
        failure = f"exited with code {proc.returncode}"
    return {**result, "peak_rss_gb": round(peak, 2), "failed": failure}


def _status(pid: int) -> dict[str, float]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) / 2**20 for line in text.splitlines() if line.startswith(("VmRSS", "VmHWM"))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="target 1024, a short untiled limit")
    parser.add_argument("--target", type=int, default=None, help="final side in pixels (default 4096, 1024 with --quick)")
    parser.add_argument("--tile", type=int, default=TILE, help="SD upscale tile size in pixels (default 512, the model's native size)")
    parser.add_argument("--tiles", type=int, default=2, help="tiles to run in the tiled variant (memory is flat after the first)")
    parser.add_argument("--all-tiles", action="store_true", help="run every tile")
    parser.add_argument("--untiled-limit", type=float, default=None, help="seconds before the untiled attempt is stopped")
    parser.add_argument("--cap-gb", type=float, default=14.0, help="RSS at which the untiled attempt is stopped")
    parser.add_argument("--control-steps", type=int, default=4)
    parser.add_argument("--skip-control", action="store_true")
    parser.add_argument("--skip-untiled", action="store_true")
    parser.add_argument("--cache", type=Path, default=None, help="keep the built models here and reuse them")
    parser.add_argument("--variant", choices=["tiled", "untiled", "control"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant:
        child(args)
        return 0
    target = args.target or (1024 if args.quick else 4096)
    untiled_limit = args.untiled_limit or (120 if args.quick else 600)
    work = args.cache or Path(tempfile.mkdtemp(prefix="finish-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        import torch

        print(f"# Finishing benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, fp32 on the CPU")
        home_root = build_models(work)
        me = [sys.executable, __file__, "--home", str(home_root), "--target", str(target)]
        tiled = watch([*me, "--variant", "tiled", "--tile", str(args.tile), "--tiles", str(args.tiles), *(["--all-tiles"] if args.all_tiles else [])],
                      limit_s=24 * 3600, cap_gb=args.cap_gb)
        print(f"SD upscale to {target}x{target}, tiled ({args.tile} px, overlap {OVERLAP}): peak RSS {tiled['peak_rss_gb']:.2f} GB "
              f"(goal < {GOAL_GB:g} GB: {'met' if tiled['peak_rss_gb'] < GOAL_GB else 'NOT met'}); "
              f"loading the model {tiled.get('load_peak_gb')} GB, the tiles after loading {tiled.get('run_peak_gb')} GB; "
              f"{tiled.get('tiles_run')} tile(s) run, RSS after each {tiled.get('rss_after_each_tile_gb')}, "
              f"{tiled.get('seconds')} s{'; FAILED: ' + tiled['failed'] if tiled['failed'] else ''}")
        if not args.skip_untiled:
            untiled = watch([*me, "--variant", "untiled"], limit_s=untiled_limit, cap_gb=args.cap_gb)
            outcome = f"FAILED: {untiled['failed']}" if untiled["failed"] else f"finished in {untiled.get('seconds')} s"
            print(f"SD upscale to {target}x{target}, untiled (one img2img): peak RSS {untiled['peak_rss_gb']:.2f} GB; {outcome}")
        if not args.skip_control:
            control = watch([*me, "--variant", "control", "--steps", str(args.control_steps)], limit_s=3600, cap_gb=args.cap_gb)
            print(f"ControlNet overhead per step (512x512, CFG 7, one unit): {control.get('control_step_s')} s against "
                  f"{control.get('plain_step_s')} s, ratio {control.get('ratio')}"
                  f"{'; FAILED: ' + control['failed'] if control['failed'] else ''}")
    finally:
        if args.cache is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
