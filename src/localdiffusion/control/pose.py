"""OpenPose poses: the JSON format, the ControlNet conditioning image, editor transforms, presets, detection.

A pose is the OpenPose JSON that the A1111 ControlNet extension reads and writes:

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18}], "canvas_width": W, "canvas_height": H}

Points are in canvas pixels, in the 18-point COCO order of KEYPOINTS; a joint with
confidence 0 is missing (it is neither drawn nor moved).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from localdiffusion.errors import BadInput
from localdiffusion.store.files import write_text_atomic

KEYPOINTS = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

# The 17 limbs ControlNet draws, as 0-based pairs of KEYPOINTS, in drawing order.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# Colour i (RGB) is used for limb i and for joint i.
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

STICK_WIDTH = 4  # half-width of a limb ellipse, in pixels
JOINT_RADIUS = 4
LIMB_DIMMING = 0.6

# Left and right swap places in a mirror image.
MIRROR_ORDER = tuple(
    KEYPOINTS.index(name.replace("left", "@").replace("right", "left").replace("@", "right")) for name in KEYPOINTS
)

Point = tuple[float, float, float]  # x, y, confidence
MISSING: Point = (0.0, 0.0, 0.0)


class Person(BaseModel):
    """One body: 18 (x, y, confidence) points in KEYPOINTS order; confidence 0 means missing."""

    keypoints: list[Point] = Field(min_length=len(KEYPOINTS), max_length=len(KEYPOINTS))

    def present(self, index: int) -> bool:
        return self.keypoints[index][2] > 0

    def centre(self) -> tuple[float, float]:
        """The mean of the present joints (the pivot for scaling and rotating)."""
        points = [(x, y) for x, y, c in self.keypoints if c > 0]
        if not points:
            return (0.0, 0.0)
        return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


class Pose(BaseModel):
    """Everyone on one canvas."""

    canvas_width: int = Field(ge=1)
    canvas_height: int = Field(ge=1)
    people: list[Person] = Field(default_factory=list)


# --- reading and writing -------------------------------------------------------------------------


def read_pose(source: Path | str | dict | list) -> Pose:
    """A Pose from an OpenPose JSON file path, JSON text, or the parsed JSON.

    Accepts the ControlNet extension's variants too: a one-item list around the pose,
    people without body points (skipped), and coordinates normalised to 0-1.
    """
    data = _load_json(source)
    if isinstance(data, list):
        if len(data) != 1:
            raise BadInput(f"The pose JSON holds a list of {len(data)} poses; give a single pose object.", field="pose")
        data = data[0]
    if not isinstance(data, dict):
        raise BadInput("The pose JSON is not an object with 'people', 'canvas_width' and 'canvas_height'.", field="pose")
    width, height = _canvas_side(data, "canvas_width"), _canvas_side(data, "canvas_height")
    people = data.get("people")
    if not isinstance(people, list):
        raise BadInput("The pose JSON has no 'people' list; add \"people\": [{\"pose_keypoints_2d\": [...]}].", field="pose")
    persons = [_read_person(p, n) for n, p in enumerate(people)]
    persons = [p for p in persons if p is not None]
    if _normalised(persons):
        persons = [_scaled(p, width, height) for p in persons]
    return Pose(canvas_width=width, canvas_height=height, people=persons)


def pose_to_json(pose: Pose) -> dict:
    """The OpenPose JSON object for `pose` (what write_pose stores)."""
    return {
        "people": [{"pose_keypoints_2d": [round(v, 3) for point in p.keypoints for v in point]} for p in pose.people],
        "canvas_width": pose.canvas_width,
        "canvas_height": pose.canvas_height,
    }


def write_pose(pose: Pose, path: Path | str) -> Path:
    return write_text_atomic(Path(path), json.dumps(pose_to_json(pose), indent=1) + "\n")


def _load_json(source: Path | str | dict | list) -> Any:
    if isinstance(source, (dict, list)):
        return source
    if isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        text, where = source, "The pose JSON"
    else:
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"The pose file '{path}' does not exist; give the path of an OpenPose JSON file.", field="pose")
        text, where = path.read_text("utf-8", errors="replace"), f"The pose file '{path}'"
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{where} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).", field="pose") from e


def _canvas_side(data: dict, key: str) -> int:
    value = data.get(key)
    if value is None:
        raise BadInput(f"The pose JSON has no '{key}'; OpenPose JSON needs the canvas size in pixels.", field="pose")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1 or value != int(value):
        raise BadInput(f"The pose JSON's '{key}' is {value!r}; it must be a whole number of pixels, at least 1.", field="pose")
    return int(value)


def _read_person(entry: Any, n: int) -> Person | None:
    if not isinstance(entry, dict):
        raise BadInput(f"Person {n} in the pose JSON is not an object with 'pose_keypoints_2d'.", field="pose")
    values = entry.get("pose_keypoints_2d")
    if not values:
        return None  # a face- or hand-only entry from the ControlNet extension
    if not isinstance(values, list) or len(values) != 3 * len(KEYPOINTS):
        count = len(values) if isinstance(values, list) else type(values).__name__
        raise BadInput(f"Person {n}'s 'pose_keypoints_2d' has {count} values; it needs 54 (x, y, confidence for each of 18 points).", field="pose")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        bad = next(v for v in values if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)))
        raise BadInput(f"Person {n}'s 'pose_keypoints_2d' holds {bad!r}; every value must be a number.", field="pose")
    points = [tuple(float(v) for v in values[i : i + 3]) for i in range(0, len(values), 3)]
    return Person(keypoints=[p if p[2] > 0 else MISSING for p in points])


def _normalised(people: list[Person]) -> bool:
    coords = [v for p in people for x, y, c in p.keypoints if c > 0 for v in (x, y)]
    return bool(coords) and all(0.0 <= v <= 1.0 for v in coords)


def _scaled(person: Person, sx: float, sy: float) -> Person:
    return Person(keypoints=[(x * sx, y * sy, c) if c > 0 else MISSING for x, y, c in person.keypoints])


# --- rendering -----------------------------------------------------------------------------------


def render_pose(pose: Pose, size: tuple[int, int] | None = None) -> Image.Image:
    """The ControlNet OpenPose conditioning image of `pose`, `size` (width, height) or the canvas size.

    Drawn as controlnet_aux's `draw_bodypose` draws it, person by person: each limb is a
    filled ellipse (half-width 4) in its colour dimmed to 60%, then each joint a filled
    circle of radius 4 in full colour, on black.
    """
    import cv2

    width, height = size or (pose.canvas_width, pose.canvas_height)
    sx, sy = width / pose.canvas_width, height / pose.canvas_height
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in pose.people:
        points = [(x * sx, y * sy) if c > 0 else None for x, y, c in person.keypoints]
        for (a, b), colour in zip(LIMBS, COLOURS):
            if points[a] is None or points[b] is None:
                continue
            cv2.fillConvexPoly(canvas, _limb_polygon(points[a], points[b]), [int(c * LIMB_DIMMING) for c in colour])
        for point, colour in zip(points, COLOURS):
            if point is not None:
                cv2.circle(canvas, (int(point[0]), int(point[1])), JOINT_RADIUS, colour, thickness=-1)
    return Image.fromarray(canvas, "RGB")


def _limb_polygon(a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    import cv2

    mid_x, mid_y = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    length = ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5  # as the reference computes it, to the last bit
    angle = math.degrees(math.atan2(a[1] - b[1], a[0] - b[0]))
    return cv2.ellipse2Poly((int(mid_x), int(mid_y)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)


# --- editor transforms (each returns a new Person or Pose; missing joints stay missing) -----------


def _moved(person: Person, move) -> Person:
    return Person(keypoints=[(*move(x, y), c) if c > 0 else MISSING for x, y, c in person.keypoints])


def mirror(person: Person, width: float) -> Person:
    """Flip left-right across a canvas `width` wide; left and right joints swap names, as in a mirrored photo."""
    flipped = _moved(person, lambda x, y: (width - x, y))
    return Person(keypoints=[flipped.keypoints[i] for i in MIRROR_ORDER])


def scale(person: Person, factor: float, centre: tuple[float, float] | None = None) -> Person:
    """Grow (factor > 1) or shrink the person about `centre` (default: the mean of its joints)."""
    if factor <= 0:
        raise BadInput(f"The scale factor {factor} must be above 0.", field="factor")
    cx, cy = centre or person.centre()
    return _moved(person, lambda x, y: (cx + (x - cx) * factor, cy + (y - cy) * factor))


def rotate(person: Person, degrees: float, centre: tuple[float, float] | None = None) -> Person:
    """Turn the person by `degrees` clockwise on screen about `centre` (default: the mean of its joints)."""
    cx, cy = centre or person.centre()
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return _moved(person, lambda x, y: (cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos))


def translate(person: Person, dx: float, dy: float) -> Person:
    return _moved(person, lambda x, y: (x + dx, y + dy))


def duplicate(pose: Pose, index: int, offset: tuple[float, float] | None = None) -> Pose:
    """`pose` with a copy of person `index` added, shifted by `offset` (default: a tenth of the canvas to the right)."""
    if not 0 <= index < len(pose.people):
        raise BadInput(f"There is no person {index} to duplicate; the pose has {len(pose.people)} (numbered from 0).", field="person")
    dx, dy = offset if offset is not None else (pose.canvas_width / 10, 0.0)
    return pose.model_copy(update={"people": [*pose.people, translate(pose.people[index], dx, dy)]})


# --- presets ---------------------------------------------------------------------------------------


def presets() -> dict[str, Pose]:
    """The poses that ship with the package (control/poses/*.json), by name."""
    folder = resources.files("localdiffusion.control") / "poses"
    found = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    return {f.name.removesuffix(".json"): read_pose(json.loads(f.read_text("utf-8"))) for f in found}


# --- detection from a photo ----------------------------------------------------------------------

# For each of the 18 KEYPOINTS, the mediapipe landmarks it comes from (two: their midpoint).
# Both tools name left and right from the person's own point of view.
MEDIAPIPE_SOURCES: tuple[tuple[int, ...], ...] = (
    (0,), (11, 12),
    (12,), (14,), (16,),
    (11,), (13,), (15,),
    (24,), (26,), (28,),
    (23,), (25,), (27,),
    (5,), (2,), (8,), (7,),
)  # fmt: skip

MIN_VISIBILITY = 0.5


def landmarks_to_person(landmarks: Sequence[tuple[float, float, float]], width: int, height: int, min_visibility: float = MIN_VISIBILITY) -> Person:
    """Map mediapipe's 33 (x, y, visibility) landmarks, x and y in 0-1, to an 18-point Person in pixels.

    A point is missing when a landmark it needs is less visible than `min_visibility` or lies
    outside the picture. Present points get confidence 1, since the ControlNet extension
    drops points whose confidence is below 1.
    """
    if len(landmarks) != 33:
        raise BadInput(f"Got {len(landmarks)} pose landmarks; mediapipe gives 33.")
    points: list[Point] = []
    for sources in MEDIAPIPE_SOURCES:
        chosen = [landmarks[i] for i in sources]
        if any(v < min_visibility or not (0 <= x <= 1 and 0 <= y <= 1) for x, y, v in chosen):
            points.append(MISSING)
            continue
        x = sum(p[0] for p in chosen) / len(chosen)
        y = sum(p[1] for p in chosen) / len(chosen)
        points.append((x * width, y * height, 1.0))
    return Person(keypoints=points)


def detect_pose(image: Image.Image, min_visibility: float = MIN_VISIBILITY) -> Pose:
    """The pose of the (one) person in `image`, found offline with mediapipe's bundled model.

    A picture without a person gives a Pose with no people.
    """
    try:
        import mediapipe as mp
    except ImportError as e:
        raise BadInput("Pose detection needs the [pose] extra (mediapipe), which is not installed; "
                       "install it by running `bash scripts/setup.sh --pose` in the project folder.") from e
    rgb = np.asarray(image.convert("RGB"))
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as detector:
        found = detector.process(rgb)
    pose = Pose(canvas_width=image.width, canvas_height=image.height)
    if found.pose_landmarks is None:
        return pose
    landmarks = [(lm.x, lm.y, lm.visibility) for lm in found.pose_landmarks.landmark]
    pose.people.append(landmarks_to_person(landmarks, image.width, image.height, min_visibility))
    return pose
