"""`localdiffusion bench`: what this machine can do, measured against raw diffusers in the same invocation.

Full-size models with random weights are built from the configs that ship with the package (nothing is
downloaded; the images are noise but the compute is real) into a temporary home. Each case runs through our
Engine, from the prompt to a saved PNG, beside raw diffusers in fp32 with the full VAE on the same case (on a
GPU also raw diffusers in fp16):

- `sd15-512`: SD1.5, 512x512, 20 steps, CFG 7, the full VAE;
- `turbo-512`: an SD-Turbo-class model (the SD2.1 UNet), 512x512, 1 step, no CFG, decoded by TAESD (a
  random-weight AutoencoderTiny at TAESD's size) where raw diffusers decodes with the full VAE;
- `sdxl-1024`: SDXL, 1024x1024, 20 steps, CFG 7, the full VAE; on a GPU only.

Timings are of warm models (each side has run once at a tiny size first); loading is not timed. `its` is the
denoising loop's steps per second (between the first and the last step's end; from the call's start for a
1-step case). Peak memory is the peak RSS of the process during our run on a CPU (the baseline's models are
gone by then), `torch.cuda.max_memory_allocated` on a GPU. `quick` runs at most 2 of the 20 steps on each side
and adds the measured per-step time for the others (the output says so).

Layers: the CLI (cli/bench.py) calls `run_bench`; this module calls the engine and the model library.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import inspect
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from localdiffusion.errors import BadInput, LocalDiffusionError, one_of

DEVICES = ("cpu", "cuda")
FAMILIES = ("sd1", "sd2", "sdxl")
BACKENDS = ("torch", "openvino")
PROMPT = "a watercolour of a lighthouse on a cliff at dawn, seagulls, soft light"
SEED = 1234
QUICK_STEPS = 2  # timed steps per side with --quick; the rest of the 20 are added at the measured rate


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # the bench family (sd1, sd2, sdxl)
    configs: str  # the shipped config folder it is built from (models/configs/<configs>)
    steps: int
    size: int
    cfg: float
    decoder: str  # our decoder: "full" or "fast" (TAESD)
    gpu_only: bool = False


CASES = (
    Case("sd15-512", "sd1", "sd1", 20, 512, 7.0, "full"),
    Case("turbo-512", "sd2", "sd2", 1, 512, 1.0, "fast"),
    Case("sdxl-1024", "sdxl", "sdxl", 20, 1024, 7.0, "full", gpu_only=True),
)


@dataclass
class CaseResult:
    name: str
    family: str
    backend: str
    dtype: str
    decoder: str
    steps: int
    width: int
    height: int
    seconds: float
    its: float
    peak_mb: float
    baseline_seconds: float
    ratio: float


@dataclass
class Bench:
    machine: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one sentence per case that did not run
    quick: bool = False

    def to_json(self) -> str:
        return json.dumps({"machine": self.machine, "cases": [asdict(c) for c in self.cases]}, indent=2)


# ---------------------------------------------------------------------------------------------
# Random-weight models from the shipped configs


def build_model(configs: str, folder: Path) -> Path:
    """A full-size diffusers folder of the `configs` family (models/configs/<configs>) with random weights,
    saved in fp16 (half the disk and the time; each side loads it in its own precision)."""
    import diffusers

    from localdiffusion.models.single_file import write_standard_folder

    config_folder = write_standard_folder(configs, folder.with_name(folder.name + "-configs"))
    index = json.loads((config_folder / "model_index.json").read_text())
    torch.manual_seed(0)
    parts: dict[str, Any] = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        library, cls_name = spec
        if library is None:
            parts[name] = None
            continue
        cls = getattr(importlib.import_module(library), cls_name)
        where = config_folder / name
        if name.startswith("tokenizer"):
            parts[name] = cls.from_pretrained(where)
        elif library == "transformers":
            parts[name] = cls(cls.config_class.from_pretrained(where))
        else:
            parts[name] = cls.from_config(cls.load_config(where))
    pipeline_cls = getattr(diffusers, index["_class_name"])
    accepted = inspect.signature(pipeline_cls).parameters
    if "requires_safety_checker" in accepted:
        parts["requires_safety_checker"] = False
    pipe = pipeline_cls(**{k: v for k, v in parts.items() if k in accepted})
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its advice on fp32 modules and its progress bars are noise here
    diffusers_logging.disable_progress_bar()
    try:
        pipe.to(torch.float16).save_pretrained(str(folder), safe_serialization=True)
    finally:
        diffusers_logging.set_verbosity(level)
        diffusers_logging.enable_progress_bar()
    shutil.rmtree(config_folder, ignore_errors=True)
    return folder


def build_taesd(folder: Path) -> Path:
    """A random-weight TAESD (AutoencoderTiny at TAESD's size) as a diffusers folder."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(str(folder), safe_serialization=True)
    return folder


# ---------------------------------------------------------------------------------------------
# Measuring


def check(device: str, family: str | None, backend: str) -> torch.device:
    if device not in DEVICES:
        raise BadInput(f"Unknown device '{device}'; use {one_of(list(DEVICES))}.", field="device")
    if family is not None and family not in FAMILIES:
        raise BadInput(f"Unknown family '{family}'; use {one_of(list(FAMILIES))}.", field="family")
    if backend not in BACKENDS:
        raise BadInput(f"Unknown backend '{backend}'; use {one_of(list(BACKENDS))}.", field="backend")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda needs an NVIDIA GPU with CUDA, and this machine has none; use --device cpu.", field="device")
    return torch.device(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release() -> None:
    """Give freed memory back to the system (so the next peak RSS counts only what the next run holds)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory over a block: RSS on the CPU (Linux's VmHWM, reset through /proc/self/clear_refs, else
    sampled), `torch.cuda.max_memory_allocated` on CUDA. In MB."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.mb = device, 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._resettable = _reset_peak_rss()
        self._start = _rss_mb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._resettable:
            self.mb = _rss_mb("VmHWM")
        else:  # no reset: the process's peak so far, at least what it holds now
            import resource

            self.mb = max(_rss_mb("VmRSS"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


@dataclass
class Timing:
    seconds: float  # one image, prompt to saved PNG (ours) or to a PIL image (raw diffusers)
    its: float


def _timing(total: float, marks: list[float], start: float, steps_run: int, steps: int) -> Timing:
    """The image's time for `steps` steps from a run of `steps_run` (step ends at `marks`, the call at `start`):
    the steps not run are added at the measured per-step rate."""
    if steps_run >= 2 and len(marks) >= 2:
        per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
    else:
        per_step = (marks[-1] - start) if marks else total
    return Timing(total + (steps - steps_run) * per_step, 1.0 / per_step if per_step > 0 else 0.0)


class Ours:
    """Our Engine on a temporary home that holds the model (and TAESD)."""

    def __init__(self, home: Any, device: torch.device, backend: str, decoder: str) -> None:
        from localdiffusion.engine import Engine, EngineOptions
        from localdiffusion.models.library import ModelLibrary
        from localdiffusion.store.db import Database

        self.home = home
        self.engine = Engine(ModelLibrary(home, Database(home.db_path)),
                             EngineOptions(device=str(device), backend=backend, vae_decode=decoder, previews=False))
        self.device = device

    def run(self, case: Case, size: int, steps: int, save: Path) -> tuple[float, list[float], float]:
        from localdiffusion.engine import RunHooks
        from localdiffusion.recipe import Recipe
        from localdiffusion.store.png import save_png

        recipe = Recipe(prompt=PROMPT, model="bench", steps=steps, cfg_scale=case.cfg, sampler_name="Euler",
                        width=size, height=size, seed=SEED)
        marks: list[float] = []

        def on_progress(p: Any) -> None:
            if p.phase == "sample":
                sync(self.device)
                marks.append(time.perf_counter())

        sync(self.device)
        start = time.perf_counter()
        result = self.engine.generate(recipe, RunHooks(on_progress=on_progress))
        save_png(result.images[0], save, result.infotexts[0], result.recipes[0].model_dump_json())
        return time.perf_counter() - start, marks, start

    @property
    def dtype(self) -> torch.dtype:
        return self.engine.dtype


def _raw(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _raw_run(pipe: Any, case: Case, size: int, steps: int, device: torch.device) -> tuple[float, list[float], float]:
    """Raw diffusers, the naive call: prompt to a PIL image with the pipeline's own scheduler and full VAE."""
    marks: list[float] = []

    def on_step(_pipe: Any, _i: int, _t: Any, kwargs: dict) -> dict:
        sync(device)
        marks.append(time.perf_counter())
        return kwargs

    generator = torch.Generator("cpu").manual_seed(SEED)
    sync(device)
    start = time.perf_counter()
    pipe(PROMPT, num_inference_steps=steps, guidance_scale=case.cfg if case.cfg > 1 else 0.0, height=size, width=size,
         generator=generator, callback_on_step_end=on_step)
    sync(device)
    return time.perf_counter() - start, marks, start


def machine_info(device: torch.device, quick: bool) -> dict[str, Any]:
    import diffusers

    from localdiffusion.engine.device import cpu_has_bf16, device_name

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_bf16": cpu_has_bf16(), "device": device_name(device),
            "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "load_average": load, "quick": quick}


def run_bench(device: str = "cpu", family: str | None = None, backend: str = "torch", quick: bool = False,
              log: Callable[[str], None] = lambda _: None, work: Path | None = None) -> Bench:
    """Run the cases of `family` (None: all) on `device` with our `backend`, each beside raw diffusers."""
    where = check(device, family, backend)
    bench = Bench(machine_info(where, quick), quick=quick)
    cases = [c for c in CASES if family in (None, c.family)]
    temp = Path(tempfile.mkdtemp(prefix="localdiffusion-bench-", dir=work))
    try:
        for case in cases:
            if case.gpu_only and where.type != "cuda":
                bench.skipped.append(f"{case.name}: SDXL at 1024x1024 runs on a GPU only (--device cuda).")
                continue
            result = _run_case(case, where, backend, quick, temp, log, bench)
            bench.cases.extend(result)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return bench


def _run_case(case: Case, device: torch.device, backend: str, quick: bool, temp: Path, log: Callable[[str], None],
              bench: Bench) -> list[CaseResult]:
    from localdiffusion.store.home import Home

    home = Home(temp / case.name).ensure()
    log(f"{case.name}: building the full-size {case.configs} model with random weights")
    folder = build_model(case.configs, home.model_dir("checkpoint") / "bench")
    if case.decoder == "fast":
        build_taesd(home.model_dir("vae-approx") / "taesd")
    steps_run = min(case.steps, QUICK_STEPS) if quick else case.steps
    size = case.size

    # Ours first, alone in memory (for its peak; a backend that cannot run is skipped before anything else runs).
    log(f"{case.name}: our engine, backend {backend} ({steps_run} of {case.steps} steps)")
    try:
        ours = Ours(home, device, backend, case.decoder)
        ours.run(case, 64, 1, temp / "warm.png")  # loads the model, warms the kernels
    except (LocalDiffusionError, NotImplementedError, ImportError) as e:
        bench.skipped.append(f"{case.name}: the {backend} backend did not run here: {getattr(e, 'message', None) or e}")
        return []
    release()
    with PeakMemory(device) as peak:
        total, marks, start = ours.run(case, size, steps_run, temp / f"{case.name}.png")
    ours_row = ("ours " + backend, ours.dtype, case.decoder, _timing(total, marks, start, steps_run, case.steps), peak.mb)
    del ours
    release()

    # Then raw diffusers (fp32 and, on a GPU, fp16), each alone in memory too.
    rows: list[tuple[str, torch.dtype, str, Timing, float]] = []
    baselines = [torch.float32] + ([torch.float16] if device.type == "cuda" else [])
    for dtype in baselines:
        log(f"{case.name}: raw diffusers {_name(dtype)} ({steps_run} of {case.steps} steps)")
        pipe = _raw(folder, device, dtype)
        _raw_run(pipe, case, 64, 1, device)  # warm-up at a tiny size
        with PeakMemory(device) as peak:
            total, marks, start = _raw_run(pipe, case, size, steps_run, device)
        rows.append(("diffusers", dtype, "full", _timing(total, marks, start, steps_run, case.steps), peak.mb))
        del pipe
        release()

    shutil.rmtree(home.root, ignore_errors=True)

    baseline = round(rows[0][3].seconds, 3)
    results = []
    for label, dtype, decoder, timing, peak_mb in [ours_row, *rows[1:]]:  # rows[0] is the fp32 baseline
        seconds = round(timing.seconds, 3)
        results.append(CaseResult(
            name=case.name, family=case.family, backend=backend if label.startswith("ours") else "diffusers",
            dtype=_name(dtype), decoder=decoder, steps=case.steps, width=size, height=size,
            seconds=seconds, its=round(timing.its, 3), peak_mb=round(peak_mb, 1),
            baseline_seconds=baseline, ratio=round(baseline / seconds, 3) if seconds > 0 else 0.0,
        ))
    return results


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
