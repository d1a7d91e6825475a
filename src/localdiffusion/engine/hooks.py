"""What a caller watches and steers during a generation, in one object: `RunHooks`.

Progress (with cheap previews), cancel, raw step observers (explanations), attention capture (word
heatmaps) and shared attention (comic panels) travel together, so `Engine.generate` keeps one
argument however many features watch a run. The load phase's events (`LoadWatch`) and the per-step
fan-out (`StepWatch`) live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from localdiffusion.engine.attention import AttentionRecorder
from localdiffusion.engine.previews import latent_to_rgb
from localdiffusion.engine.sampling import StepState
from localdiffusion.engine.shared_attention import SharedAttention


@dataclass
class Progress:
    step: int  # 1-based; 0 in the "load" phase, before any step has run
    total: int  # the pass's steps (in the "load" phase too, so that step/total reads "nothing sampled yet")
    iteration: int  # which batch of n_iter, 0-based
    iterations: int
    phase: str  # "load", "sample" or "hires"
    preview: Image.Image | None = None
    # The "load" phase: the models that were not in memory yet load one after another, before the first
    # step. `loading` names the one loading now ("" once it has loaded); `loaded` of `parts` are done.
    loading: str = ""
    loaded: int = 0
    parts: int = 0
    # Anything else a job kind reports with its step (a training job: the loss, its history, the ETA, samples),
    # passed on as it is in the job's progress data.
    extra: dict | None = None


@dataclass
class RunHooks:
    """Everything that watches or steers one `Engine.generate` call; every part is optional.

    `on_progress` gets a Progress per step (with a cheap preview); `on_step` the raw StepState (latents, the
    x0 prediction, unconditional and conditional predictions) with the pass ("sample"/"hires") and batch
    index; `cancel` is polled every step; `attention` records the base UNet's cross-attention maps during the
    run; `shared` keeps (while writing) or attends to (while reading) up-block self-attention tokens across runs."""

    on_progress: Callable[[Progress], None] | None = None
    cancel: Callable[[], bool] | None = None
    on_step: Callable[[StepState, str, int], None] | None = None
    attention: AttentionRecorder | None = None
    shared: SharedAttention | None = None

    def step_observer(self) -> Callable[[StepState, str, int], None] | None:
        """`on_step`, after the attention recorder has been told that a step ended."""
        if self.attention is None:
            return self.on_step
        attention, on_step = self.attention, self.on_step

        def watch(state: StepState, phase: str, batch: int) -> None:
            attention.after_step(state)
            if on_step is not None:
                on_step(state, phase, batch)

        return watch


@dataclass
class LoadWatch:
    """Progress events of the load phase: one as each model starts loading and one as it is in memory.
    diffusers gives no finer progress within one model, so a part is a whole checkpoint or ControlNet."""

    on_load: Callable[[Progress], None]
    total: int  # the recipe's steps
    iterations: int
    parts: int  # how many models are not in memory yet
    loaded: int = 0

    def begin(self, what: str) -> None:
        self.parts = max(self.parts, self.loaded + 1)
        self._emit(what)

    def end(self) -> None:
        self.loaded += 1
        self._emit("")

    def _emit(self, what: str) -> None:
        self.on_load(Progress(0, self.total, 0, self.iterations, "load", loading=what, loaded=self.loaded, parts=self.parts))


@dataclass
class StepWatch:
    """Who watches the steps of one batch: progress events (with cheap previews) and step observers
    (explanations), told which batch and which pass ("sample" or "hires") a step belongs to."""

    iteration: int
    iterations: int
    sdxl: bool
    previews: bool
    on_progress: Callable[[Progress], None] | None
    on_step: Callable[[StepState, str, int], None] | None
    phase: str = "sample"
    # The preview maker: TAESD where it is installed (engine/previews.taesd_preview), else the latent matrix.
    decode_preview: Callable[[torch.Tensor], Image.Image] | None = None

    def __call__(self, state: StepState) -> None:
        if self.on_step is not None:
            self.on_step(state, self.phase, self.iteration)
        if self.on_progress is not None:
            preview = self.preview(state.x0[0]) if self.previews else None
            self.on_progress(Progress(state.index + 1, state.total, self.iteration, self.iterations, self.phase, preview))

    def preview(self, latent: torch.Tensor) -> Image.Image:
        if self.decode_preview is not None:
            return self.decode_preview(latent)
        return latent_to_rgb(latent, sdxl=self.sdxl)
