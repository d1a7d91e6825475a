"""Raster pages with PIL: panel images fitted with pan and zoom, clipped to the panel shapes, borders and
lettering, at the project's dpi. The PDF writer uses the same fitting and lettering geometry."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from localdiffusion.comic.fonts import pil_font
from localdiffusion.comic.geometry import bbox
from localdiffusion.comic.lettering import PT_MM, Lettered, letter, ordered_balloons
from localdiffusion.comic.model import MM_PER_INCH, ImageView, Page, Panel, Project
from localdiffusion.comic.storage import asset_path
from localdiffusion.errors import BadInput

EMPTY_PANEL = "#E6E6E6"
# What one export may hold in memory and time: a page (A3 at 600 dpi is 70 megapixels) and a whole book.
MAX_PAGE_PIXELS = 100_000_000
MAX_BOOK_PIXELS = 1_000_000_000


def px(mm: float, dpi: int) -> float:
    return mm / MM_PER_INCH * dpi


def fit_image(image: Image.Image, width: int, height: int, view: ImageView) -> Image.Image:
    """The image as it shows in a width×height panel box: scaled to cover the box (or to fit inside it,
    on white), zoomed, and panned so that the view's focus point sits at the box centre when it can."""
    image = image.convert("RGB")
    iw, ih = image.size
    cover = max(width / iw, height / ih)
    scale = (cover if view.fit == "cover" else min(width / iw, height / ih)) * view.zoom
    # The part of the image the box shows, in image pixels, clamped to stay on the image.
    cw, ch = min(width / scale, iw), min(height / scale, ih)
    left = min(max(view.x * iw - cw / 2, 0), iw - cw)
    top = min(max(view.y * ih - ch / 2, 0), ih - ch)
    shown = image.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.LANCZOS,
                         box=(left, top, left + cw, top + ch))
    if shown.size == (width, height):
        return shown
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(shown, ((width - shown.width) // 2, (height - shown.height) // 2))
    return canvas


def page_px(project: Project, dpi: int) -> tuple[int, int]:
    return round(px(project.page_size.width_mm, dpi)), round(px(project.page_size.height_mm, dpi))


def check_render_size(project: Project, dpi: int | None = None, pages: int | None = None) -> None:
    """Refuse, before anything is allocated, a page or a book whose pixels at `dpi` exceed the limits."""
    dpi = project.dpi if dpi is None else dpi
    pages = len(project.pages) if pages is None else pages
    w, h = page_px(project, dpi)
    size = f"{project.page_size.width_mm:g}×{project.page_size.height_mm:g} mm"
    if w * h > MAX_PAGE_PIXELS:
        raise BadInput(f"A {size} page at {dpi} dpi is {w}×{h} pixels ({w * h / 1e6:.0f} megapixels), above the limit of "
                       f"{MAX_PAGE_PIXELS // 10**6} megapixels a page; {_lower(project, dpi, 1, MAX_PAGE_PIXELS, 'make the page smaller')}.",
                       field="dpi")
    if pages * w * h > MAX_BOOK_PIXELS:
        raise BadInput(f"{pages} pages of {size} at {dpi} dpi come to {pages * w * h / 1e6:.0f} megapixels, above the limit of "
                       f"{MAX_BOOK_PIXELS // 10**6} megapixels for one export; "
                       f"{_lower(project, dpi, pages, MAX_BOOK_PIXELS, 'split the comic into shorter projects')}.", field="dpi")


def _lower(project: Project, dpi: int, pages: int, limit: int, otherwise: str) -> str:
    """'lower the dpi to N or less, or ...' with the highest dpi that fits the limit (none below 36)."""
    w, h = page_px(project, dpi)
    fitting = math.floor(dpi * math.sqrt(limit / (pages * w * h))) + 1
    while fitting >= 36 and pages * math.prod(page_px(project, fitting)) > limit:
        fitting -= 1
    return f"lower the dpi to {fitting} or less, or {otherwise}" if fitting >= 36 else otherwise


def panel_box_px(panel: Panel, dpi: int) -> tuple[int, int]:
    box = bbox(panel.shape)
    return max(1, round(px(box.w, dpi))), max(1, round(px(box.h, dpi)))


def panel_picture(project: Project, panel: Panel, folder: Path, dpi: int | None = None) -> Image.Image | None:
    """The chosen candidate fitted to the panel's bounding box at `dpi` (the project's by default), or None."""
    chosen = panel.chosen_candidate()
    if chosen is None:
        return None
    with Image.open(asset_path(folder, chosen.image)) as image:
        return fit_image(image, *panel_box_px(panel, project.dpi if dpi is None else dpi), panel.view)


def panel_mask(panel: Panel, dpi: int) -> Image.Image:
    """The panel's polygon as an L mask over its bounding box at `dpi` (255 inside)."""
    box = bbox(panel.shape)
    origin = (round(px(box.x, dpi)), round(px(box.y, dpi)))
    mask = Image.new("L", panel_box_px(panel, dpi), 0)
    ImageDraw.Draw(mask).polygon([(px(p.x, dpi) - origin[0], px(p.y, dpi) - origin[1]) for p in panel.shape], fill=255)
    return mask


def render_page(project: Project, page: Page, folder: Path) -> Image.Image:
    dpi = project.dpi
    check_render_size(project, dpi, pages=1)
    canvas = Image.new("RGB", page_px(project, dpi), "white")
    draw = ImageDraw.Draw(canvas)
    for panel in page.panels:
        points = [(px(p.x, dpi), px(p.y, dpi)) for p in panel.shape]
        picture = panel_picture(project, panel, folder)
        if picture is None:
            draw.polygon(points, fill=EMPTY_PANEL)
        else:
            box = bbox(panel.shape)
            canvas.paste(picture, (round(px(box.x, dpi)), round(px(box.y, dpi))), panel_mask(panel, dpi))
        if page.border.style != "none" and page.border.width_mm > 0:
            width = max(1, round(px(page.border.width_mm, dpi)))
            draw.line(points + [points[0], points[1]], fill=page.border.color, width=width, joint="curve")
    for panel in page.panels:
        for balloon in ordered_balloons(project, panel):
            draw_lettering(canvas, letter(balloon), dpi)
    return canvas


def draw_lettering(canvas: Image.Image, lettered: Lettered, dpi: int) -> None:
    draw = ImageDraw.Draw(canvas)
    stroke = max(1, round(px(lettered.stroke_mm, dpi)))
    polygons = [[(px(p.x, dpi), px(p.y, dpi)) for p in shape] for shape in lettered.shapes]
    # Stroke every part twice as wide, then fill every part: the outline of the union stays, inner seams vanish.
    for poly in polygons:
        draw.line(poly + [poly[0], poly[1]], fill="black", width=2 * stroke, joint="curve")
    for poly in polygons:
        draw.polygon(poly, fill=lettered.fill)
    size_px = max(1, round(px(lettered.size_pt * PT_MM, dpi)))
    font = pil_font(lettered.bold, size_px)
    if not lettered.outlined_text:
        for line in lettered.lines:
            draw.text((px(line.x, dpi), px(line.y, dpi)), line.text, font=font, fill="black", anchor="ls")
        return
    _draw_sfx(canvas, lettered, font, stroke, dpi)


def _draw_sfx(canvas: Image.Image, lettered: Lettered, font, stroke: int, dpi: int) -> None:
    """Outlined letters drawn on a layer around the balloon and turned about its centre."""
    cx, cy = px(lettered.center.x, dpi), px(lettered.center.y, dpi)
    reach = max(font.getlength(line.text) for line in lettered.lines) + len(lettered.lines) * font.size + 4 * stroke
    left, top = round(cx - reach), round(cy - reach)
    layer = Image.new("RGBA", (2 * round(reach), 2 * round(reach)), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for line in lettered.lines:
        draw.text((px(line.x, dpi) - left, px(line.y, dpi) - top), line.text, font=font, fill=lettered.fill, anchor="ls",
                  stroke_width=stroke, stroke_fill="black")
    if lettered.rotation:
        layer = layer.rotate(lettered.rotation, resample=Image.Resampling.BICUBIC, center=(cx - left, cy - top))
    canvas.paste(layer, (left, top), layer)
