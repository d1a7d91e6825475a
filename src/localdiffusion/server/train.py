"""Training in the studio: datasets (pictures from uploads or the gallery, captions, crops, a trigger word, a note of
their source), the settings and their help, how long a training would take here, and `POST /api/train`, which
queues a "train" job (jobs/tasks/train.py) through the one admission (server/admission.py: a participant may train
only when the class allows it, up to its steps).

A dataset is its owner's: anyone else gets 404, as for one that does not exist (facilitators see all). A trained
file is its trainer's too: another participant's generation naming it is refused with the library's 404.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from fastapi import APIRouter
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.engine.inputs import KEPT_INPUT
from localdiffusion.errors import ModelNotFound
from localdiffusion.jobs import Event
from localdiffusion.jobs.estimate import engine_facts, estimate_training
from localdiffusion.jobs.fair import TRAIN_STEP_UNITS, train_steps
from localdiffusion.recipe import Recipe
from localdiffusion.server.admission import InvalidField, queue_job
from localdiffusion.server.api import (CallerDep, ClientDep, StudioDep, find_image, image_file, job_json, keep_for,
                                       may_use_input, refused)
from localdiffusion.server.deps import Caller
from localdiffusion.server.studio import Studio
from localdiffusion.store.datasets import DatasetPicture, DatasetRecord, Datasets

router = APIRouter(prefix="/api", tags=["train"])

MIN_PICTURES = 2
MAX_PICTURES = 200


def datasets(studio: Studio) -> Datasets:
    return Datasets(studio.home.root / "datasets")


class PictureIn(BaseModel):
    """A picture for a dataset: an upload's `ref` (from POST /api/uploads) or a gallery `image_id`."""

    model_config = ConfigDict(extra="forbid")
    ref: str | None = None
    image_id: int | None = None
    caption: str = Field("", max_length=2000)
    crop: list[int] | None = Field(None, min_length=4, max_length=4)


class DatasetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    trigger: str = Field("", max_length=100)
    source: str = Field("", max_length=1000, description="Where the pictures came from and whose they are")
    pictures: list[PictureIn] = Field(max_length=MAX_PICTURES)


class DatasetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=100)
    trigger: str | None = Field(None, max_length=100)
    source: str | None = Field(None, max_length=1000)
    captions: list[str] | None = None  # one per picture, in order
    crops: list[list[int] | None] | None = None  # one per picture: [left, top, right, bottom] or null (whole picture)


def dataset_json(record: DatasetRecord) -> dict[str, Any]:
    return {**record.model_dump(mode="json", exclude={"owner_id"}),
            "pictures": [{**p.model_dump(mode="json"), "url": f"/api/{p.ref}"} for p in record.pictures]}


def find_dataset(studio: Studio, caller: Caller, dataset_id: str) -> DatasetRecord:
    """The dataset, if `caller` may see it (its owner, a facilitator); 404 otherwise, as for one that does not exist."""
    record = datasets(studio).get(dataset_id)
    if record is None or not caller.sees(record.owner_id):
        raise refused(404, f"There is no dataset {dataset_id[:40]}.")
    return record


def check_crop(crop: list[int] | None, size: tuple[int, int], index: int) -> list[int] | None:
    if crop is None:
        return None
    left, top, right, bottom = crop
    if not (0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]) or right - left < 8 or bottom - top < 8:
        raise InvalidField(f"The crop {crop} of picture {index + 1} is not inside its {size[0]}x{size[1]} "
                                            "pixels; give left, top, right, bottom within the picture, at least 8 pixels apart.", field="crops")
    return list(crop)


def picture_of(studio: Studio, caller: Caller, picture: PictureIn, index: int) -> DatasetPicture:
    """A requested picture kept as the caller's input (an upload they may use, or a gallery image of theirs)."""
    if picture.image_id is not None:
        path = image_file(find_image(studio, caller, picture.image_id))
        with Image.open(path) as image:
            image.load()
            ref = keep_for(studio, caller, image.convert("RGB"))
    elif picture.ref is not None:
        if not KEPT_INPUT.fullmatch(picture.ref) or not (studio.home.root / picture.ref).is_file() \
                or not may_use_input(studio, caller, picture.ref):
            raise refused(404, f"There is no upload {picture.ref[:80]}; upload the picture first (POST /api/uploads).")
        ref = picture.ref
    else:
        raise InvalidField(f"Picture {index + 1} names neither an upload (ref) nor a gallery image "
                                            "(image_id); give one of them.", field="pictures")
    with Image.open(studio.home.root / ref) as image:
        size = image.size
    return DatasetPicture(ref=ref, caption=picture.caption, crop=check_crop(picture.crop, size, index),
                          width=size[0], height=size[1])


def check_trigger(trigger: str) -> str:
    trigger = trigger.strip()
    if "," in trigger or "<" in trigger or ">" in trigger:
        raise InvalidField(f"The trigger word '{trigger[:100]}' must be a word or two without commas or "
                                            "angle brackets, such as mira_character.", field="trigger")
    return trigger


@router.get("/datasets")
def list_datasets(studio: StudioDep, caller: CallerDep) -> list[dict[str, Any]]:
    """Your datasets (a facilitator: everyone's), newest first."""
    owner = None if caller.role == "facilitator" else caller.owner_id
    return [dataset_json(d) for d in datasets(studio).list(owner)]


@router.post("/datasets", status_code=201)
def create_dataset(body: DatasetIn, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """A dataset from uploads and gallery images, each with its caption and crop; a trigger word and a note of
    where the pictures came from and whose they are."""
    if len(body.pictures) < MIN_PICTURES:
        raise InvalidField(f"A dataset needs at least {MIN_PICTURES} pictures (it has {len(body.pictures)}); "
                                            "10-30 work best.", field="pictures")
    pictures = [picture_of(studio, caller, p, i) for i, p in enumerate(body.pictures)]
    record = datasets(studio).create(caller.owner_id, body.name.strip(), check_trigger(body.trigger), body.source.strip(),
                                     pictures)
    return dataset_json(record)


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    return dataset_json(find_dataset(studio, caller, dataset_id))


@router.patch("/datasets/{dataset_id}")
def patch_dataset(dataset_id: str, body: DatasetPatch, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """Change the name, trigger word, source note, captions (one per picture) or crops (one per picture)."""
    with _EDITS:  # two tabs' edits one after the other: neither loses the other's captions
        return _patch_dataset(dataset_id, body, studio, caller)


_EDITS = threading.Lock()


def _patch_dataset(dataset_id: str, body: DatasetPatch, studio: Studio, caller: Caller) -> dict[str, Any]:
    import time

    record = find_dataset(studio, caller, dataset_id)
    pictures = [p.model_copy() for p in record.pictures]
    for field, values in (("captions", body.captions), ("crops", body.crops)):
        if values is not None and len(values) != len(pictures):
            raise InvalidField(f"Give one of the {field} per picture: the dataset has {len(pictures)} "
                                                f"pictures, not {len(values)}.", field=field)
    for i, picture in enumerate(pictures):
        if body.captions is not None:
            picture.caption = body.captions[i][:2000]
        if body.crops is not None:
            picture.crop = check_crop(body.crops[i], (picture.width, picture.height), i)
    update: dict[str, Any] = {"pictures": pictures, "updated_at": time.time()}
    if body.name is not None:
        update["name"] = body.name.strip()
    if body.trigger is not None:
        update["trigger"] = check_trigger(body.trigger)
    if body.source is not None:
        update["source"] = body.source.strip()
    return dataset_json(datasets(studio).save(record.model_copy(update=update)))


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, studio: StudioDep, caller: CallerDep) -> None:
    """Forget the dataset (its pictures stay kept inputs; finished trainings keep their files)."""
    datasets(studio).delete(find_dataset(studio, caller, dataset_id).id)


# --- training ----------------------------------------------------------------------------------------


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(max_length=40)
    kind: Literal["lora", "embedding"] = "lora"
    model: str | None = Field(None, max_length=300, description="The base checkpoint; empty: the default one")
    trigger: str | None = Field(None, max_length=100, description="The trigger word (a LoRA) or new word (an embedding); "
                                                                  "empty: the dataset's")
    name: str | None = Field(None, max_length=100, description="The file's name; empty: the trigger word")
    settings: dict[str, Any] = Field(default_factory=dict, description="TrainSettings overrides (GET /api/train/settings)")
    sample_every: int = Field(0, ge=0, le=100_000)
    sample_prompt: str | None = Field(None, max_length=2000)
    sample_steps: int = Field(20, ge=1, le=150)
    sample_size: int | None = Field(None, ge=64, le=2048, multiple_of=8)


def train_params(studio: Studio, caller: Caller, body: TrainRequest) -> tuple[Recipe, dict[str, Any]]:
    """The job's recipe (its model: the base) and parameters, checked: 404 for a dataset or model not there, 422 for
    a bad setting, naming the field."""
    from localdiffusion.train.output import check_name
    from localdiffusion.train.settings import TrainSettings

    record = find_dataset(studio, caller, body.dataset)
    trigger = check_trigger(body.trigger if body.trigger is not None else record.trigger)
    if not trigger:
        raise InvalidField("Give a trigger word (such as mira_character): the word that calls up what "
                                            "the training learns.", field="trigger")
    try:
        settings = TrainSettings.model_validate(body.settings)
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else {"loc": ("settings",), "msg": str(e)}  # type: ignore[attr-defined]
        field = str(first["loc"][0]) if first.get("loc") else "settings"
        raise InvalidField(f"The setting '{field}' is not allowed: {first['msg']}.", field=field) from None
    name = file_name(caller, body.name or trigger.replace(" ", "_"))
    try:
        check_name(name, "name")
        check_name(caller.name, "owner")
        base = studio.library.get(body.model, kind="checkpoint", field="model") if body.model else studio.library.default_checkpoint()
    except ModelNotFound:
        raise
    params = {"kind": body.kind, "owner": caller.name, "name": name, "trigger": trigger,
              "dataset": record.id, "dataset_name": record.name, "source": record.source,
              "pictures": [{"ref": p.ref, "caption": p.caption, "crop": p.crop} for p in record.pictures],
              "settings": settings.model_dump(mode="json", exclude_defaults=True),
              "sample_every": body.sample_every, "sample_prompt": body.sample_prompt, "sample_steps": body.sample_steps,
              "sample_size": body.sample_size}
    return Recipe(prompt=trigger, model=base.name), params


@router.get("/train/settings")
def train_settings() -> dict[str, Any]:
    """Each training setting: its default, limits and plain-language help (the Train page's "i" buttons)."""
    from localdiffusion.train.settings import TrainSettings

    schema = TrainSettings.model_json_schema()
    fields = []
    for name, spec in schema["properties"].items():
        options = spec.get("anyOf", [spec])
        kinds = [o.get("type") for o in options if o.get("type") != "null"]
        enum = next((o.get("enum") for o in options if o.get("enum")), None)
        limits = {k: v for o in options for k, v in o.items() if k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")}
        fields.append({"name": name, "label": spec.get("title", name), "help": spec.get("description", ""),
                       "default": spec.get("default"), "type": "choice" if enum else (kinds[0] if kinds else "string"),
                       "choices": enum, "nullable": any(o.get("type") == "null" for o in options), **limits})
    return {"fields": fields, "basic": ["steps"], "min_pictures": MIN_PICTURES}


@router.post("/train/estimate")
def train_estimate(body: TrainRequest, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """How long this training would take on this machine, before anyone starts it: from its finished trainings with
    the same base model and device, else from its generations with that model; `seconds` null: no estimate yet."""
    recipe, params = train_params(studio, caller, body)
    info = studio.library.ensure_hash(studio.library.get(recipe.model, kind="checkpoint"))
    side = int(params["settings"].get("resolution") or info.native_size or 512)
    steps = train_steps(params)
    found = estimate_training(studio.db, engine_facts(studio.engine, info.short_hash), steps, side,
                              int(params["settings"].get("batch_size") or 1), TRAIN_STEP_UNITS)
    device = engine_facts(studio.engine, None)["device"]
    return {**found.json(), "steps": steps, "resolution": side, "device": device}


@router.post("/train", status_code=201)
def start_training(body: TrainRequest, studio: StudioDep, client: ClientDep, caller: CallerDep) -> dict[str, Any]:
    """Queue a training job on a dataset: a LoRA (or an embedding) with the settings given (the rest defaults).
    A participant may train only when the class's limits allow it, up to its steps."""
    recipe, params = train_params(studio, caller, body)
    job = queue_job(studio, caller, recipe, client, kind="train", params=params)
    body_json = job_json(studio, studio.queue.get(job.id) or job)
    if body_json["status"] == "queued":
        studio.events.publish(Event("queued", job.id, job.owner_id, job.client, {"status": "queued", "position": body_json["position"]}))
    return body_json


def file_name(caller: Caller, name: str) -> str:
    """A trained file's name on a server with accounts starts with its owner's (`ann_mira`), so that two
    participants who train with the same trigger word from the same handout each reach their own by
    `<lora:NAME:1>`; the studio's own owner keeps the name as given."""
    if caller.role == "owner" or name.lower().startswith(f"{caller.name.lower()}_"):
        return name
    return f"{caller.name}_{name}"
