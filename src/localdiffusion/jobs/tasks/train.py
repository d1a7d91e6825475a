"""The "train" job kind: a LoRA or an embedding from a dataset's pictures, in the queue like any job.

`job.params` is a `TrainParams` (the server fills it from a dataset: the pictures as input refs with their
captions and crops, the trigger word, the stated source, the owner's name), `job.recipe.model` the base
checkpoint. The task writes the dataset as a kohya folder and runs `train/`'s trainer in the job's working
folder `HOME/training/<owner>/job-<job id>/` (on the worker's machine), whose name follows from the job id
alone: a job re-queued after a `kill -9` of the server finds its checkpoint there and goes on from its step.
That folder is the worker's scratch space, the one thing a task writes itself (a checkpoint must outlive the
process). The finished file is a `ModelArtefact` the result store writes into the library (models/Lora/<owner>/
or embeddings/<owner>/), and the samples and loss history are files of `outputs/training/job-<id>/`.

Every `sample_every` steps the training's own pipeline (its copy of the base with the adapters as they are at
that step; the file is not in the library yet, so the engine cannot load it) draws the same prompt with and
without the trigger word at a fixed seed: a participant watches the model learn, and sees it overfit.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.engine import Progress
from localdiffusion.engine.inputs import open_input
from localdiffusion.jobs.artefacts import FileArtefact, ModelArtefact, TaskOutput
from localdiffusion.jobs.estimate import engine_facts
from localdiffusion.jobs.tasks import TaskContext
from localdiffusion.store.files import write_atomic, write_text_atomic

FOLDER = "training"
HISTORY_POINTS = 200  # the loss history a progress event carries (the whole one is in losses.json)
SAMPLE_THUMB = 160  # the samples' size in progress events
SAMPLE_SETS_IN_PROGRESS = 6


class Picture(BaseModel):
    """One picture of a dataset: a kept input (inputs/<hash>.png), its caption, its crop box in pixels."""

    model_config = ConfigDict(extra="forbid")
    ref: str
    caption: str = Field("", max_length=2000)
    crop: list[int] | None = Field(None, min_length=4, max_length=4)  # left, top, right, bottom; None: the whole picture


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["lora", "embedding"] = "lora"
    owner: str  # the owner's name: their folder in the library and under HOME/training
    name: str  # the file's name (the trigger word unless given)
    trigger: str  # the trigger word (a LoRA) or the new word (an embedding)
    dataset: str = ""  # the dataset's id and name, for the provenance record
    dataset_name: str = ""
    source: str = ""  # where the pictures came from and whose they are
    pictures: list[Picture] = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)  # TrainSettings overrides
    sample_every: int = Field(0, ge=0)  # 0: a quarter of the steps
    sample_prompt: str | None = Field(None, max_length=2000)  # None: the first picture's caption
    sample_seed: int = Field(1234, ge=0, le=2**32 - 1)
    sample_steps: int = Field(20, ge=1, le=150)
    sample_size: int | None = Field(None, ge=64, le=2048, multiple_of=8)  # None: the training resolution


def run_name(job_id: int) -> str:
    return f"{FOLDER}/job-{int(job_id)}"


def work_dir(home_root: Path, owner: str, job_id: int) -> Path:
    """The job's working folder: HOME/training/<owner>/job-<id>/ (dataset/ and run/), the same for every attempt."""
    from localdiffusion.train.output import check_name

    return Path(home_root) / FOLDER / check_name(owner, "owner") / f"job-{int(job_id)}"


def write_dataset(ctx: TaskContext, pictures: list[Picture], folder: Path) -> None:
    """The pictures (cropped) with same-named captions, kohya's convention; the same bytes on every attempt."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, picture in enumerate(pictures):
        image = open_input(ctx.inputs, picture.ref, f"picture {i + 1} of the dataset").convert("RGB")
        if picture.crop:
            left, top, right, bottom = picture.crop
            left, top = max(0, left), max(0, top)
            right, bottom = min(image.width, right), min(image.height, bottom)
            if right - left >= 8 and bottom - top >= 8:
                image = image.crop((left, top, right, bottom))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        target = folder / f"{i:04d}.png"
        data = buffer.getvalue()
        if not target.is_file() or target.read_bytes() != data:
            write_atomic(target, lambda f, d=data: f.write(d))
        write_text_atomic(folder / f"{i:04d}.txt", picture.caption)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumb_url(image: Image.Image) -> str:
    small = image.copy()
    small.thumbnail((SAMPLE_THUMB, SAMPLE_THUMB))
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=80)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()


def thinned(values: list[float], points: int = HISTORY_POINTS) -> list[float]:
    """At most `points` values: the means of equal runs, so a long history still draws its shape."""
    if len(values) <= points:
        return [round(v, 5) for v in values]
    size = len(values) / points
    return [round(sum(chunk) / len(chunk), 5) for chunk in
            (values[int(i * size):max(int((i + 1) * size), int(i * size) + 1)] for i in range(points))]


class Sampler:
    """The same prompt with and without the trigger word at a fixed seed, through the training's pipeline."""

    def __init__(self, trainer: Any, params: TrainParams, resolution: int) -> None:
        from localdiffusion.train.dataset import with_trigger

        self.trainer, self.params = trainer, params
        base_prompt = params.sample_prompt if params.sample_prompt is not None else params.pictures[0].caption
        base_prompt = base_prompt.replace(params.trigger, "").strip(" ,") or "a picture"
        with_word = with_trigger(base_prompt, params.trigger)
        spell = getattr(trainer.trainee, "spell", None)  # an embedding's word is spelled as its placeholder tokens
        self.prompts = {"with": spell(with_word) if spell else with_word, "without": base_prompt}
        self.shown = {"with": with_word, "without": base_prompt}
        self.size = params.sample_size or resolution

    def __call__(self) -> dict[str, Image.Image]:
        import torch

        base = self.trainer.base
        pipe = base.pipe
        pipe.set_progress_bar_config(disable=True)
        parts = [base.pipe.unet, *base.text_encoders]
        for part in parts:
            part.eval()
        images = {}
        try:
            with torch.no_grad(), base.autocast():
                for which, prompt in self.prompts.items():
                    generator = torch.Generator("cpu").manual_seed(self.params.sample_seed)
                    images[which] = pipe(prompt, num_inference_steps=self.params.sample_steps, width=self.size,
                                         height=self.size, generator=generator, guidance_scale=7.0).images[0]
        finally:
            for part in parts:
                part.train()
        return images


def train(ctx: TaskContext) -> TaskOutput:
    from localdiffusion.train.embedding import EmbeddingTrainer
    from localdiffusion.train.loop import TrainProgress, read_state
    from localdiffusion.train.lora import LoraTrainer
    from localdiffusion.train.settings import TrainSettings

    params = TrainParams.model_validate(ctx.job.params)
    engine = ctx.engine
    work = work_dir(engine.library.home.root, params.owner, ctx.job.id)
    write_dataset(ctx, params.pictures, work / "dataset")
    settings = TrainSettings.model_validate(params.settings)
    ctx.on_progress(Progress(0, settings.steps or 0, 0, 1, "load", loading="the base model for training", parts=1))
    common = dict(model=ctx.job.recipe.model or None, settings=settings, owner=params.owner, source=params.source,
                  device=str(engine.device), out_dir=work / "run")
    if params.kind == "lora":
        trainer: Any = LoraTrainer(engine.library, work / "dataset", trigger=params.trigger, name=params.name, **common)
    else:
        trainer = EmbeddingTrainer(engine.library, work / "dataset", token=params.trigger, **common)
    trainer.extra = {"dataset_id": params.dataset, "dataset_name": params.dataset_name, "job": ctx.job.id}
    before = read_state(work / "run")
    resumed_from = before.step if before is not None and before.checkpoint else 0
    losses = list(before.losses[:resumed_from]) if before is not None else []
    total = trainer.training.total
    every = params.sample_every or max(1, total // 4)
    sampler = Sampler(trainer, params, trainer.dataset.resolution)
    sets: list[dict[str, Any]] = []  # every sample set: step and images
    shown: list[dict[str, Any]] = []  # the latest ones as small data URLs for progress events

    def progress(p: TrainProgress) -> None:
        losses.append(p.loss)
        preview = None
        if p.step % every == 0 or p.step == p.total:
            images = sampler()
            sets.append({"step": p.step, **images})
            shown.append({"step": p.step, **{k: thumb_url(v) for k, v in images.items()}})
            del shown[:-SAMPLE_SETS_IN_PROGRESS]
            preview = images["with"]
        extra = {"loss": round(p.loss, 5), "eta_s": None if p.eta_s is None else round(p.eta_s, 1),
                 "seconds": round(p.seconds, 1), "losses": thinned(losses), "resumed_from": resumed_from,
                 "samples": list(shown), "prompts": sampler.shown}
        ctx.on_progress(Progress(p.step, p.total, 0, 1, "train", preview, extra=extra))

    state = trainer.training.run(progress, ctx.cancel)
    tensors, metadata = trainer.package(state)
    from safetensors.torch import save as safetensors_bytes

    state.output = str(trainer.target)
    trainer.training.save_state(state)
    folder = run_name(ctx.job.id)
    files = [FileArtefact("losses.json", json.dumps(state.losses).encode())]
    samples = []
    for s in sets:
        names = {}
        for which in ("with", "without"):
            names[which] = f"samples/step-{s['step']:06d}-{which}.png"
            files.append(FileArtefact(names[which], png(s[which])))
        samples.append({"step": s["step"], **names})
    model = ModelArtefact(params.kind, params.owner, trainer.name, safetensors_bytes(tensors, metadata))
    tag = f"<lora:{trainer.name}:1>" if params.kind == "lora" else trainer.name
    return TaskOutput({"kind": params.kind, "name": trainer.name, "file": f"{params.owner}/{trainer.name}.safetensors", "prompt_tag": tag,
                       "trigger": params.trigger, "steps": state.step, "total": state.total,
                       "resumed_from": resumed_from, "seconds": round(state.seconds, 1),
                       "losses": thinned(state.losses), "final_loss": state.losses[-1] if state.losses else None,
                       "samples": samples, "prompts": sampler.shown, "folder": folder, "dataset": params.dataset,
                       "base_model": trainer.base.info.name, "resolution": trainer.dataset.resolution,
                       "run": engine_facts(engine, trainer.base.info.short_hash)},
                      [*files, model], folder=folder)
