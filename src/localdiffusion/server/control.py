"""The studio's ControlNet and pose API: preprocessor choices, map previews, pose presets, rendering and detection.

Every picture made here (a control map, a rendered pose) is kept as an input image, like an upload,
so its `ref` can go straight into a ControlNet unit (`image`, or `map` for a previewed map).
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from localdiffusion.control.pose import detect_pose, pose_to_json, presets, read_pose, render_pose
from localdiffusion.errors import BadInput, one_of
from localdiffusion.recipe import CONTROL_MODES, ControlUnit, ResizeMode
from localdiffusion.server.api import CallerDep, InvalidField, check_input_ref, keep_for, may_use_input
from localdiffusion.server.deps import Caller, get_studio
from localdiffusion.server.studio import Studio

router = APIRouter(prefix="/api", tags=["control"])

StudioDep = Annotated[Studio, Depends(get_studio)]

INPUT_NAME = re.compile(r"[0-9a-f]{24}\.png")
MAX_PEOPLE = 32

# --- what each preprocessor does, in plain words ---------------------------------------------------

PROCESSOR_RES = {"name": "processor_res", "label": "Processing resolution", "min": 64, "max": 2048, "step": 64, "default": 512,
                 "help": "The picture is resized so its short side is this many pixels before the map is made. "
                         "Higher keeps finer detail but takes longer."}


def line_threshold(default: int) -> dict[str, Any]:
    return {"name": "threshold_a", "label": "Line threshold", "min": 0, "max": 255, "step": 1, "default": default,
            "help": "How strong a stroke must be to count as a line (a dark-on-light drawing is inverted first). "
                    "Lower it to pick up light pencil strokes; raise it to drop smudges."}


THINNING = {"name": "threshold_b", "label": "Thinning", "min": 0, "max": 16, "step": 1, "default": 0,
            "help": "Makes the lines this many pixels thinner on each side, never breaking a stroke. "
                    "Thin lines give the ControlNet less to follow, so details stay freer."}

# module -> label, help and the thresholds it reads (threshold_a, threshold_b); every module but "none" also reads processor_res.
MODULE_TEXTS: dict[str, dict[str, Any]] = {
    "none": {
        "label": "None: the image is the map",
        "help": "Uses the picture as it is, as a ready-made control map: a pose from the pose editor, "
                "a depth map, or white lines on black.",
        "params": [],
    },
    "canny": {
        "label": "Canny edges",
        "help": "Finds the outlines in a photo or picture, so the new image keeps its shapes and composition.",
        "params": [
            {"name": "threshold_a", "label": "Low threshold", "min": 1, "max": 255, "step": 1, "default": 100,
             "help": "Edges weaker than this are dropped unless they touch a strong edge; lower it to keep faint details."},
            {"name": "threshold_b", "label": "High threshold", "min": 1, "max": 255, "step": 1, "default": 200,
             "help": "Edges stronger than this are always kept; raise it to keep only the boldest outlines."},
        ],
    },
    "scribble": {
        "label": "Scribble",
        "help": "Turns a rough drawing into bold white strokes on black; the image follows your drawing loosely.",
        "params": [line_threshold(127), THINNING],
    },
    "lineart": {
        "label": "Line art",
        "help": "Turns a clean drawing into thin white lines on black, keeping their soft edges; the image follows "
                "your lines closely.",
        "params": [line_threshold(64), THINNING],
    },
    "openpose": {
        "label": "Pose from a photo",
        "help": "Finds a person's pose in a photo (18 body points) and draws the skeleton, so the figure in "
                "the new image stands the same way. Open the pose editor to adjust it by hand.",
        "params": [],
    },
    "depth": {
        "label": "Depth",
        "help": "Estimates how far each part of a photo is from the camera, so the new image keeps its space "
                "and layout. Needs a depth model folder in models/depth in the studio's home folder.",
        "params": [],
    },
}

# Unit fields the panel shows: label and help (limits come from ControlUnit itself).
UNIT_TEXTS: dict[str, tuple[str, str, float | None]] = {
    "image": ("Control image", "The picture the unit follows: a photo, a drawing or a pose from the pose editor.", None),
    "module": ("Preprocessor", "How the picture is turned into a control map before generating. "
               "'None' uses the picture as the map; any other shows its map when you press 'Preview the map'.", None),
    "model": ("ControlNet model", "The ControlNet that reads the map; each is trained for one kind of map "
              "(edges, pose, depth...) and one model family. 'Automatic' picks one that fits the preprocessor "
              "and the checkpoint.", None),
    "weight": ("Control weight", "How strongly the map steers the image. 1 follows it closely; lower values "
               "leave the prompt more freedom; above 1.2 the image can look forced.", 0.05),
    "guidance_start": ("Starting control step", "When the unit starts steering, as a fraction of the steps: "
                       "0 is the first step. Starting later lets the prompt set the rough layout first.", 0.05),
    "guidance_end": ("Ending control step", "When the unit stops steering, as a fraction of the steps: 1 is "
                     "the last step. Stopping earlier keeps the composition but frees the fine detail.", 0.05),
    "resize_mode": ("Resize mode", "What happens when the map's shape differs from the image's: 'Just Resize' "
                    "stretches it, 'Crop and Resize' fills the image and crops the overflow, 'Resize and Fill' "
                    "fits all of it and pads the edges.", None),
    "control_mode": ("Control mode", "Which wins when the prompt and the map disagree. 'Balanced' weighs them "
                     "evenly. 'My prompt is more important' weakens the control step by step toward the layers "
                     "that draw fine detail, so the prompt can change more. 'ControlNet is more important' does the "
                     "same and also leaves the control out of the negative-prompt side of CFG, so the CFG scale "
                     "strengthens the map as it strengthens the prompt.", None),
    "pixel_perfect": ("Pixel perfect", "Makes the map at the size it is used at: the processing resolution is "
                      "worked out from the picture, the image size and the resize mode, so thin edges and lines "
                      "are neither lost nor blurred by resizing.", None),
}


def _limits(name: str) -> dict[str, Any]:
    info = ControlUnit.model_fields[name]
    limits: dict[str, Any] = {}
    for rule in info.metadata:
        for attr, key in (("ge", "min"), ("le", "max")):
            if getattr(rule, attr, None) is not None:
                limits[key] = getattr(rule, attr)
    return limits


def unit_fields() -> dict[str, dict[str, Any]]:
    table = {}
    for name, (label, help_text, step) in UNIT_TEXTS.items():
        default = ControlUnit.model_fields[name].default
        table[name] = {"label": label, "help": help_text, "step": step, "default": default, **_limits(name)}
    table["resize_mode"]["choices"] = ["Just Resize", "Crop and Resize", "Resize and Fill"]
    table["control_mode"]["choices"] = list(CONTROL_MODES)
    return table


def module_names() -> list[str]:
    from localdiffusion.control.preprocessors import MODULES

    return list(MODULES)


def module_json(name: str) -> dict[str, Any]:
    from localdiffusion.control.preprocessors import control_type

    texts = MODULE_TEXTS.get(name, {"label": name, "help": f"The '{name}' preprocessor.", "params": []})
    params = [] if name == "none" else [*texts["params"], PROCESSOR_RES]
    return {"name": name, "label": texts["label"], "help": texts["help"], "control_type": control_type(name), "params": params}


@router.get("/controls/modules")
def control_modules() -> dict[str, Any]:
    """The preprocessors (with labels, their parameters and plain-language help) and the unit fields' explanations."""
    return {"modules": [module_json(m) for m in module_names()], "unit_fields": unit_fields()}


# --- kept pictures --------------------------------------------------------------------------------


def kept_json(ref: str, image: Image.Image) -> dict[str, Any]:
    return {"ref": ref, "url": f"/api/{ref}", "width": image.width, "height": image.height}


def open_input(studio: Studio, caller: Caller, ref: str, field: str) -> Image.Image:
    check_input_ref(studio.home, ref, field, lambda kept: may_use_input(studio, caller, kept))
    with Image.open(studio.home.root / ref) as image:
        image.load()
        return image


@router.get("/inputs/{name}")
def get_input(name: str, studio: StudioDep, caller: CallerDep) -> FileResponse:
    """An uploaded or kept image by its ref (`inputs/<hash>.png`), to show a unit's picture or map; only the
    caller's own (another's is answered as one that does not exist)."""
    path = studio.home.root / "inputs" / name
    if not INPUT_NAME.fullmatch(name) or not path.is_file() or not may_use_input(studio, caller, f"inputs/{name}"):
        raise HTTPException(404, f"There is no input image '{name[:80]}'.")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


# --- control map previews -------------------------------------------------------------------------


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    module: str
    processor_res: int = Field(512, ge=64, le=2048)
    threshold_a: float = -1.0
    threshold_b: float = -1.0
    # Pixel perfect: processor_res is worked out from the picture and the image's size (width, height) by the resize mode.
    pixel_perfect: bool = False
    resize_mode: ResizeMode = "Crop and Resize"
    width: int | None = Field(None, ge=64)
    height: int | None = Field(None, ge=64)


def make_map(studio: Studio, caller: Caller, request: PreviewRequest) -> dict[str, Any]:
    from localdiffusion.control.preprocessors import pixel_perfect_resolution, run_preprocessor

    names = module_names()
    if request.module not in names:
        raise InvalidField(f"Unknown preprocessor '{request.module[:40]}'; choose one of {one_of(names)}.", field="module")
    image = open_input(studio, caller, request.image, "image")
    if request.module == "none":
        return {**kept_json(request.image, image), "module": "none"}
    unit = ControlUnit(image=request.image, **request.model_dump(exclude={"image", "width", "height"}))
    if request.pixel_perfect:
        if request.width is None or request.height is None:
            raise InvalidField("Pixel perfect needs the image's width and height to work out the processing resolution; "
                               "send both.", field="width" if request.width is None else "height")
        res = pixel_perfect_resolution(image.size, (request.width, request.height), request.resize_mode)
        unit = unit.model_copy(update={"processor_res": res})
    control_map = run_preprocessor(unit, image, studio.home.root)
    return {**kept_json(keep_for(studio, caller, control_map), control_map), "module": request.module,
            "processor_res": unit.processor_res}


@router.post("/controls/preview")
async def control_preview(request: PreviewRequest, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """The control map a unit would use: {ref, url, width, height}. Give the ref as the unit's `map` to use this very map."""
    # Off the event loop: canny, scribble and lineart take milliseconds; openpose and depth run a model
    # on the CPU for a second or more, which is still fine for one preview on a worker thread.
    return await asyncio.to_thread(make_map, studio, caller, request)


# --- poses ----------------------------------------------------------------------------------------


def preset_label(name: str) -> str:
    return name.replace("-", " ").capitalize()


@router.get("/poses/presets")
def pose_presets() -> list[dict[str, Any]]:
    """The poses that ship with the studio, as OpenPose JSON."""
    return [{"name": name, "label": preset_label(name), "pose": pose_to_json(pose)} for name, pose in presets().items()]


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pose: dict[str, Any]
    width: int | None = Field(None, ge=64)
    height: int | None = Field(None, ge=64)


def render_kept(studio: Studio, caller: Caller, request: RenderRequest) -> dict[str, Any]:
    pose = read_pose(request.pose)
    if len(pose.people) > MAX_PEOPLE:
        raise InvalidField(f"The pose has {len(pose.people)} people; at most {MAX_PEOPLE} fit on one canvas.", field="pose")
    width, height = request.width or pose.canvas_width, request.height or pose.canvas_height
    max_side = studio.library.settings.max_side
    if max(width, height) > max_side:
        field = "width" if width >= height else "height"
        raise InvalidField(f"The size {width}x{height} is above the largest side of {max_side} pixels; choose a smaller size.", field=field)
    image = render_pose(pose, (width, height))
    return kept_json(keep_for(studio, caller, image), image)


@router.post("/poses/render")
async def pose_render(request: RenderRequest, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """Draw a pose as the ControlNet OpenPose map: {ref, url, width, height}; use the ref as a unit image with module "none"."""
    try:
        return await asyncio.to_thread(render_kept, studio, caller, request)
    except BadInput as e:  # read_pose's sentences about the JSON
        raise InvalidField(e.message, field="pose") from None


def detect_json(studio: Studio, caller: Caller, ref: str) -> dict[str, Any]:
    image = open_input(studio, caller, ref, "image")
    pose = detect_pose(image)
    if not pose.people:
        raise InvalidField("No person was found in the photo; use one where a whole body is clearly visible.", field="image")
    return pose_to_json(pose)


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str


@router.post("/poses/detect")
async def pose_detect(request: DetectRequest, studio: StudioDep, caller: CallerDep) -> dict[str, Any]:
    """The pose of the person in an uploaded photo, as OpenPose JSON (mediapipe's bundled model, offline)."""
    # Detection runs mediapipe's small pose model on the CPU: about a second, so on a worker thread.
    return await asyncio.to_thread(detect_json, studio, caller, request.image)
