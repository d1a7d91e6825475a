"""Control preprocessors: turn a picture into the map a ControlNet expects, offline.

    module     map                                   threshold_a               threshold_b
    none       the picture itself (a ready-made map)  -                         -
    canny      white edges on black (OpenCV Canny)    low threshold (100)       high threshold (200)
    scribble   white strokes on black, 0 or 255       line threshold (127)      thinning in pixels (0)
    lineart    white lines on black, soft edges kept  line threshold (64)       thinning in pixels (0)
    openpose   the OpenPose drawing of the person     -                         -
    depth      near is bright (a DPT/Depth-Anything)  -                         -

(-1 in a threshold means the default in brackets.) Scribble and lineart read a drawing: a
dark-on-light drawing (the usual pencil on paper) is inverted to white lines on black, which
is what those ControlNets were trained on; a pixel is a line where its inverted grey value is
above the threshold; thinning erodes the lines by that many pixels on each side but keeps
their one-pixel skeleton, so no stroke disappears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from localdiffusion.engine.images import as_rgb
from localdiffusion.errors import BadInput, ModelNotFound, UnsupportedModel, one_of
from localdiffusion.recipe import ControlUnit

MODULES = ("none", "canny", "scribble", "lineart", "openpose", "depth")

# The ControlNet type each module's map is made for ("none": any).
CONTROL_TYPES = {"none": "", "canny": "canny", "scribble": "scribble", "lineart": "lineart", "openpose": "openpose", "depth": "depth"}

DEPTH_DIR = "models/depth"
PROCESSOR_RES_MIN, PROCESSOR_RES_MAX = 64, 2048  # ControlUnit.processor_res's limits


def control_type(module: str) -> str:
    """The ControlNet type that `module`'s map needs ("" for "none", which suits any)."""
    return CONTROL_TYPES[_checked(module)]


def run_preprocessor(unit: ControlUnit, image: Image.Image, home_root: Path) -> Image.Image:
    """The RGB control map for `unit` made from `image`; its short side is `unit.processor_res`
    (except for "none", which passes the image through unchanged)."""
    module = _checked(unit.module)
    if module == "none":
        return image.convert("RGB")
    # A transparent drawing is laid on white paper, so its strokes keep their contrast.
    picture = resize_short_side(np.asarray(as_rgb(image)), unit.processor_res)
    if module == "canny":
        return _rgb(canny(picture, _or(unit.threshold_a, 100), _or(unit.threshold_b, 200)))
    if module == "scribble":
        return _rgb(drawing_lines(picture, threshold=_or(unit.threshold_a, 127), thin=int(_or(unit.threshold_b, 0)), soft=False))
    if module == "lineart":
        return _rgb(drawing_lines(picture, threshold=_or(unit.threshold_a, 64), thin=int(_or(unit.threshold_b, 0)), soft=True))
    if module == "openpose":
        return openpose(Image.fromarray(picture))
    return _rgb(depth(picture, find_depth_model(Path(home_root))))


def _checked(module: str) -> str:
    if module not in MODULES:
        raise BadInput(f"The preprocessor '{module}' is unknown; choose one of {one_of(list(MODULES))}.", field="module")
    return module


def _or(value: float, default: float) -> float:
    return default if value == -1 else value


def _rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")


def pixel_perfect_resolution(image_size: tuple[int, int], target_size: tuple[int, int], resize_mode: str) -> int:
    """The preprocessing resolution "Pixel Perfect" picks: the short side the picture has once its map is
    fitted to `target_size` (width, height) by `resize_mode`, so the map is made at the size it is used at.

    The extension's `pixel_perfect_resolution` (internal_controlnet/external_code.py): "Resize and Fill"
    fits the whole picture inside (the smaller scale), the other modes cover the target (the larger
    scale); rounded half to even as numpy rounds. Kept within `processor_res`'s limits (64-2048)."""
    (raw_w, raw_h), (target_w, target_h) = image_size, target_size
    k_h, k_w = float(target_h) / float(raw_h), float(target_w) / float(raw_w)
    k = min(k_h, k_w) if resize_mode == "Resize and Fill" else max(k_h, k_w)
    estimation = int(np.round(k * float(min(raw_h, raw_w))))
    return min(max(estimation, PROCESSOR_RES_MIN), PROCESSOR_RES_MAX)


def resize_short_side(pixels: np.ndarray, short_side: int) -> np.ndarray:
    """Resize so the shorter side is `short_side`, as A1111's ControlNet does (area filter to shrink, cubic to grow)."""
    import cv2

    height, width = pixels.shape[:2]
    k = short_side / min(height, width)
    if k == 1:
        return pixels
    size = (max(1, round(width * k)), max(1, round(height * k)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)


# --- the maps --------------------------------------------------------------------------------------


def canny(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """Canny edges of an RGB picture (on all three channels, as A1111 does), 255 on 0."""
    import cv2

    if low < 0 or high < 0:
        raise BadInput(f"The canny thresholds {low:g} and {high:g} must be 0 or more.", field="threshold_a")
    return cv2.Canny(pixels, low, high)


def drawing_lines(
    pixels: np.ndarray,
    threshold: float = 127,
    thin: int = 0,
    invert: bool | Literal["auto"] = "auto",
    soft: bool = False,
) -> np.ndarray:
    """White lines on black from a drawing (see the module docstring); `soft` keeps the lines' grey levels."""
    import cv2

    if not 0 <= threshold <= 255:
        raise BadInput(f"The line threshold {threshold:g} must be between 0 and 255.", field="threshold_a")
    if thin < 0:
        raise BadInput(f"The thinning {thin} must be 0 or more pixels.", field="threshold_b")
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    if invert == "auto":
        invert = is_dark_on_light(gray)
    if invert:
        gray = 255 - gray
    lines = (gray > threshold).astype(np.uint8) * 255
    if thin:
        lines = thinned(lines, thin)
    return np.where(lines > 0, gray, 0).astype(np.uint8) if soft else lines


def is_dark_on_light(gray: np.ndarray) -> bool:
    """A drawing on light paper: most of it is background, so its median is light."""
    return float(np.median(gray)) > 127


def thinned(lines: np.ndarray, pixels: int) -> np.ndarray:
    """`lines` eroded by `pixels` on each side, with their skeleton kept so thin strokes survive."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    return cv2.erode(lines, kernel, iterations=pixels) | skeleton(lines)


def skeleton(lines: np.ndarray) -> np.ndarray:
    """The morphological skeleton (Lantuejoul): what each erosion step removes that an opening cannot restore."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    result = np.zeros_like(lines)
    current = lines.copy()
    while current.any():
        eroded = cv2.erode(current, kernel)
        result |= current & ~cv2.dilate(eroded, kernel)
        current = eroded
    return result


def openpose(picture: Image.Image) -> Image.Image:
    from localdiffusion.control.pose import detect_pose, render_pose

    return render_pose(detect_pose(picture))


# --- depth -----------------------------------------------------------------------------------------


def find_depth_model(home_root: Path) -> Path:
    """The first depth model folder under HOME/models/depth (by name)."""
    folder = home_root / DEPTH_DIR
    found = sorted(p for p in folder.glob("*/config.json")) if folder.is_dir() else []
    if not found:
        raise ModelNotFound(
            f"Depth maps need a depth model, and {folder} holds none; put a transformers DPT or Depth-Anything folder "
            "(config.json, preprocessor_config.json and the weights) in it as models/depth/<name>/.",
            field="module",
        )
    return found[0].parent


_loaded: dict[Path, tuple] = {}


def _depth_model(folder: Path) -> tuple:
    if folder not in _loaded:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError, KeyError) as e:
            raise UnsupportedModel(f"The depth model folder {folder} could not be loaded as a transformers depth model ({e.__class__.__name__}).") from e
        _loaded.clear()  # keep one depth model in memory
        _loaded[folder] = (processor, model)
    return _loaded[folder]


def depth(pixels: np.ndarray, folder: Path) -> np.ndarray:
    """Relative depth of an RGB picture, 0-255, near bright (these models predict inverse depth)."""
    import torch

    processor, model = _depth_model(folder)
    inputs = processor(images=Image.fromarray(pixels), return_tensors="pt")
    with torch.no_grad():
        predicted = model(**inputs).predicted_depth
    height, width = pixels.shape[:2]
    resized = torch.nn.functional.interpolate(predicted[:, None].float(), size=(height, width), mode="bicubic", align_corners=False)[0, 0]
    low, high = resized.min(), resized.max()
    scaled = (resized - low) / (high - low) if high > low else torch.zeros_like(resized)
    return (scaled * 255).round().clamp(0, 255).to(torch.uint8).numpy()
