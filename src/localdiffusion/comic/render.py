"""Raster pages with PIL: panel images fitted with pan and zoom, clipped to the panel shapes, borders and
lettering, at the project's dpi. The PDF writer uses the same fitting and lettering geometry."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from localdiffusion.comic.fonts import pil_font
from localdiffusion.comic.geometry import bbox
from localdiffusion.comic.lettering import PT_MM, Lettered, letter, ordered_balloons
from localdiffusion.comic.model import MM_PER_INCH, ImageView, Page, Panel, Project
from localdiffusion.comic.storage import asset_path

EMPTY_PANEL = "#E6E6E6"


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


def panel_box_px(panel: Panel, dpi: int) -> tuple[int, int]:
    box = bbox(panel.shape)
    return max(1, round(px(box.w, dpi))), max(1, round(px(box.h, dpi)))


def panel_picture(project: Project, panel: Panel, folder: Path) -> Image.Image | None:
    """The chosen candidate fitted to the panel's bounding box at the project's dpi, or None."""
    chosen = panel.chosen_candidate()
    if chosen is None:
        return None
    with Image.open(asset_path(folder, chosen.image)) as image:
        return fit_image(image, *panel_box_px(panel, project.dpi), panel.view)


def render_page(project: Project, page: Page, folder: Path) -> Image.Image:
    dpi = project.dpi
    size = (round(px(project.page_size.width_mm, dpi)), round(px(project.page_size.height_mm, dpi)))
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    for panel in page.panels:
        points = [(px(p.x, dpi), px(p.y, dpi)) for p in panel.shape]
        picture = panel_picture(project, panel, folder)
        if picture is None:
            draw.polygon(points, fill=EMPTY_PANEL)
        else:
            box = bbox(panel.shape)
            origin = (round(px(box.x, dpi)), round(px(box.y, dpi)))
            mask = Image.new("L", picture.size, 0)
            ImageDraw.Draw(mask).polygon([(x - origin[0], y - origin[1]) for x, y in points], fill=255)
            canvas.paste(picture, origin, mask)
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
