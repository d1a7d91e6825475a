"""Small SVG drawings for the parameter guide's cards, drawn by code (no binary assets).

Each drawing is a 160x90 picture of the idea behind a parameter: steps as noise turning into a
picture, CFG as a dial, seeds as different compositions, and so on. `illustration(kind)` returns
the SVG text; unknown kinds get a neutral placeholder.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from html import escape
from math import cos, sin

W, H = 160, 90
INK, SOFT, ACCENT, WARM = "#55524c", "#d9d5cc", "#3c5bd6", "#e0913a"


def _svg(body: str, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W * 2}" height="{H * 2}" '
            f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
            f'<rect width="{W}" height="{H}" rx="8" fill="#faf9f6"/>{body}</svg>')


def _scene(x: float, y: float, size: float, shift: float = 0.0) -> str:
    """A tiny landscape (sky, sun, hill): the 'finished picture' of several drawings."""
    r = size / 2
    return (f'<rect x="{x}" y="{y}" width="{size}" height="{size}" fill="#bcd3f2"/>'
            f'<circle cx="{x + size * (0.3 + shift)}" cy="{y + size * 0.32}" r="{size * 0.13}" fill="{WARM}"/>'
            f'<path d="M{x} {y + size} Q{x + r} {y + size * 0.45} {x + size} {y + size}Z" fill="#6b9a5b"/>')


def _noise(x: float, y: float, size: float, amount: float, seed: int = 1) -> str:
    """A square of grey noise cells; `amount` 1 is pure noise, 0 draws nothing over what lies beneath."""
    rng = random.Random(seed)
    cells, n = [], 6
    step = size / n
    for i in range(n):
        for j in range(n):
            grey = rng.randint(60, 230)
            cells.append(f'<rect x="{x + i * step:.1f}" y="{y + j * step:.1f}" width="{step:.1f}" height="{step:.1f}" '
                         f'fill="rgb({grey},{grey},{grey})" opacity="{amount:.2f}"/>')
    return "".join(cells)


def noise_strip() -> str:
    parts = []
    for k, amount in enumerate((1.0, 0.75, 0.5, 0.25, 0.0)):
        x = 8 + k * 30
        parts.append(_scene(x, 22, 24) + _noise(x, 22, 24, amount, seed=k))
        parts.append(f'<text x="{x + 12}" y="62" font-size="7" text-anchor="middle" fill="{INK}">{k * 5 or 1}</text>')
    parts.append(f'<text x="80" y="78" font-size="7" text-anchor="middle" fill="{INK}">step by step, noise becomes a picture</text>')
    return _svg("".join(parts), "Noise turning into a picture over the steps")


def dial() -> str:
    ticks = []
    for value in range(0, 21, 2):
        angle = 3.1416 * (1 - value / 20)
        x1, y1 = 80 + 34 * cos(angle), 62 - 34 * sin(angle)
        x2, y2 = 80 + 40 * cos(angle), 62 - 40 * sin(angle)
        colour = ACCENT if 5 <= value <= 8 else INK
        ticks.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" stroke-width="2"/>')
    needle_angle = 3.1416 * (1 - 7 / 20)
    nx, ny = 80 + 30 * cos(needle_angle), 62 - 30 * sin(needle_angle)
    body = ("".join(ticks) + f'<line x1="80" y1="62" x2="{nx:.1f}" y2="{ny:.1f}" stroke="{WARM}" stroke-width="3" stroke-linecap="round"/>'
            f'<circle cx="80" cy="62" r="4" fill="{INK}"/>'
            f'<text x="30" y="80" font-size="7" fill="{INK}">loose</text>'
            f'<text x="112" y="80" font-size="7" fill="{INK}">literal</text>'
            f'<text x="80" y="80" font-size="8" text-anchor="middle" fill="{ACCENT}">7</text>')
    return _svg(body, "A dial from loose to literal, set at 7")


def seeds() -> str:
    parts = []
    for k, shift in enumerate((-0.15, 0.25, 0.45)):
        x = 10 + k * 50
        parts.append(_scene(x, 14, 40, shift))
        parts.append(f'<text x="{x + 20}" y="70" font-size="7" text-anchor="middle" fill="{INK}">seed {k + 1}</text>')
    return _svg("".join(parts), "Three seeds, three compositions")


def frames() -> str:
    shapes = [(14, 22, 40, 40, "square"), (66, 14, 28, 52, "tall"), (104, 28, 50, 30, "wide")]
    body = "".join(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="#bcd3f2" stroke="{INK}"/>'
                   f'<text x="{x + w / 2}" y="80" font-size="7" text-anchor="middle" fill="{INK}">{label}</text>'
                   for x, y, w, h, label in shapes)
    return _svg(body, "Square, tall and wide canvases")


def words(away: bool = False) -> str:
    colour = INK if away else ACCENT
    arrow = f'<path d="M70 45 L{40 if away else 100} 45" stroke="{colour}" stroke-width="2" marker-end="url(#a)"/>'
    marker = (f'<defs><marker id="a" markerWidth="6" markerHeight="6" refX="5" refY="3" orient="auto">'
              f'<path d="M0 0 L6 3 L0 6Z" fill="{colour}"/></marker></defs>')
    label = "steer away" if away else "steer toward"
    text = f'<text x="{100 if away else 14}" y="30" font-size="8" fill="{colour}">{"blurry" if away else "a lighthouse"}</text>'
    return _svg(marker + text + arrow + _scene(110 if not away else 8, 30, 32) +
                f'<text x="80" y="82" font-size="7" text-anchor="middle" fill="{INK}">{label}</text>',
                "Words steering the picture away" if away else "Words steering the picture")


def paths() -> str:
    lines = [("M10 70 C50 70 60 20 150 20", ACCENT), ("M10 70 C40 40 90 50 150 20", WARM), ("M10 70 L60 45 L110 30 L150 20", INK)]
    body = "".join(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>' for d, c in lines)
    body += (f'<text x="10" y="84" font-size="7" fill="{INK}">noise</text>'
             f'<text x="150" y="14" font-size="7" text-anchor="end" fill="{INK}">picture</text>')
    return _svg(body, "Different routes from noise to the picture")


def curves() -> str:
    body = ""
    for d, c in (("M10 15 L150 75", INK), ("M10 15 Q30 70 150 75", ACCENT), ("M10 15 Q60 75 150 75", WARM)):
        body += f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>'
    body += (f'<text x="12" y="10" font-size="7" fill="{INK}">noise level</text>'
             f'<text x="150" y="86" font-size="7" text-anchor="end" fill="{INK}">steps</text>')
    return _svg(body, "How the noise level falls over the steps")


def blend() -> str:
    parts = []
    for k, amount in enumerate((0.0, 0.5, 1.0)):
        x = 10 + k * 50
        parts.append(f'<rect x="{x}" y="14" width="40" height="40" fill="#e8c07a"/>')
        parts.append(f'<g opacity="{amount}">{_scene(x, 14, 40, 0.3)}</g>')
        parts.append(f'<text x="{x + 20}" y="70" font-size="7" text-anchor="middle" fill="{INK}">{amount:g}</text>')
    return _svg("".join(parts), "From the input image to a new one")


def stack() -> str:
    body = "".join(_scene(30 + k * 12, 10 + k * 8, 44, k * 0.2) for k in range(4))
    return _svg(body, "Several pictures at once")


def layers() -> str:
    body = ""
    for k in range(6):
        colour = ACCENT if k == 4 else SOFT
        body += f'<rect x="{20 + k * 21}" y="20" width="16" height="44" rx="3" fill="{colour}" stroke="{INK}"/>'
    body += (f'<text x="20" y="78" font-size="7" fill="{INK}">text model layers</text>'
             f'<text x="140" y="14" font-size="7" text-anchor="end" fill="{ACCENT}">skip 2 reads here</text>')
    return _svg(body, "Reading the prompt from an earlier layer")


def enlarge() -> str:
    body = (_scene(12, 30, 28) + f'<path d="M48 44 L70 44" stroke="{INK}" stroke-width="2"/>'
            + _scene(80, 10, 64) + f'<text x="26" y="72" font-size="7" text-anchor="middle" fill="{INK}">small</text>')
    return _svg(body, "A small picture enlarged and repainted")


def mask() -> str:
    body = (_scene(40, 8, 74) + '<defs><filter id="b"><feGaussianBlur stdDeviation="3"/></filter></defs>'
            f'<circle cx="88" cy="50" r="16" fill="#ffffff" opacity="0.85" filter="url(#b)"/>'
            f'<circle cx="88" cy="50" r="16" fill="none" stroke="{ACCENT}" stroke-dasharray="3 2"/>')
    return _svg(body, "A painted mask with a soft edge")


def models() -> str:
    body = ""
    for k, (sky, hill) in enumerate((("#bcd3f2", "#6b9a5b"), ("#f2d1bc", "#9a6b5b"), ("#d6c8f0", "#5b6b9a"))):
        x = 10 + k * 50
        body += (f'<rect x="{x}" y="14" width="40" height="40" fill="{sky}"/>'
                 f'<path d="M{x} 54 Q{x + 20} 30 {x + 40} 54Z" fill="{hill}"/>')
    return _svg(body + f'<text x="80" y="72" font-size="7" text-anchor="middle" fill="{INK}">same words, three models</text>',
                "The same prompt drawn by three models")


DRAWINGS: dict[str, Callable[[], str]] = {
    "noise-strip": noise_strip, "dial": dial, "seeds": seeds, "frames": frames, "words": words,
    "words-away": lambda: words(away=True), "paths": paths, "curves": curves, "blend": blend, "stack": stack,
    "layers": layers, "enlarge": enlarge, "mask": mask, "models": models,
}


def illustration(kind: str) -> str:
    draw = DRAWINGS.get(kind)
    return draw() if draw else _svg(f'<text x="80" y="48" font-size="8" text-anchor="middle" fill="{INK}">{escape(kind)}</text>', kind)
