"""Denoising timeline: what the model predicted at every step of one generation, and what changed when.

A `TimelineRecorder` is a step observer (`Engine.generate(recipe, hooks=RunHooks(on_step=recorder))`). For image 0 of
the first batch it keeps, per step, two small RGB previews made by the cheap latent-to-RGB matrix
(the predicted final image x0 and the noisy latent), never all the latents, so memory stays
bounded; optionally a full VAE decode of x0 at a few chosen steps. For the studio's slider it also
keeps x0 at up to FRAMES evenly spread steps per pass, and `decode_stills()` decodes those with the
model's VAE after the run, a few at a time and at a reduced size, so each frame looks like the image
(the latent preview of a 512 px image is 64 x 64 blocks). The explanation splits the steps into
thirds and reports each third's share of this run's total change of x0.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from localdiffusion.engine.hooks import RunHooks
from localdiffusion.engine.previews import latent_to_rgb
from localdiffusion.engine.sampling import StepState
from localdiffusion.explain.grid import draw_grid
from localdiffusion.models.info import base_family
from localdiffusion.recipe import Recipe

MIN_CELL = 96  # filmstrip cells are enlarged to at least this many pixels, so that tiny latents stay visible
FRAMES = 10  # frames per pass that the studio's slider shows, each decoded with the VAE
STILL_SIDE = 256  # a frame is decoded from latents shrunk by up to 2x while its short side stays at least this
DECODE_BATCH = 4  # frames decoded together
THIRDS = ("composition", "shapes", "detail")


@dataclass
class TimelineFrame:
    step: int  # 1-based, within its pass
    total: int
    phase: str  # "sample" or "hires"
    x0: Image.Image  # the predicted final image, by latent-to-RGB
    noisy: Image.Image  # the latents after this step, by latent-to-RGB
    # Mean absolute change of x0 (latent units) since the previous step of this pass. The first sample
    # step is measured from a blank canvas (the all-zero latent, mid grey), so that the composition the
    # model lays down at step 1 counts; the first hires step, which starts from the upscaled image, is 0.
    change: float
    normalised: float = 0.0  # change / the largest change of the pass, 0..1
    decoded: Image.Image | None = None  # full VAE decode of x0, at the chosen steps only
    still: Image.Image | None = None  # VAE decode of x0 (reduced size) at the steps the studio shows, by decode_stills()


@dataclass
class Third:
    name: str  # "composition", "shapes" or "detail"
    first: int  # 1-based steps, inclusive
    last: int
    share: float  # percent of the pass's total x0 change


@dataclass
class Timeline:
    frames: list[TimelineFrame]
    thirds: list[Third] = field(default_factory=list)
    explanation: str = ""

    def pass_frames(self, phase: str = "sample") -> list[TimelineFrame]:
        return [f for f in self.frames if f.phase == phase]

    def filmstrip(self) -> Image.Image:
        return draw_filmstrip(self)

    def animation(self, duration_ms: int = 200) -> bytes:
        return animated_webp([f.x0 for f in self.frames], duration_ms)

    def summary(self) -> dict[str, Any]:
        steps = [{"step": f.step, "phase": f.phase, "change": round(f.change, 6), "normalised": round(f.normalised, 4),
                  "decoded": f.decoded is not None} for f in self.frames]
        thirds = [{"name": t.name, "first": t.first, "last": t.last, "share": round(t.share, 2)} for t in self.thirds]
        return {"steps": steps, "thirds": thirds, "explanation": self.explanation}


class TimelineRecorder:
    """Step observer that records the timeline of batch image 0 (sample pass, and hires pass when on).
    `decode` turns a batch of latents into images (the engine's VAE decode); `decode_steps` are the
    steps decoded in full during the run; `stills` keeps x0 at up to that many steps per pass for
    decode_stills()."""

    def __init__(self, sdxl: bool = False, decode: Callable[[torch.Tensor], list[Image.Image]] | None = None,
                 decode_steps: Iterable[int] = (), stills: int = 0) -> None:
        self.sdxl = sdxl
        self.decode = decode
        self.decode_steps = set(decode_steps)
        self.stills = stills
        self.frames: list[TimelineFrame] = []
        self._kept: dict[int, torch.Tensor] = {}  # frame index -> x0 latents (1, C, h, w) on the CPU
        self._previous: torch.Tensor | None = None
        self._phase: str | None = None

    def __call__(self, state: StepState, phase: str, batch: int) -> None:
        if batch != 0:
            return
        x0 = state.x0[0].detach().float()
        if phase != self._phase:
            self._previous, self._phase = None, phase
        if self._previous is None:
            change = float(x0.abs().mean()) if phase == "sample" else 0.0
        else:
            change = float((x0 - self._previous).abs().mean())
        self._previous = x0.clone()
        step = state.index + 1
        decoded = None
        if self.decode is not None and phase == "sample" and step in self.decode_steps:
            decoded = self.decode(state.x0[:1])[0]
        if self.stills and step in shown_steps(state.total, self.stills):
            self._kept[len(self.frames)] = state.x0[:1].detach().to("cpu", torch.float32, copy=True)
        self.frames.append(TimelineFrame(step, state.total, phase, latent_to_rgb(x0, self.sdxl),
                                         latent_to_rgb(state.latents[0], self.sdxl), change, decoded=decoded))

    @torch.no_grad()
    def decode_stills(self) -> None:
        """Decode the kept x0 latents with the VAE into each frame's `still`: latents of one size together,
        DECODE_BATCH at a time, shrunk first where the image is large (see `shrunk`)."""
        if self.decode is None or not self._kept:
            return
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, latents in self._kept.items():
            by_shape.setdefault(tuple(latents.shape), []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), DECODE_BATCH):
                part = indices[start:start + DECODE_BATCH]
                images = self.decode(shrunk(torch.cat([self._kept[i] for i in part])))
                for index, image in zip(part, images):
                    self.frames[index].still = image
        self._kept.clear()

    def timeline(self) -> Timeline:
        for phase in {f.phase for f in self.frames}:
            frames = [f for f in self.frames if f.phase == phase]
            largest = max(f.change for f in frames) or 1.0
            for f in frames:
                f.normalised = f.change / largest
        timeline = Timeline(self.frames)
        timeline.thirds = thirds_of([f.change for f in timeline.pass_frames("sample")])
        timeline.explanation = explain(timeline.thirds, hires=bool(timeline.pass_frames("hires")))
        return timeline


def recorder_for(engine: Any, recipe: Recipe, decode_steps: Iterable[int] = (), stills: int = 0) -> TimelineRecorder:
    """A recorder for this recipe's model family; VAE decodes (full ones at `decode_steps`, and the
    `stills` per pass for decode_stills()) use the engine's own decode, with the pipeline the run loads."""
    info = engine.checkpoint(recipe.model)
    steps = list(decode_steps)
    decode = (lambda latents: engine.decode(engine.pipeline(info), latents)) if steps or stills else None  # noqa: E731
    return TimelineRecorder(base_family(info.family) == "sdxl", decode, steps, stills)


def shown_steps(total: int, limit: int = FRAMES) -> list[int]:
    """Up to `limit` 1-based steps of `total`, evenly spread, always the first and the last."""
    if total <= limit:
        return list(range(1, total + 1))
    if limit <= 1:
        return [total]
    return sorted({1 + round(i * (total - 1) / (limit - 1)) for i in range(limit)})


def shrunk(latents: torch.Tensor, side: int = STILL_SIDE) -> torch.Tensor:
    """Latents averaged down by 2 when the decoded image's short side stays at least `side` pixels:
    a quarter of the VAE's work (the decoder costs more than a UNet step), the same picture smaller."""
    height, width = latents.shape[-2:]
    if min(height, width) * 8 < 2 * side:
        return latents
    return F.interpolate(latents, size=(height // 2, width // 2), mode="area")


def capture_timeline(engine: Any, recipe: Recipe, decode_steps: Iterable[int] = ()) -> tuple[Timeline, Any]:
    """Generate `recipe` once (one image) and return its timeline and the engine's Result."""
    recipe = recipe.model_copy(update={"batch_size": 1, "n_iter": 1})
    recorder = recorder_for(engine, recipe, decode_steps)
    result = engine.generate(recipe, hooks=RunHooks(on_step=recorder))
    return recorder.timeline(), result


# --- explaining ---

def thirds_of(changes: list[float]) -> list[Third]:
    """Each third of the steps and its share (percent) of the total change; empty thirds are left out."""
    n = len(changes)
    total = sum(changes)
    bounds = [round(n * k / 3) for k in range(4)]
    thirds = []
    for name, start, end in zip(THIRDS, bounds, bounds[1:]):
        if end > start:
            share = 100.0 * sum(changes[start:end]) / total if total > 0 else 100.0 * (end - start) / n
            thirds.append(Third(name, start + 1, end, share))
    return thirds


def percent(share: float) -> str:
    """A share as people read it: whole percents, one decimal below 1%, '<0.1%' for traces."""
    if share >= 1 or share == 0:
        return f"{share:.0f}%"
    return f"{share:.1f}%" if share >= 0.1 else "<0.1%"


def _steps(third: Third) -> str:
    return f"step {third.first}" if third.first == third.last else f"steps {third.first}-{third.last}"


def explain(thirds: list[Third], hires: bool = False) -> str:
    """Plain words from this run's numbers: which third of the steps changed the predicted image most."""
    if len(thirds) < 3:
        return "Too few steps to tell composition, shapes and detail apart; each step's change is listed instead."
    early, middle, late = thirds
    top = max(thirds, key=lambda t: t.share)
    lead = {
        "composition": f"{percent(early.share)} of the change happened in {_steps(early)}: the composition was decided early.",
        "shapes": f"{percent(middle.share)} of the change happened in the middle, {_steps(middle)}: that is where the "
                  f"shapes formed, after {percent(early.share)} in {_steps(early)} had laid out the composition.",
        "detail": f"{percent(late.share)} of the change happened late, in {_steps(late)}: the image was still being "
                  "reworked at the end, so more steps may help it settle.",
    }[top.name]
    parts = [lead]
    if top.name == "composition":
        parts.append(f"The middle third ({_steps(middle)}) refined the shapes with {percent(middle.share)}.")
    if top.name != "detail":
        quiet = "only " if late.share < 15 else ""
        parts.append(f"The last third ({_steps(late)}) changed {quiet}{percent(late.share)}: fine detail.")
    if hires:
        parts.append("The hires pass then refined the enlarged image; its frames are marked 'hires'.")
    return " ".join(parts)


# --- pictures ---

def _enlarged(image: Image.Image, size: int = MIN_CELL) -> Image.Image:
    scale = max(1, -(-size // max(1, min(image.size))))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST) if scale > 1 else image


def _framed(image: Image.Image) -> Image.Image:
    """A white margin, so that neighbouring cells of the filmstrip do not run into each other."""
    return ImageOps.expand(image, border=max(2, image.width // 40), fill=(255, 255, 255))


def draw_filmstrip(timeline: Timeline) -> Image.Image:
    """Rows: predicted final image (x0), noisy latent and, when decoded, the VAE decode; columns: steps."""
    frames = timeline.frames
    x0_row = [_framed(_enlarged(f.x0)) for f in frames]
    noisy_row = [_framed(_enlarged(f.noisy)) for f in frames]
    rows, labels = [x0_row, noisy_row], ["Predicted final image (x0)", "Noisy latent"]
    if any(f.decoded is not None for f in frames):
        blank = lambda cell: Image.new("RGB", cell.size, (255, 255, 255))  # noqa: E731
        rows.append([_framed(_enlarged(f.decoded).resize(_enlarged(f.x0).size, Image.Resampling.LANCZOS)) if f.decoded else blank(c)
                     for f, c in zip(frames, x0_row)])
        labels.append("Full decode (VAE)")
    steps = [f"{f.step}" if f.phase == "sample" else f"hires {f.step}" for f in frames]
    return draw_grid(rows, "Step", steps, "", labels)


def animated_webp(images: list[Image.Image], duration_ms: int = 200) -> bytes:
    """An animated WebP (looping) of these frames, enlarged to be visible."""
    frames = [_enlarged(i, 256) for i in images]
    size = frames[-1].size
    frames = [f if f.size == size else f.resize(size, Image.Resampling.NEAREST) for f in frames]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0,
                   lossless=True)
    return buffer.getvalue()
