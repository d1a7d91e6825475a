"""Engine benchmarks against raw diffusers, on the same models, settings and process.

Three figures, each a ratio of two timings taken in one invocation:

1. Engine overhead, twice:
   a. a diffusers sampler (DEIS): `Engine.generate(recipe)` against the naive diffusers call
      `StableDiffusionPipeline.from_pretrained(folder)(prompt, num_inference_steps=..., generator=...)`;
   b. an A1111 sampler (Euler): `Engine.generate(recipe)` against the same sampler run plainly: the
      pipeline's `encode_prompt`, the k-sampling core's Euler over a plain CFG denoiser around the UNet,
      the VAE decode and A1111's 8-bit conversion, nothing else.
   Both sides have their models loaded and warmed up once; generation call only. The runs
   alternate (ours, theirs, theirs, ours, ...) so that drift in machine load hits both sides.
   Cases: the tiny test SD1 model at 128x128 and the full-size SD1.5 architecture with random
   weights at 512x512 (2 steps by default).
2. Warm cache: the second `generate` of a fresh Engine against its first (which loads the model,
   scans the library and hashes the checkpoint).
3. Single-file load: our loader path (library scan, then `load_pipeline` -> `load_single_file`)
   against diffusers' `StableDiffusionPipeline.from_single_file(path, config=folder)` on the same
   A1111-style file.

Models are random-weight builds made here (nothing is downloaded). They live in a temporary
folder that is removed at the end, unless `--cache DIR` names a folder to keep and reuse.

    python benchmarks/engine.py --quick     # tiny model only (about a minute on 2 CPU cores)
    python benchmarks/engine.py             # --full: tiny + full-size + single file
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/factories.py builds the tiny model

PROMPT = "a photo of a cat sitting on a windowsill, soft morning light"
SEED = 1234
CFG = 7.0
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GOAL_OVERHEAD = 1.03


@dataclass
class Case:
    """One model and the settings both sides generate with."""

    name: str
    folder: Path
    size: int
    steps: int
    repeats: int


@dataclass
class Row:
    figure: str
    case: str
    ours: float
    reference: float
    note: str = ""
    goal: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Timing and machine


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


@dataclass
class Samples:
    """Wall and process-CPU seconds of repeated runs of one side."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self, fn: Callable[[], Any], device: torch.device) -> Any:
        cpu = time.process_time()
        wall, out = timed(fn, device)
        self.wall.append(wall)
        self.cpu.append(time.process_time() - cpu)
        return out


def interleaved(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int, device: torch.device,
                what: str, wait_idle: float) -> tuple[Samples, Samples]:
    """Timed pairs in alternating order (ours first, then theirs first, ...) so drift hits both sides."""
    a, b = Samples(), Samples()
    for i in range(repeats):
        wait_for_quiet(wait_idle)
        log(f"{what}: timed pair {i + 1}/{repeats}")
        pair = [(a, ours), (b, theirs)]
        for samples, fn in pair if i % 2 == 0 else reversed(pair):
            samples.run(fn, device)
            free()
    return a, b


def compare(a: Samples, b: Samples) -> str:
    """Secondary views of the same runs, which a busy machine disturbs less than the median wall time."""
    return (f"best-of ratio {min(a.wall) / min(b.wall):.3f}, CPU-time ratio "
            f"{statistics.median(a.cpu) / statistics.median(b.cpu):.3f}; wall ours {min(a.wall):.2f}-{max(a.wall):.2f} s, "
            f"reference {min(b.wall):.2f}-{max(b.wall):.2f} s")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def busy_fraction(seconds: float = 1.0) -> float:
    """How busy all CPUs were over the next `seconds` (from /proc/stat; 0 where it cannot be read)."""
    def ticks() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle
    try:
        total0, idle0 = ticks()
        time.sleep(seconds)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(limit: float, threshold: float = 0.25) -> None:
    """Wait up to `limit` seconds until other processes leave the CPUs mostly idle."""
    deadline = time.monotonic() + limit
    while limit > 0 and time.monotonic() < deadline:
        busy = busy_fraction()
        if busy < threshold:
            return
        log(f"waiting: other processes keep the CPUs {busy:.0%} busy")
        time.sleep(4)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine(device: torch.device, dtype: torch.dtype) -> list[str]:
    import diffusers
    import transformers

    lines = [
        f"date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"cpu: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}",
        f"device: {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"dtype {str(dtype).removeprefix('torch.')}",
        f"at start: load average (1/5/15 min) {load_average()}, CPUs {busy_fraction():.0%} busy (other processes)",
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# Models


def build_tiny(work: Path) -> Path:
    from factories import build_sd1

    folder = work / "tiny-sd1"
    if not (folder / "model_index.json").exists():
        build_sd1(folder, work / "tokenizers")
    return folder


def build_full(work: Path, single_dtype: torch.dtype) -> tuple[Path, Path]:
    """The SD1.5 architecture with random weights: a diffusers folder and its A1111 single-file twin."""
    folder = work / "sd15-random"
    single = work / f"sd15-random-{_dtype_name(single_dtype)}.safetensors"
    if (folder / "model_index.json").exists() and single.exists():
        return folder, single
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from localdiffusion.models.single_file import save_single_file, write_standard_folder

    configs = write_standard_folder("sd1", work / "sd1-configs")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        scheduler=EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(configs / "scheduler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    save_single_file(pipe.to(single_dtype), single)
    shutil.rmtree(work / "sd1-configs", ignore_errors=True)
    return folder, single


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def fresh_home(root: Path, name: str, model: Path):
    """A home folder whose checkpoint folder links `model` (read in place, as users' models are)."""
    from localdiffusion.store.home import Home

    home = Home(root / name).ensure()
    link = home.model_dir("checkpoint") / model.name
    link.symlink_to(model, target_is_directory=model.is_dir())
    return home


def library_of(home):
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return ModelLibrary(home, Database(home.db_path))


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Figures 1 and 2: engine overhead and the warm cache


def same_pixels(a, b) -> bool:
    return a.size == b.size and bool((np.asarray(a) == np.asarray(b)).all())


def engine_against_raw(case: Case, homes: Path, device: torch.device, dtype: torch.dtype, wait_idle: float,
                       report: Report) -> None:
    from diffusers import DEISMultistepScheduler, StableDiffusionPipeline

    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.recipe import Recipe

    home = fresh_home(homes, f"home-{case.name}", case.folder)
    engine = Engine(library_of(home), EngineOptions(device=str(device), dtype=str(dtype).removeprefix("torch.")))
    recipe = Recipe(prompt=PROMPT, negative_prompt="", seed=SEED, steps=case.steps, width=case.size, height=case.size,
                    cfg_scale=CFG, sampler_name="DEIS", model=case.folder.name)
    wait_for_quiet(wait_idle)
    log(f"{case.name}: engine, cold generate (loads the model)")
    cold, first = timed(lambda: engine.generate(recipe), device)
    log(f"{case.name}: engine, second generate (warm cache)")
    warm, _ = timed(lambda: engine.generate(recipe), device)

    log(f"{case.name}: raw diffusers, from_pretrained and warm-up")
    raw_load, raw = timed(lambda: StableDiffusionPipeline.from_pretrained(
        str(case.folder), local_files_only=True, dtype=dtype).to(device), device)
    raw.scheduler = DEISMultistepScheduler.from_config(raw.scheduler.config)  # the engine's "DEIS"
    raw.set_progress_bar_config(disable=True)

    def raw_call():
        return raw(PROMPT, negative_prompt="", num_inference_steps=case.steps, height=case.size, width=case.size,
                   guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED)).images[0]

    identical = same_pixels(first.images[0], raw_call())
    ours, theirs = interleaved(lambda: engine.generate(recipe), raw_call, case.repeats, device, case.name, wait_idle)
    report.rows.append(Row(
        "1a engine overhead", f"{case.name} {case.size}x{case.size}, DEIS, {case.steps} steps, median of {case.repeats}",
        statistics.median(ours.wall), statistics.median(theirs.wall),
        f"same pixels as diffusers: {'yes' if identical else 'NO'}; {compare(ours, theirs)}", f"<= {GOAL_OVERHEAD}",
    ))
    report.rows.append(Row(
        "2 warm cache", f"{case.name}: 2nd generate vs 1st (cold)", warm, cold,
        f"cold = load {first.timings.get('load', 0):.2f} s + generate {first.timings.get('generate', 0):.2f} s "
        f"(raw from_pretrained alone: {raw_load:.2f} s)",
    ))


def a1111_against_plain(case: Case, homes: Path, device: torch.device, dtype: torch.dtype, wait_idle: float,
                        report: Report) -> None:
    """Figure 1b: the engine's A1111 Euler against the same sampler wired plainly over the same pipeline."""
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from localdiffusion.engine import Engine, EngineOptions
    from localdiffusion.engine.k_sampling.denoiser import CFGDenoiser, alphas_cumprod_from_config, unet_network
    from localdiffusion.engine.k_sampling.pixels import to_uint8_a1111
    from localdiffusion.engine.k_sampling.rng import ImageRNG
    from localdiffusion.engine.k_sampling.run import denoiser_for, sample
    from localdiffusion.engine.k_sampling.table import K_SAMPLERS
    from localdiffusion.recipe import Recipe

    home = fresh_home(homes, f"home-a1111-{case.name}", case.folder)
    engine = Engine(library_of(home), EngineOptions(device=str(device), dtype=str(dtype).removeprefix("torch.")))
    recipe = Recipe(prompt=PROMPT, negative_prompt="", seed=SEED, steps=case.steps, width=case.size, height=case.size,
                    cfg_scale=CFG, sampler_name="Euler", model=case.folder.name)
    first = engine.generate(recipe)
    pipe = StableDiffusionPipeline.from_pretrained(str(case.folder), local_files_only=True, dtype=dtype).to(device)
    sampler = K_SAMPLERS["Euler"]
    den = denoiser_for(sampler, unet_network(pipe.unet), alphas_cumprod_from_config(pipe.scheduler.config).to(device))

    @torch.no_grad()
    def plain_call():
        cond, uncond = pipe.encode_prompt(PROMPT, device, 1, True, "")
        extra = {"cond": {"encoder_hidden_states": cond}, "uncond": {"encoder_hidden_states": uncond}, "cond_scale": CFG}
        image_rng = ImageRNG((4, case.size // 8, case.size // 8), [SEED], device=device)
        latents = sample(sampler, CFGDenoiser(den), den, image_rng, [SEED], case.steps, extra_args=extra, device=device)
        decoded = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
        return Image.fromarray(to_uint8_a1111(decoded)[0])

    identical = same_pixels(first.images[0], plain_call())
    ours, theirs = interleaved(lambda: engine.generate(recipe), plain_call, case.repeats, device, case.name, wait_idle)
    report.rows.append(Row(
        "1b A1111 sampler overhead", f"{case.name} {case.size}x{case.size}, Euler, {case.steps} steps, median of {case.repeats}",
        statistics.median(ours.wall), statistics.median(theirs.wall),
        f"same pixels as the plain run: {'yes' if identical else 'NO'}; {compare(ours, theirs)}", f"<= {GOAL_OVERHEAD}",
    ))


# ---------------------------------------------------------------------------------------------
# Figure 3: single-file load


def weights_equal(a, b) -> bool:
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


def single_file_load(single: Path, config_folder: Path, homes: Path, repeats: int, device: torch.device,
                     wait_idle: float, report: Report) -> None:
    from diffusers import StableDiffusionPipeline

    from localdiffusion.models.loader import load_pipeline

    home = fresh_home(homes, "home-single", single)
    library = library_of(home)
    log("single file: library scan (detects the family from the tensors)")
    scan, info = timed(lambda: library.get(single.stem), device)
    dtype = torch.float32  # both sides give fp32 weights (the CPU default), whatever the file holds

    def ours():
        return load_pipeline(info, home.cache, dtype, allow_pickle=False)

    def theirs():
        return StableDiffusionPipeline.from_single_file(str(single), config=str(config_folder),
                                                        local_files_only=True, dtype=dtype)

    log("single file: warm-up load on each side (page cache, our one-time derived config folder)")
    a, b = ours(), theirs()
    equal = weights_equal(a, b)
    del a, b
    free()
    ours_t, theirs_t = interleaved(ours, theirs, repeats, device, "single file", wait_idle)
    size = single.stat().st_size / 2**30
    file_dtype = "fp16" if "fp16" in single.name else "fp32"
    report.rows.append(Row(
        "3 single-file load", f"SD1.5 random, {size:.2f} GiB {file_dtype} file -> fp32, median of {repeats}",
        statistics.median(ours_t.wall), statistics.median(theirs_t.wall),
        f"same weights: {'yes' if equal else 'NO'}; {compare(ours_t, theirs_t)}; library scan before it "
        f"(not in the ratio): {scan:.2f} s",
    ))


# ---------------------------------------------------------------------------------------------
# Output


def table(report: Report) -> str:
    lines = [
        "| figure | case | ours (s) | reference (s) | ratio | goal | notes |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in report.rows:
        lines.append(f"| {r.figure} | {r.case} | {r.ours:.3f} | {r.reference:.3f} | {r.ratio:.3f} | {r.goal} | {r.note} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--quick", action="store_true", help="tiny model only (a smoke run)")
    scope.add_argument("--full", action="store_true", help="tiny + full-size + single file (the default)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per side for every case (default: 20 tiny, 2 full size, 2 single-file loads)")
    p.add_argument("--steps", type=int, default=2, help="full-size steps (default 2; the tiny model runs 8)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: what the engine would pick)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--single-file-dtype", choices=["fp16", "fp32"], default="fp16",
                   help="precision the single file is saved in (fp16: 2 GB, as most downloads; fp32: 4 GB)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each timed pair, wait up to this long for other processes to leave the CPUs idle")
    p.add_argument("--cache", type=Path, default=None,
                   help="keep the built models here and reuse them (default: a temporary folder, removed at the end)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its 4 GB of models
    torch.set_num_threads(args.threads)
    from localdiffusion.engine.device import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else pick_dtype(device)
    header = machine(device, dtype)
    print("\n".join(header), flush=True)

    work = args.cache or Path(tempfile.mkdtemp(prefix="ld-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    homes = Path(tempfile.mkdtemp(prefix="ld-bench-homes-"))  # fresh homes: no hash cached from a previous run
    report = Report()
    started = time.perf_counter()
    try:
        log("building the tiny SD1 model")
        tiny = Case("tiny-sd1", build_tiny(work), 128, 8, args.repeats or 20)
        engine_against_raw(tiny, homes, device, dtype, args.wait_idle, report)
        a1111_against_plain(tiny, homes, device, dtype, args.wait_idle, report)
        free()  # the models of a case go when its function returns
        if not args.quick:
            log("building the full-size SD1.5 architecture with random weights (about 4 GB on disk)")
            folder, single = build_full(work, DTYPES[args.single_file_dtype])
            full = Case(folder.name, folder, 512, args.steps, args.repeats or 2)
            engine_against_raw(full, homes, device, dtype, args.wait_idle, report)
            a1111_against_plain(full, homes, device, dtype, args.wait_idle, report)
            free()
            single_file_load(single, folder, homes, args.repeats or 2, device, args.wait_idle, report)
    finally:
        shutil.rmtree(homes, ignore_errors=True)
        if args.cache is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(report))
    print()
    print("ratio = ours / reference. Figure 1: Engine.generate vs the raw StableDiffusionPipeline call (lower is better, "
          f"goal <= {GOAL_OVERHEAD}). Figure 2: warm 2nd generate vs cold 1st. Figure 3: our single-file load vs "
          "diffusers' from_single_file.")
    print(f"at end: load average (1/5/15 min) {load_average()}, CPUs {busy_fraction():.0%} busy (other processes); "
          f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
