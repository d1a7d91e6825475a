"""Lettering: balloon shapes, tails, text that wraps and sizes itself, and reading order.

`letter(balloon)` turns a Balloon into resolution-free geometry (polygons and text lines in page
millimetres). The raster renderer (PIL) and the PDF writer (fpdf2, as vector shapes and
selectable text) both draw that same geometry, so a page looks the same in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from localdiffusion.comic.fonts import ascent_descent, text_width_mm
from localdiffusion.comic.geometry import ellipse, pt, reading_order, rect, rounded_rect
from localdiffusion.comic.model import Balloon, Box, Panel, Point, Project

PT_MM = 25.4 / 72
MIN_PT, MAX_PT, MAX_SFX_PT = 5.0, 12.0, 48.0
LINE_SPACING = 1.15
FILLS = {"speech-oval": "#FFFFFF", "speech-rect": "#FFFFFF", "thought": "#FFFFFF", "caption": "#FFF3B0", "sfx": "#FFD93D"}
# The share of the balloon's box that text may use (an oval's inscribed rectangle is 1/sqrt(2) of it).
TEXT_AREA = {"speech-oval": 0.68, "speech-rect": 0.86, "thought": 0.6, "caption": 0.9, "sfx": 0.96}


@dataclass
class TextLine:
    text: str
    x: float  # left end of the baseline, mm
    y: float  # baseline, mm


@dataclass
class Lettered:
    """A balloon ready to draw: its outline polygons (filled, then stroked as one union) and its text."""

    shapes: list[list[Point]]
    fill: str
    stroke_mm: float
    lines: list[TextLine]
    size_pt: float
    bold: bool = False
    outlined_text: bool = False  # SFX: filled letters with an outline, no balloon
    rotation: float = 0.0
    center: Point = field(default_factory=lambda: pt(0, 0))


def wrap(text: str, width_mm: float, size_mm: float, bold: bool) -> list[str]:
    """Greedy word wrap; explicit newlines are kept. A word longer than the width gets a line of its own."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            trial = f"{line} {word}".strip()
            if line and text_width_mm(trial, size_mm, bold) > width_mm:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def fits(lines: list[str], box_w: float, box_h: float, size_mm: float, bold: bool) -> bool:
    widest = max((text_width_mm(line, size_mm, bold) for line in lines), default=0.0)
    return widest <= box_w and len(lines) * size_mm * LINE_SPACING <= box_h


def fit_text(text: str, box_w: float, box_h: float, bold: bool = False, size_pt: float | None = None,
             max_pt: float = MAX_PT) -> tuple[float, list[str]]:
    """The largest size (points, in half-point steps, up to `max_pt`) at which the wrapped text fits the box,
    and its lines. Dialogue stops at 12 pt so that balloons on a page read alike."""
    if size_pt is not None:
        return size_pt, wrap(text, box_w, size_pt * PT_MM, bold)
    size = max_pt
    while size > MIN_PT:
        lines = wrap(text, box_w, size * PT_MM, bold)
        if fits(lines, box_w, box_h, size * PT_MM, bold):
            return size, lines
        size -= 0.5
    return MIN_PT, wrap(text, box_w, MIN_PT * PT_MM, bold)


def place_lines(lines: list[str], center: Point, size_pt: float, bold: bool) -> list[TextLine]:
    """Centre each line horizontally and the block vertically on `center`."""
    size = size_pt * PT_MM
    ascent, descent = ascent_descent(size, bold)
    step = size * LINE_SPACING
    top = center.y - len(lines) * step / 2
    placed = []
    for i, line in enumerate(lines):
        baseline = top + i * step + (step - ascent - descent) / 2 + ascent
        placed.append(TextLine(line, center.x - text_width_mm(line, size, bold) / 2, baseline))
    return placed


def _tail(box: Box, target: Point) -> list[Point]:
    """A wedge from inside the balloon to the target, its base across the line to the target."""
    c = box.center
    dx, dy = target.x - c.x, target.y - c.y
    length = math.hypot(dx, dy) or 1.0
    half = min(box.w, box.h) * 0.14
    nx, ny = -dy / length * half, dx / length * half
    return [pt(c.x + nx, c.y + ny), pt(target.x, target.y), pt(c.x - nx, c.y - ny)]


def _circle(cx: float, cy: float, r: float) -> list[Point]:
    return ellipse(Box(x=cx - r, y=cy - r, w=2 * r, h=2 * r), 24)


def _cloud(box: Box) -> list[list[Point]]:
    """A thought cloud: an ellipse ringed by bumps, all inside the box."""
    r = min(box.w, box.h) * 0.16
    inner = Box(x=box.x + r, y=box.y + r, w=max(box.w - 2 * r, 1), h=max(box.h - 2 * r, 1))
    c = inner.center
    bumps = max(8, int(math.pi * (inner.w + inner.h) / (2.2 * r)))
    shapes = [ellipse(inner)]
    for i in range(bumps):
        a = 2 * math.pi * i / bumps
        shapes.append(_circle(c.x + inner.w / 2 * math.cos(a), c.y + inner.h / 2 * math.sin(a), r))
    return shapes


def _thought_tail(box: Box, target: Point) -> list[list[Point]]:
    """Three shrinking circles from the cloud's edge toward the thinker."""
    c = box.center
    edge = pt(c.x + (target.x - c.x) * 0.55, c.y + (target.y - c.y) * 0.55)
    r = min(box.w, box.h) * 0.09
    return [_circle(edge.x + (target.x - edge.x) * t, edge.y + (target.y - edge.y) * t, r * (1 - 0.3 * i))
            for i, t in enumerate((0.15, 0.5, 0.85))]


def letter(balloon: Balloon) -> Lettered:
    box = balloon.box
    kind = balloon.kind
    share = TEXT_AREA[kind]
    bold = kind == "sfx"
    size_pt, lines = fit_text(balloon.text, box.w * share, box.h * share, bold, balloon.font_size,
                              MAX_SFX_PT if kind == "sfx" else MAX_PT)
    placed = place_lines(lines, box.center, size_pt, bold)
    if kind == "sfx":
        return Lettered([], FILLS[kind], balloon.outline, placed, size_pt, bold=True, outlined_text=True,
                        rotation=balloon.rotation, center=box.center)
    if kind == "speech-oval":
        shapes = [ellipse(box)]
    elif kind == "speech-rect":
        shapes = [rounded_rect(box, min(box.w, box.h) * 0.25)]
    elif kind == "thought":
        shapes = _cloud(box)
    else:
        shapes = [rect(box.x, box.y, box.right, box.bottom)]
    if balloon.tail is not None and kind in ("speech-oval", "speech-rect"):
        shapes.insert(0, _tail(box, balloon.tail))
    if balloon.tail is not None and kind == "thought":
        shapes += _thought_tail(box, balloon.tail)
    return Lettered(shapes, FILLS[kind], balloon.outline, placed, size_pt, center=box.center)


def ordered_balloons(project: Project, panel: Panel) -> list[Balloon]:
    """A panel's balloons in reading order (top to bottom; left to right, or right to left for manga)."""
    return reading_order(panel.balloons, lambda b: b.box, project.direction)
