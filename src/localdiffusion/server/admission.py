"""What a class's participants may queue: the limits, the allowed models, and the one way the server queues.

Every route that queues work calls `queue_job` (or `queue_jobs` for several at once): it checks the
caller first (`admit`), and only then submits, so a refused job never reaches the queue. The limits
apply to participants only; the local owner and facilitators are unlimited. A frozen caller may look
but not queue.

- 403: the caller is frozen, or a participant asks for a demo job.
- 404: a participant names a model that is not allowed, answered exactly as a model that does not exist
  (`AllowedModelsMiddleware` hides the others from every listing and lookup of their requests).
- 422: a job over a size, step or image limit (the field it names: width, steps, batch_size).
- 429: a participant's queue is full (`max_queued`) or their GPU-seconds for the last hour are spent.

The limits and the allowed and pinned models are the class's policy, kept in the database.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from localdiffusion.errors import LocalDiffusionError, ModelNotFound
from localdiffusion.jobs import Job
from localdiffusion.jobs.fair import job_images
from localdiffusion.models.info import ModelInfo
from localdiffusion.models.library import only_checkpoints
from localdiffusion.models.provenance import read_metadata, trained_here
from localdiffusion.prompts.extra_networks import extract_loras
from localdiffusion.recipe import Recipe
from localdiffusion.server.deps import CALLER_SCOPE_KEY, Caller
from localdiffusion.server.studio import Studio

LIMITS_KEY = "limits"
PINNED_KEY = "pinned"
HOUR = 3600.0


class ParticipantLimits(BaseModel):
    """A participant's limits; null means no limit."""

    model_config = ConfigDict(extra="forbid")
    max_queued: int | None = Field(4, ge=1, le=10_000, description="Jobs waiting or running at once")
    max_images_per_job: int | None = Field(4, ge=1, le=10_000, description="Images one job makes (batch size x count, cells, panels)")
    max_pixels: int | None = Field(1024 * 1024, ge=64 * 64, description="Pixels of one image, after the hires pass")
    max_steps: int | None = Field(50, ge=1, le=150, description="Sampling steps (and hires steps)")
    gpu_seconds_per_hour: float | None = Field(None, gt=0, description="GPU-seconds in any hour, running and queued jobs included")
    may_train: bool = Field(False, description="Whether participants may train a LoRA or an embedding")
    max_train_steps: int | None = Field(500, ge=1, le=100_000, description="Steps of one training job")


class Limits(BaseModel):
    """`GET/PUT /api/class/limits`: the participants' limits and the checkpoints they may use (null: every one)."""

    model_config = ConfigDict(extra="forbid")
    participant: ParticipantLimits = Field(default_factory=ParticipantLimits)
    models: list[str] | None = None


class InvalidField(LocalDiffusionError):
    """A job over a size limit: 422 naming the field."""


def load_limits(studio: Studio) -> Limits:
    stored = studio.db.policy(LIMITS_KEY)
    return Limits.model_validate(stored) if stored else Limits()


def save_limits(studio: Studio, limits: Limits) -> Limits:
    """Keep the limits; the allowed models as the library names them (an unknown one is a 404)."""
    if limits.models is not None:
        limits = limits.model_copy(update={"models": [checkpoint_named(studio, name).name for name in limits.models]})
    studio.db.set_policy(LIMITS_KEY, limits.model_dump(mode="json"))
    return limits


def checkpoint_named(studio: Studio, name: str, field: str = "models") -> ModelInfo:
    try:
        return studio.library.get(name, kind="checkpoint", field=field)
    except LocalDiffusionError as e:
        raise ModelNotFound(e.message, field=field) from None


# --- the allowed models ---------------------------------------------------------------------


def limited(caller: Caller) -> bool:
    """Whether the class's limits and allowed models apply to this caller (participants only)."""
    return not caller.manages


def allowed_names(studio: Studio, caller: Caller) -> list[str] | None:
    """The checkpoints this caller may use; None: every one."""
    return load_limits(studio).models if limited(caller) else None


class AllowedModelsMiddleware:
    """For a participant's request, the library holds only the allowed checkpoints (`only_checkpoints`): the
    model lists (`/api/models`, A1111's `sd-models`) leave the others out, and every lookup (a job's model,
    a comparison's, A1111's options) answers them 404 with the library's own sentence, naming only allowed
    ones, exactly as for a model that does not exist. It must sit inside authentication, which names the
    caller (so it is added to the app first)."""

    def __init__(self, app: ASGIApp, studio: Studio) -> None:
        self.app, self.studio = app, studio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = scope.get(CALLER_SCOPE_KEY) if scope["type"] in ("http", "websocket") else None
        names = allowed_names(self.studio, caller) if caller is not None else None
        if names is None:
            await self.app(scope, receive, send)
            return
        with only_checkpoints(names):
            await self.app(scope, receive, send)


def _allowed_recipe(studio: Studio, allowed: list[str], recipe: Recipe) -> Recipe:
    """The recipe with an allowed checkpoint named (None: the default among the allowed ones); another is a 404."""
    with only_checkpoints(allowed):
        model = studio.library.get(recipe.model, kind="checkpoint", field="model").name
        if recipe.refiner_checkpoint:
            studio.library.get(recipe.refiner_checkpoint, kind="checkpoint", field="refiner_checkpoint")
    return recipe if model == recipe.model else recipe.model_copy(update={"model": model})


def _allowed_params(studio: Studio, allowed: list[str], kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The models a job's parameters name: a comparison's Model axis, a comic's panels."""
    if kind == "compare":
        from localdiffusion.explain.axes import parse_axis

        for name in ("x", "y", "z"):
            text = params.get(name)
            if not text:
                continue
            try:
                axis = parse_axis(text, name.upper())
            except LocalDiffusionError:
                continue  # the route has refused a bad axis already
            if axis.field == "model":
                with only_checkpoints(allowed):
                    for value in axis.values:
                        checkpoint_named(studio, str(value), field=name.lower())
    if kind == "panels" and params.get("recipes"):
        recipes = [_allowed_recipe(studio, allowed, Recipe.model_validate(r)) for r in params["recipes"]]
        params = {**params, "recipes": [r.model_dump(mode="json") for r in recipes]}
    return params


# --- the size limits --------------------------------------------------------------------------


def _native(studio: Studio, recipe: Recipe) -> int:
    try:
        return studio.library.get(recipe.model, kind="checkpoint").native_size or 512
    except LocalDiffusionError:
        return 512


def _final_size(recipe: Recipe, native: int, kind: str, params: dict[str, Any]) -> tuple[int, int]:
    width, height = recipe.width or native, recipe.height or native
    if kind == "upscale":
        if params.get("width") and params.get("height"):
            return int(params["width"]), int(params["height"])
        scale = float(params.get("scale") or 1.0)
        return round(width * scale), round(height * scale)
    if recipe.enable_hr and recipe.mode == "txt2img":
        return round(width * recipe.hr_scale), round(height * recipe.hr_scale)
    return width, height


def _check_sizes(studio: Studio, limits: ParticipantLimits, recipe: Recipe, kind: str, params: dict[str, Any]) -> None:
    recipes = [Recipe.model_validate(r) for r in params.get("recipes") or []] if kind == "panels" else [recipe]
    if limits.max_images_per_job is not None:
        images = job_images(recipe, kind, params)
        if images > limits.max_images_per_job:
            what = {"compare": "comparison cells", "panels": "panels"}.get(kind, "images (batch size x batch count)")
            field = {"compare": "x", "panels": "panels"}.get(kind, "batch_size")
            raise InvalidField(f"This job makes {images} {what}; a participant may make at most {limits.max_images_per_job} "
                               f"in one job. Make fewer, or split them over several jobs.", field=field)
    for one in recipes:
        if limits.max_steps is not None:
            steps = max(one.steps, one.hr_second_pass_steps if one.enable_hr else 0)
            if steps > limits.max_steps:
                field = "steps" if one.steps > limits.max_steps else "hr_second_pass_steps"
                raise InvalidField(f"This job asks for {steps} steps; a participant may use at most {limits.max_steps}. "
                                   f"Lower the steps (20-30 are plenty for most samplers).", field=field)
        if limits.max_pixels is not None:
            width, height = _final_size(one, _native(studio, one), kind, params)
            if width * height > limits.max_pixels:
                side = int(limits.max_pixels ** 0.5) // 8 * 8
                field = "hr_scale" if one.enable_hr and kind != "upscale" else "scale" if kind == "upscale" else "width"
                raise InvalidField(f"This job makes {width}x{height} images ({width * height:,} pixels); a participant may "
                                   f"make at most {limits.max_pixels:,} pixels an image (about {side}x{side}). Choose a "
                                   f"smaller size{' or hires scale' if one.enable_hr else ''}.", field=field)


def _check_training(limits: ParticipantLimits, params: dict[str, Any]) -> None:
    """A participant's training job: allowed at all (403), and within the steps a participant may train (422)."""
    if not limits.may_train:
        raise HTTPException(403, "Training is not open to participants in this class; ask the facilitator to allow it "
                                 "in the console's limits.")
    from localdiffusion.jobs.fair import train_steps

    steps = train_steps(params)
    if limits.max_train_steps is not None and steps > limits.max_train_steps:
        raise InvalidField(f"This training asks for {steps} steps; a participant may train at most {limits.max_train_steps}. "
                           f"Set fewer steps under More settings.", field="steps")
    settings = params.get("settings") or {}
    for field, side in (("resolution", settings.get("resolution")), ("sample_size", params.get("sample_size"))):
        if limits.max_pixels is not None and side and int(side) ** 2 > limits.max_pixels:
            raise InvalidField(f"The {field} {side} is larger than a participant's pictures may be "
                               f"({limits.max_pixels} pixels); choose a smaller one.", field=field)
    if limits.max_steps is not None and int(params.get("sample_steps") or 0) > limits.max_steps:
        raise InvalidField(f"The samples' {params['sample_steps']} steps are more than a participant's "
                           f"{limits.max_steps}; choose fewer.", field="sample_steps")
    every = int(params.get("sample_every") or 0)
    if every and every < max(1, steps // 20):
        raise InvalidField(f"Samples every {every} steps would be more than 20 sample pairs in {steps} steps; "
                           f"sample every {max(1, steps // 20)} steps or more.", field="sample_every")


# --- the queue limits -------------------------------------------------------------------------


def _check_queue(studio: Studio, caller: Caller, limits: ParticipantLimits, jobs: int) -> None:
    if limits.max_queued is None and limits.gpu_seconds_per_hour is None:
        return
    now = time.time()
    usage = studio.queue.usage(caller.owner_id, now - HOUR)
    if limits.max_queued is not None and usage.unfinished + jobs > limits.max_queued:
        waiting = f"{usage.unfinished} job{'' if usage.unfinished == 1 else 's'} waiting or running"
        ask = f"these {jobs} would be more than" if jobs > 1 else "that is"
        raise HTTPException(429, f"You have {waiting}; {ask} the {limits.max_queued} a participant may have at once. "
                                 f"Wait for one to finish, or cancel one, then try again.")
    budget = limits.gpu_seconds_per_hour
    if budget is not None and usage.spent_seconds + usage.pending_seconds >= budget:
        if usage.frees_at is not None and usage.spent_seconds > 0:
            minutes = max(1, round((usage.frees_at + HOUR - now) / 60))
            when = f"try again in about {minutes} minute{'' if minutes == 1 else 's'}"
        else:
            when = "try again when your queued jobs have finished"
        raise HTTPException(429, f"You have used your {budget:g} GPU-seconds for this hour ({usage.spent_seconds:.0f} s run, "
                                 f"{usage.pending_seconds:.0f} s queued); {when}.")


# --- admission and queueing ---------------------------------------------------------------------


@dataclass
class JobRequest:
    """One job a route wants queued."""

    recipe: Recipe
    kind: str = "generate"
    params: dict[str, Any] = field(default_factory=dict)


def refuse_frozen(caller: Caller) -> None:
    if caller.frozen:
        raise HTTPException(403, "Your account is frozen: you can look at your work but not queue new jobs; "
                                 "ask the facilitator to unfreeze it.")


def trained_by_other(info: Any, caller: Caller) -> bool:
    """Whether `info` is a file this studio trained for someone else, whom a participant may not use or see."""
    if caller.manages or getattr(info, "path", None) is None or not info.path.is_file():
        return False
    trained = trained_here(read_metadata(info.path))
    return trained is not None and trained.get("trained_by") not in (None, caller.name)


def job_texts(job: JobRequest) -> list[str]:
    """Every prompt a job can run: its recipe's, a comic's panel recipes', and a comparison's axis values
    (a prompt search/replace can bring in a LoRA or an embedding)."""
    texts = [job.recipe.prompt, job.recipe.negative_prompt]
    for recipe in job.params.get("recipes") or []:
        if isinstance(recipe, dict):
            texts += [str(recipe.get("prompt") or ""), str(recipe.get("negative_prompt") or "")]
    texts += [str(job.params.get(axis) or "") for axis in ("x", "y", "z")]
    return texts


def refuse_others_trained(studio: Studio, caller: Caller, texts: Sequence[str]) -> None:
    """A participant's prompts naming a LoRA or an embedding another participant trained here: 404, as for one
    that is not in the library, whichever route queues the job."""
    if caller.manages:
        return
    for text in texts:
        for ref in extract_loras(text)[1]:
            try:
                info = studio.library.get(ref.name, kind="lora")
            except LocalDiffusionError:
                continue  # the engine's own check names it
            if trained_by_other(info, caller):
                raise ModelNotFound(f"There is no LoRA '{ref.name}' in the library.", field="prompt")
    joined = "\n".join(texts)
    for info in studio.library.list("embedding"):
        if re.search(rf"(?<![\w-]){re.escape(info.name)}(?![\w-])", joined) and trained_by_other(info, caller):
            raise ModelNotFound(f"There is no embedding '{info.name}' in the library.", field="prompt")


def admit(studio: Studio, caller: Caller, jobs: Sequence[JobRequest]) -> list[JobRequest]:
    """The jobs as they may be queued for this caller (a default model becomes an allowed one), or the
    refusal (see the module docstring). Nothing is queued here."""
    refuse_frozen(caller)
    for job in jobs:
        refuse_others_trained(studio, caller, job_texts(job))
    if not limited(caller):
        return list(jobs)
    limits = load_limits(studio)
    allowed = limits.models
    admitted = []
    for job in jobs:
        recipe, params = job.recipe, dict(job.params)
        uses_model = not (job.kind == "upscale" and not params.get("sd"))  # a plain upscale runs no checkpoint
        if allowed is not None and uses_model:
            recipe = _allowed_recipe(studio, allowed, recipe)
            params = _allowed_params(studio, allowed, job.kind, params)
        if job.kind == "train":
            _check_training(limits.participant, params)
        else:
            _check_sizes(studio, limits.participant, recipe, job.kind, params)
        admitted.append(JobRequest(recipe, job.kind, params))
    _check_queue(studio, caller, limits.participant, len(jobs))
    return admitted


_QUEUEING = threading.Lock()  # admission and submission together, so two requests cannot both take the last place


def queue_jobs(studio: Studio, caller: Caller, jobs: Sequence[JobRequest], client: str = "", demo: bool = False,
               owner_id: int | None = None) -> list[Job]:
    """The one way the server queues work: every job admitted for the caller first (all or none), then each
    submitted as theirs, or as `owner_id`'s (a comic's jobs belong to the project's owner, so its pictures come
    back into the project when a facilitator generates in it). `demo` (a facilitator's) runs before everyone else's."""
    if demo and not caller.manages:
        raise HTTPException(403, "Only a facilitator can queue a demo job; queue it as a normal job.")
    owner = caller.owner_id if owner_id is None else owner_id
    with _QUEUEING:
        admitted = admit(studio, caller, jobs)
        return [studio.queue.submit(job.recipe, owner, client, job.kind, job.params, demo=demo) for job in admitted]


def queue_job(studio: Studio, caller: Caller, recipe: Recipe, client: str = "", kind: str = "generate",
              params: dict[str, Any] | None = None, demo: bool = False, owner_id: int | None = None) -> Job:
    return queue_jobs(studio, caller, [JobRequest(recipe, kind, params or {})], client, demo, owner_id)[0]

