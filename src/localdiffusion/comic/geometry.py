"""Small plane-geometry helpers for panels and balloons (page millimetres, y down)."""

from __future__ import annotations

import math
from functools import cmp_to_key
from typing import Callable, Sequence, TypeVar

from localdiffusion.comic.model import Box, Point

T = TypeVar("T")
EPS = 0.01


def pt(x: float, y: float) -> Point:
    return Point(x=round(x, 4), y=round(y, 4))


def bbox(points: Sequence[Point]) -> Box:
    xs, ys = [p.x for p in points], [p.y for p in points]
    return Box(x=min(xs), y=min(ys), w=max(max(xs) - min(xs), EPS), h=max(max(ys) - min(ys), EPS))


def rect(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    """A rectangle as the corners tl, tr, br, bl."""
    return [pt(x0, y0), pt(x1, y0), pt(x1, y1), pt(x0, y1)]


def is_rectangle(shape: Sequence[Point]) -> bool:
    """True for an axis-aligned rectangle: four corners, each on a corner of the bounding box."""
    if len(shape) != 4:
        return False
    box = bbox(shape)
    corners = {(x, y) for x in (box.x, box.right) for y in (box.y, box.bottom)}
    return all(any(abs(p.x - x) < EPS and abs(p.y - y) < EPS for x, y in corners) for p in shape) and \
        len({(round(p.x / EPS), round(p.y / EPS)) for p in shape}) == 4


def inner_box(shape: Sequence[Point]) -> Box:
    """For a quad tl, tr, br, bl: the largest axis-aligned box inside it (slanted edges cut in)."""
    if len(shape) != 4:
        return bbox(shape)
    tl, tr, br, bl = shape
    x0, x1 = max(tl.x, bl.x), min(tr.x, br.x)
    y0, y1 = max(tl.y, tr.y), min(bl.y, br.y)
    return Box(x=x0, y=y0, w=max(x1 - x0, EPS), h=max(y1 - y0, EPS))


def contains(shape: Sequence[Point], p: Point) -> bool:
    """Point-in-polygon by ray casting; points on the edge may go either way."""
    inside = False
    n = len(shape)
    for i in range(n):
        a, b = shape[i], shape[(i + 1) % n]
        if (a.y > p.y) != (b.y > p.y):
            x = a.x + (p.y - a.y) * (b.x - a.x) / (b.y - a.y)
            if p.x < x:
                inside = not inside
    return inside


def box_inside(box: Box, shape: Sequence[Point], tolerance: float = 0.05) -> bool:
    corners = [pt(box.x + tolerance, box.y + tolerance), pt(box.right - tolerance, box.y + tolerance),
               pt(box.right - tolerance, box.bottom - tolerance), pt(box.x + tolerance, box.bottom - tolerance)]
    return all(contains(shape, c) for c in corners)


def ellipse(box: Box, segments: int = 72) -> list[Point]:
    c = box.center
    return [pt(c.x + box.w / 2 * math.cos(2 * math.pi * i / segments), c.y + box.h / 2 * math.sin(2 * math.pi * i / segments))
            for i in range(segments)]


def rounded_rect(box: Box, radius: float, segments: int = 8) -> list[Point]:
    r = min(radius, box.w / 2, box.h / 2)
    corners = [(box.right - r, box.y + r, -90), (box.right - r, box.bottom - r, 0),
               (box.x + r, box.bottom - r, 90), (box.x + r, box.y + r, 180)]
    points = []
    for cx, cy, start in corners:
        for i in range(segments + 1):
            a = math.radians(start + 90 * i / segments)
            points.append(pt(cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def reading_order(items: Sequence[T], box_of: Callable[[T], Box], direction: str) -> list[T]:
    """Items in reading order: tier by tier from the top; within a tier left to right (ltr) or right to
    left (rtl). Two items share a tier when neither lies above the other; a slanted border may overlap
    the next tier by up to a quarter of the smaller height and still count as above it."""
    def compare(a: T, b: T) -> int:
        ba, bb = box_of(a), box_of(b)
        slack = min(ba.h, bb.h) / 4
        if ba.bottom <= bb.y + slack:
            return -1
        if bb.bottom <= ba.y + slack:
            return 1
        dx = ba.center.x - bb.center.x
        if abs(dx) > EPS:
            return (1 if dx > 0 else -1) * (-1 if direction == "rtl" else 1)
        return -1 if ba.center.y < bb.center.y else (1 if ba.center.y > bb.center.y else 0)

    return sorted(items, key=cmp_to_key(compare))


def convex_hull(points: Sequence[Point]) -> list[Point]:
    """Andrew's monotone chain, returned clockwise on screen (y down) starting nearest the top-left."""
    unique = sorted({(round(p.x, 4), round(p.y, 4)) for p in points})
    if len(unique) < 3:
        return [pt(x, y) for x, y in unique]

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in unique:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(unique):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]  # counter-clockwise in y-up terms = clockwise on screen
    start = min(range(len(hull)), key=lambda i: hull[i][0] + hull[i][1])
    hull = hull[start:] + hull[:start]
    return [pt(x, y) for x, y in hull]
