"""Page layout templates (1-8 panels) and the layout editing functions the page editor calls.

Templates are drawn in fractions of the page's live area (inside the margins) as quads
(tl, tr, br, bl); an edge inside the live area gives up half a gutter, so neighbouring panels
end up exactly one gutter apart. Panels stay quads, so that every editing function below keeps
working after a border was slanted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from localdiffusion.comic.geometry import EPS, bbox, convex_hull, pt, reading_order
from localdiffusion.comic.model import MAX_PANELS, BorderStyle, Page, Panel, Point, Project, check_panel_count
from localdiffusion.errors import BadInput, closest, one_of

Quad = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]
Side = Literal["left", "right", "top", "bottom"]
MIN_SIDE_MM = 12.0


def _r(x0: float, y0: float, x1: float, y1: float) -> Quad:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    cells: tuple[Quad, ...]
    inset: tuple[int, ...] = ()  # cells that float over the others (a splash's inset): no gutter insets

    @property
    def panels(self) -> int:
        return len(self.cells)

    def to_json(self) -> dict:
        return {"name": self.name, "title": self.title, "panels": self.panels,
                "cells": [[list(p) for p in cell] for cell in self.cells]}


def _grid(cols: int, rows: int) -> tuple[Quad, ...]:
    return tuple(_r(c / cols, r / rows, (c + 1) / cols, (r + 1) / rows) for r in range(rows) for c in range(cols))


TEMPLATES: dict[str, Template] = {t.name: t for t in [
    Template("splash", "One splash panel", (_r(0, 0, 1, 1),)),
    Template("two-tiers", "Two tiers", _grid(1, 2)),
    Template("splash-inset", "Splash with an inset", (_r(0, 0, 1, 1), _r(0.58, 0.64, 0.96, 0.96)), inset=(1,)),
    Template("three-tiers", "Three tiers", _grid(1, 3)),
    Template("grid-2x2", "2×2 grid", _grid(2, 2)),
    Template("large-plus-three", "One large panel and a strip of three",
             (_r(0, 0, 1, 0.62), _r(0, 0.62, 1 / 3, 1), _r(1 / 3, 0.62, 2 / 3, 1), _r(2 / 3, 0.62, 1, 1))),
    # Manga pages lean on slanted borders; the template is drawn right-to-left and mirrored for ltr.
    Template("manga-5", "5-panel manga", (
        _r(0.4, 0, 1, 0.3), _r(0, 0, 0.4, 0.3),
        ((0, 0.3), (1, 0.3), (1, 0.58), (0, 0.66)),
        ((0.55, 0.616), (1, 0.58), (1, 1), (0.45, 1)),
        ((0, 0.66), (0.55, 0.616), (0.45, 1), (0, 1)),
    )),
    Template("grid-2x3", "6 panels, 2×3", _grid(2, 3)),
    Template("seven", "7 panels: 2, 3, 2", (
        _r(0, 0, 0.5, 1 / 3), _r(0.5, 0, 1, 1 / 3),
        _r(0, 1 / 3, 1 / 3, 2 / 3), _r(1 / 3, 1 / 3, 2 / 3, 2 / 3), _r(2 / 3, 1 / 3, 1, 2 / 3),
        _r(0, 2 / 3, 0.5, 1), _r(0.5, 2 / 3, 1, 1),
    )),
    Template("grid-4x2", "8 panels, 4 tiers of 2", _grid(2, 4)),
]}

DEFAULT_FOR_COUNT = {1: "splash", 2: "two-tiers", 3: "three-tiers", 4: "grid-2x2", 5: "manga-5",
                     6: "grid-2x3", 7: "seven", 8: "grid-4x2"}
RTL_NATIVE = {"manga-5"}


def template(name: str) -> Template:
    if name not in TEMPLATES:
        near = closest(name, list(TEMPLATES))
        hint = f"did you mean {one_of(near)}? " if near else ""
        raise BadInput(f"There is no layout template '{name}'; {hint}choose one of {one_of(list(TEMPLATES))}.", field="template")
    return TEMPLATES[name]


def template_for(count: int) -> Template:
    check_panel_count(count)
    if count < 1:
        raise BadInput("A page needs at least one panel.", field="panels")
    return TEMPLATES[DEFAULT_FOR_COUNT[count]]


def _cell_quad(cell: Quad, area: tuple[float, float, float, float], gutter: float, floating: bool, mirror: bool) -> list[Point]:
    x0, y0, w, h = area
    half = 0.0 if floating else gutter / 2
    corners = [(1 - x if mirror else x, y) for x, y in cell]
    if mirror:  # mirroring turns tl,tr,br,bl into tr,tl,bl,br
        corners = [corners[1], corners[0], corners[3], corners[2]]
    (tlx, tly), (trx, try_), (brx, bry), (blx, bly) = corners
    left = half if min(tlx, blx) > EPS else 0.0
    right = half if max(trx, brx) < 1 - EPS else 0.0
    top = half if min(tly, try_) > EPS else 0.0
    bottom = half if max(bly, bry) < 1 - EPS else 0.0
    return [pt(x0 + tlx * w + left, y0 + tly * h + top), pt(x0 + trx * w - right, y0 + try_ * h + top),
            pt(x0 + brx * w - right, y0 + bry * h - bottom), pt(x0 + blx * w + left, y0 + bly * h - bottom)]


def apply_template(project: Project, page: Page, name: str, owner_id: int | None = None) -> Page:
    """Lay the page out anew from a template. Existing panels keep their content in reading order;
    a template with fewer panels than the page has is refused, so that nothing is dropped silently."""
    t = template(name)
    if len(page.panels) > t.panels:
        raise BadInput(f"The template '{name}' has {t.panels} panels but the page has {len(page.panels)}; "
                       f"pick a template with at least {len(page.panels)} or delete panels first.", field="template")
    size = project.page_size
    m = page.margin_mm
    area = (m, m, size.width_mm - 2 * m, size.height_mm - 2 * m)
    mirror = (name in RTL_NATIVE) == (project.direction == "ltr")
    shapes = [_cell_quad(c, area, page.gutter_mm, i in t.inset, mirror) for i, c in enumerate(t.cells)]
    shapes = reading_order(shapes, bbox, project.direction) if not t.inset else shapes
    old = reading_order(page.panels, lambda p: bbox(p.shape), project.direction)
    panels = []
    for i, shape in enumerate(shapes):
        panel = old[i].model_copy(update={"shape": shape}) if i < len(old) else Panel(shape=shape, owner_id=owner_id)
        panels.append(panel)
    page.panels = panels
    page.template = name
    return page


def new_page(project: Project, template_name: str = "grid-2x2", owner_id: int | None = None) -> Page:
    page = Page()
    return apply_template(project, page, template_name, owner_id)


def ordered_panels(project: Project, page: Page) -> list[Panel]:
    return reading_order(page.panels, lambda p: bbox(p.shape), project.direction)


# --- editing -----------------------------------------------------------------------------


def _panel(page: Page, panel_id: str) -> Panel:
    for panel in page.panels:
        if panel.id == panel_id:
            return panel
    raise BadInput(f"There is no panel '{panel_id}' on this page.", field="panel")


def _quad(panel: Panel) -> list[Point]:
    if len(panel.shape) != 4:
        raise BadInput(f"Panel '{panel.id}' has {len(panel.shape)} corners; layout editing works on four-cornered panels.",
                       field="panel")
    return list(panel.shape)


def _lerp(a: Point, b: Point, t: float) -> Point:
    return pt(a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t)


def split_panel(page: Page, panel_id: str, direction: Literal["horizontal", "vertical"], at: float = 0.5) -> Panel:
    """Cut a panel in two: 'horizontal' makes a top and a bottom panel, 'vertical' a left and a right one,
    a gutter apart. The first part keeps the content; the new part is returned."""
    check_panel_count(len(page.panels) + 1, "The split page")
    if not 0.1 <= at <= 0.9:
        raise BadInput(f"The split position {at} is too near an edge; give a fraction between 0.1 and 0.9.", field="at")
    panel = _panel(page, panel_id)
    tl, tr, br, bl = _quad(panel)
    g = page.gutter_mm / 2
    if direction == "horizontal":
        left, right = _lerp(tl, bl, at), _lerp(tr, br, at)
        first = [tl, tr, pt(right.x, right.y - g), pt(left.x, left.y - g)]
        second = [pt(left.x, left.y + g), pt(right.x, right.y + g), br, bl]
    elif direction == "vertical":
        top, bottom = _lerp(tl, tr, at), _lerp(bl, br, at)
        first = [tl, pt(top.x - g, top.y), pt(bottom.x - g, bottom.y), bl]
        second = [pt(top.x + g, top.y), tr, br, pt(bottom.x + g, bottom.y)]
    else:
        raise BadInput(f"The split direction '{direction}' is unknown; choose horizontal or vertical.", field="direction")
    for shape in (first, second):
        _check_size(shape)
    panel.shape = first
    new = Panel(shape=second, owner_id=panel.owner_id)
    page.panels.insert(page.panels.index(panel) + 1, new)
    return new


def _smallest_side(shape: list[Point]) -> float:
    """For a quad tl, tr, br, bl: its narrowest width or height (negative when it turned inside out)."""
    tl, tr, br, bl = shape
    return min(tr.x - tl.x, br.x - bl.x, bl.y - tl.y, br.y - tr.y)


def _check_size(shape: list[Point]) -> None:
    if _smallest_side(shape) < MIN_SIDE_MM:
        raise BadInput(f"That would make a panel narrower than {MIN_SIDE_MM:.0f} mm; panels must be at least "
                       f"{MIN_SIDE_MM:.0f} mm on each side.", field="panel")


def _close(a: Point, b: Point, tolerance: float = 0.5) -> bool:
    return abs(a.x - b.x) <= tolerance and abs(a.y - b.y) <= tolerance


def merge_panels(page: Page, first_id: str, second_id: str) -> Panel:
    """Join two neighbours that share a whole edge (across one gutter) into one panel, which keeps the
    first panel's content."""
    a, b = _panel(page, first_id), _panel(page, second_id)
    qa, qb = _quad(a), _quad(b)
    g = page.gutter_mm
    pairs = {  # which of b's corners must sit one gutter from which of a's
        "right": ((1, 0, g, 0), (2, 3, g, 0)), "left": ((0, 1, -g, 0), (3, 2, -g, 0)),
        "bottom": ((3, 0, 0, g), (2, 1, 0, g)), "top": ((0, 3, 0, -g), (1, 2, 0, -g)),
    }
    for (ia, ib, dx, dy), (ja, jb, ex, ey) in pairs.values():
        if _close(pt(qa[ia].x + dx, qa[ia].y + dy), qb[ib]) and _close(pt(qa[ja].x + ex, qa[ja].y + ey), qb[jb]):
            a.shape = convex_hull(qa + qb)
            page.panels.remove(b)
            return a
    raise BadInput(f"Panels '{first_id}' and '{second_id}' do not share a whole edge; only neighbours side by side can be merged.",
                   field="panel")


EDGE = {"left": (0, 3), "right": (1, 2), "top": (0, 1), "bottom": (3, 2)}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def _edge_line(quad: list[Point], side: Side) -> tuple[Point, Point]:
    i, j = EDGE[side]
    return quad[i], quad[j]


def _offset_at(line: tuple[Point, Point], p: Point, vertical: bool) -> float:
    """How far `p` is from the line, measured along x (vertical gutters) or y (horizontal ones)."""
    a, b = line
    if vertical:
        x = a.x if abs(b.y - a.y) < EPS else a.x + (p.y - a.y) * (b.x - a.x) / (b.y - a.y)
        return p.x - x
    y = a.y if abs(b.x - a.x) < EPS else a.y + (p.x - a.x) * (b.y - a.y) / (b.x - a.x)
    return p.y - y


def _gutter_corners(page: Page, panel: Panel, side: Side) -> list[tuple[Panel, int]]:
    """The corners on either bank of the gutter beside `side` of `panel`. The gutter runs as far as panels
    keep touching it end to end, so dragging a 2×2 grid's top-row gutter leaves the bottom row alone."""
    line = _edge_line(_quad(panel), side)
    vertical = side in ("left", "right")
    outward = page.gutter_mm if side in ("right", "bottom") else -page.gutter_mm
    on_line = []  # (panel, corner indices, span along the gutter)
    for other in page.panels:
        oq = _quad(other)
        for bank, want in ((side, 0.0), (OPPOSITE[side], outward)):
            i, j = EDGE[bank]
            if all(abs(_offset_at(line, oq[k], vertical) - want) < 0.5 for k in (i, j)):
                ends = sorted((oq[i].y, oq[j].y) if vertical else (oq[i].x, oq[j].x))
                on_line.append((other, (i, j), ends))
    own = bbox(panel.shape)
    lo, hi = (own.y, own.bottom) if vertical else (own.x, own.right)
    chosen: list[tuple[Panel, int]] = []
    taken: set[tuple[int, int]] = set()
    grown = True
    while grown:
        grown = False
        for other, (i, j), (a, b) in on_line:
            if (id(other), i) not in taken and (other is panel or (a < hi - EPS and b > lo + EPS)):
                chosen += [(other, i), (other, j)]
                taken.add((id(other), i))
                lo, hi, grown = min(lo, a), max(hi, b), True
    return chosen


def _shift_gutter(page: Page, panel_id: str, side: Side, shift: Callable[[Point], float]) -> None:
    panel = _panel(page, panel_id)
    vertical = side in ("left", "right")
    corners = _gutter_corners(page, panel, side)
    if not any(q is panel for q, _ in corners):
        raise BadInput(f"Panel '{panel_id}' has no {side} edge to move.", field="side")
    moved = {id(p): list(p.shape) for p, _ in corners}
    for p, k in corners:
        c = p.shape[k]
        d = shift(c)
        moved[id(p)][k] = pt(c.x + d, c.y) if vertical else pt(c.x, c.y + d)
    if any(_smallest_side(s) < MIN_SIDE_MM for s in moved.values()):
        raise BadInput(f"Moving that gutter would make a panel smaller than {MIN_SIDE_MM:.0f} mm; move it less.", field="delta")
    for p, _ in corners:
        p.shape = moved[id(p)]


def move_gutter(page: Page, panel_id: str, side: Side, delta_mm: float) -> None:
    """Drag the gutter beside one edge of a panel by `delta_mm` (x for left/right, y for top/bottom);
    the panels across the gutter follow. An edge on the page margin moves alone."""
    _check_side(side)
    _shift_gutter(page, panel_id, side, lambda c: delta_mm)


def slant_border(page: Page, panel_id: str, side: Side, amount_mm: float) -> None:
    """Tilt the gutter beside one edge: its ends move `amount_mm` apart (one end +half, the other -half),
    turning the line about its middle; the panels across it follow."""
    _check_side(side)
    panel = _panel(page, panel_id)
    a, b = _edge_line(_quad(panel), side)
    vertical = side in ("left", "right")
    lo, hi = (a.y, b.y) if vertical else (a.x, b.x)
    span = max(hi - lo, EPS)
    middle = (lo + hi) / 2
    _shift_gutter(page, panel_id, side, lambda c: amount_mm * ((middle - (c.y if vertical else c.x)) / span))


def set_gutter(page: Page, width_mm: float) -> None:
    """Change the gutter width: every edge inside the live area moves by half the difference."""
    if not 0 <= width_mm <= 30:
        raise BadInput(f"The gutter width {width_mm} mm is out of range; use 0 to 30 mm.", field="gutter_mm")
    half = (width_mm - page.gutter_mm) / 2
    boxes = [bbox(p.shape) for p in page.panels]
    left, top = min(b.x for b in boxes), min(b.y for b in boxes)
    right, bottom = max(b.right for b in boxes), max(b.bottom for b in boxes)
    shapes = []
    for panel in page.panels:
        tl, tr, br, bl = _quad(panel)
        dl = 0 if max(tl.x, bl.x) <= left + EPS else half
        dr = 0 if min(tr.x, br.x) >= right - EPS else half
        dt = 0 if max(tl.y, tr.y) <= top + EPS else half
        db = 0 if min(bl.y, br.y) >= bottom - EPS else half
        shape = [pt(tl.x + dl, tl.y + dt), pt(tr.x - dr, tr.y + dt), pt(br.x - dr, br.y - db), pt(bl.x + dl, bl.y - db)]
        _check_size(shape)
        shapes.append(shape)
    for panel, shape in zip(page.panels, shapes):
        panel.shape = shape
    page.gutter_mm = width_mm


def set_border(page: Page, style: str = "solid", width_mm: float = 0.8, color: str = "#000000") -> None:
    page.border = BorderStyle(style=style, width_mm=width_mm, color=color)


def _check_side(side: str) -> None:
    if side not in EDGE:
        raise BadInput(f"The side '{side}' is unknown; choose left, right, top or bottom.", field="side")


def templates_json() -> list[dict]:
    return [t.to_json() for t in TEMPLATES.values()]


__all__ = ["TEMPLATES", "MAX_PANELS", "apply_template", "new_page", "split_panel", "merge_panels", "move_gutter",
           "slant_border", "set_gutter", "set_border", "template", "template_for", "templates_json", "ordered_panels"]
