"""`localdiffusion pose ...`: detect a pose in a photo, render a pose for ControlNet, list the presets."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from localdiffusion.cli.common import app, out
from localdiffusion.cli.options import parse_size
from localdiffusion.errors import BadInput, one_of

pose_app = typer.Typer(help="OpenPose poses: detect one in a photo, render one for ControlNet, list the presets.", no_args_is_help=True)
app.add_typer(pose_app, name="pose")

MAX_SIDE = 8192


@pose_app.command("detect")
def detect(
    photo: Path = typer.Argument(..., help="A photo (PNG, JPEG, WEBP) of a person."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the OpenPose JSON."),
    render: Optional[Path] = typer.Option(None, "--render", help="Also write the ControlNet pose image here (PNG)."),
) -> None:
    """Find the pose of the person in PHOTO (offline, with mediapipe) and write it as OpenPose JSON."""
    from localdiffusion.control.pose import detect_pose, render_pose, write_pose
    from localdiffusion.engine.images import as_rgb, open_image

    image = as_rgb(open_image(str(photo), "photo"))
    with native_stderr_silenced():
        pose = detect_pose(image)
    if not pose.people:
        raise BadInput(f"No person was found in the photo '{photo}'; use a photo where one whole body is clearly visible.")
    if render is not None:
        _save_png(render_pose(pose), render)
    write_pose(pose, output)
    found = sum(1 for point in pose.people[0].keypoints if point[2] > 0)
    out.print(f"Found {found} of 18 joints; wrote {output}" + (f" and {render}" if render else "") + ".", highlight=False)


@pose_app.command("render")
def render(
    pose_file: str = typer.Argument(..., metavar="POSE", help="An OpenPose JSON file, or the name of a preset pose."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the pose image (PNG)."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT of the image (default: the pose's canvas size)."),
) -> None:
    """Draw POSE as the ControlNet OpenPose conditioning image."""
    from localdiffusion.control.pose import render_pose

    width_height = _checked_size(size) if size else None
    _save_png(render_pose(_load(pose_file), width_height), output)
    out.print(f"Wrote {output}.", highlight=False)


@pose_app.command("presets")
def list_presets() -> None:
    """List the preset poses that ship with Local Diffusion (use a name wherever a pose file goes)."""
    from localdiffusion.control.pose import presets

    for name, pose in presets().items():
        out.print(f"{name:<14} {pose.canvas_width}x{pose.canvas_height}", highlight=False)


def _load(source: str):
    from localdiffusion.control.pose import presets, read_pose

    if Path(source).is_file():
        return read_pose(Path(source))
    shipped = presets()
    if source in shipped:
        return shipped[source]
    raise BadInput(f"The pose '{source}' is neither a file nor a preset; give an OpenPose JSON file or one of {one_of(list(shipped))}.")


def _checked_size(text: str) -> tuple[int, int]:
    width, height = parse_size(text)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise BadInput(f"The size '{text}' is out of range; width and height must be between 1 and {MAX_SIDE}.", field="size")
    return width, height


def _save_png(image, path: Path) -> None:
    from localdiffusion.store.files import atomic_path

    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """mediapipe's C++ side logs TensorFlow Lite chatter straight to file descriptor 2, which Python's
    logging cannot filter; a person running `pose detect` should see only our own messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
