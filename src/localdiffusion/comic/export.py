"""Exports: a PDF (vector lettering; for print, images at the project's dpi, lossless; for screen, at
150 dpi as JPEG), pages as PNG, a CBZ with ComicInfo.xml, and single-panel PNGs that carry their recipes.
Every file is written atomically, and the same project always gives the same bytes (fixed dates, fixed
order). Sizes are checked before anything is drawn (`check_render_size`)."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

from fpdf import FPDF

from localdiffusion.comic.fonts import lettering_font
from PIL import Image

from localdiffusion.comic.geometry import bbox, is_rectangle
from localdiffusion.comic.layouts import ordered_panels
from localdiffusion.comic.lettering import Lettered, letter, ordered_balloons
from localdiffusion.comic.model import Panel, Point, Project
from localdiffusion.comic.render import EMPTY_PANEL, check_render_size, panel_mask, panel_picture, render_page
from localdiffusion.comic.storage import ZIP_DATE, asset_path
from localdiffusion.store.files import write_atomic

FONT = "lettering"
TRIM_MARK_MM = 5.0
Quality = Literal["print", "screen"]
QUALITIES: tuple[str, ...] = ("print", "screen")
SCREEN_DPI = 150  # screen PDFs: pictures at most this dense, as JPEG


def _rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def _created(project: Project) -> datetime:
    try:
        created = datetime.fromisoformat(project.created)
    except ValueError:
        created = datetime(2000, 1, 1)
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def _new_pdf(project: Project, bleed: float) -> FPDF:
    size = project.page_size
    pdf = FPDF(unit="mm", format=(size.width_mm + 2 * bleed, size.height_mm + 2 * bleed))
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.set_creation_date(_created(project))
    pdf.set_title(project.title)
    pdf.set_author(", ".join(project.authors))
    pdf.set_creator("Local Diffusion")
    font = lettering_font()
    if font.regular is not None:
        pdf.add_font(FONT, "", str(font.regular))
        pdf.add_font(FONT, "B", str(font.bold))
    return pdf


def _font(pdf: FPDF, bold: bool, size_pt: float) -> None:
    family = FONT if lettering_font().regular is not None else "helvetica"
    pdf.set_font(family, "B" if bold else "", size_pt)


def pdf_bytes(project: Project, folder: Path, bleed_mm: float = 0.0, trim_marks: bool = False,
              quality: Quality = "print") -> bytes:
    """The comic as a PDF. `print`: pictures at the project's dpi, lossless. `screen`: at most SCREEN_DPI,
    as JPEG, for a file that is a small fraction of the print one."""
    dpi = project.dpi if quality == "print" else min(project.dpi, SCREEN_DPI)
    check_render_size(project, dpi)
    pdf = _new_pdf(project, bleed_mm)
    if quality == "screen":
        pdf.set_image_filter("DCTDecode")
    for page in project.pages:
        pdf.add_page()
        for panel in page.panels:
            points = [(p.x + bleed_mm, p.y + bleed_mm) for p in panel.shape]
            picture = panel_picture(project, panel, folder, dpi)
            if picture is None:
                pdf.set_fill_color(*_rgb(EMPTY_PANEL))
                pdf.polygon(points, style="F")
            else:
                _clipped_image(pdf, panel, picture, dpi, bleed_mm)
            if page.border.style != "none" and page.border.width_mm > 0:
                pdf.set_draw_color(*_rgb(page.border.color))
                pdf.set_line_width(page.border.width_mm)
                pdf.polygon(points, style="D")
        for panel in page.panels:
            for balloon in ordered_balloons(project, panel):
                _draw_lettering(pdf, letter(balloon), bleed_mm)
        if trim_marks and bleed_mm > 0:
            _trim_marks(pdf, project, bleed_mm)
    return bytes(pdf.output())


def _clipped_image(pdf: FPDF, panel: Panel, picture: Image.Image, dpi: int, bleed: float) -> None:
    """The picture inside the panel's outline. fpdf2's public clipping covers rectangles (`rect_clip`) and
    ellipses; a slanted panel's picture carries the panel polygon as its alpha instead (the same mask the
    raster pages use), so nothing outside the outline shows."""
    box = bbox(panel.shape)
    x, y = box.x + bleed, box.y + bleed
    if not is_rectangle(panel.shape):
        picture = picture.copy()
        picture.putalpha(panel_mask(panel, dpi))
    with pdf.rect_clip(x, y, box.w, box.h):
        pdf.image(picture, x=x, y=y, w=box.w, h=box.h)


def _shift(p: Point, by: float) -> tuple[float, float]:
    return p.x + by, p.y + by


def _draw_lettering(pdf: FPDF, lettered: Lettered, bleed: float) -> None:
    polygons = [[_shift(p, bleed) for p in shape] for shape in lettered.shapes]
    pdf.set_draw_color(0, 0, 0)
    pdf.set_fill_color(*_rgb(lettered.fill))
    pdf.set_line_width(2 * lettered.stroke_mm)
    for poly in polygons:  # as in the raster: stroke every part, then fill every part (the union's outline)
        pdf.polygon(poly, style="D")
    for poly in polygons:
        pdf.polygon(poly, style="F")
    _font(pdf, lettered.bold, lettered.size_pt)
    if not lettered.outlined_text:
        pdf.set_text_color(0, 0, 0)
        for line in lettered.lines:
            pdf.text(line.x + bleed, line.y + bleed, line.text)
        return
    pdf.set_text_color(*_rgb(lettered.fill))
    pdf.set_line_width(lettered.stroke_mm)
    with pdf.rotation(lettered.rotation, x=lettered.center.x + bleed, y=lettered.center.y + bleed):
        pdf.text_mode = "FILL_STROKE"
        for line in lettered.lines:
            pdf.text(line.x + bleed, line.y + bleed, line.text)
        pdf.text_mode = "FILL"


def _trim_marks(pdf: FPDF, project: Project, bleed: float) -> None:
    """Short lines in the bleed, in line with the trim edges, at each corner."""
    w, h = project.page_size.width_mm, project.page_size.height_mm
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.25)
    reach = min(TRIM_MARK_MM, bleed)
    for x in (bleed, bleed + w):
        pdf.line(x, 0, x, reach)
        pdf.line(x, 2 * bleed + h - reach, x, 2 * bleed + h)
    for y in (bleed, bleed + h):
        pdf.line(0, y, reach, y)
        pdf.line(2 * bleed + w - reach, y, 2 * bleed + w, y)


def export_pdf(project: Project, folder: Path, target: Path, bleed_mm: float = 0.0, trim_marks: bool = False,
               quality: Quality = "print") -> Path:
    data = pdf_bytes(project, folder, bleed_mm, trim_marks, quality)
    return write_atomic(Path(target), lambda f: f.write(data))


def page_png_bytes(project: Project, page_index: int, folder: Path) -> bytes:
    buffer = io.BytesIO()
    # Level 1: a print-size page encodes several times faster than at PIL's default 6, for slightly larger files.
    render_page(project, project.pages[page_index], folder).save(buffer, format="PNG", dpi=(project.dpi, project.dpi),
                                                                 compress_level=1)
    return buffer.getvalue()


def pages_png(project: Project, folder: Path) -> list[bytes]:
    check_render_size(project)
    return [page_png_bytes(project, i, folder) for i in range(len(project.pages))]


def export_pages(project: Project, folder: Path, out_dir: Path, pages: list[bytes] | None = None) -> list[Path]:
    """`page-1.png`, `page-2.png`, ... in `out_dir`."""
    paths = []
    for i, data in enumerate(pages if pages is not None else pages_png(project, folder)):
        paths.append(write_atomic(Path(out_dir) / f"page-{i + 1}.png", lambda f, d=data: f.write(d)))
    return paths


def comic_info(project: Project) -> bytes:
    """ComicInfo.xml (the Anansi schema that comic readers use): title, writer, page count, manga direction."""
    root = ET.Element("ComicInfo", {"xmlns:xsd": "http://www.w3.org/2001/XMLSchema",
                                    "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    ET.SubElement(root, "Title").text = project.title
    if project.authors:
        ET.SubElement(root, "Writer").text = ", ".join(project.authors)
    ET.SubElement(root, "PageCount").text = str(len(project.pages))
    ET.SubElement(root, "Manga").text = "YesAndRightToLeft" if project.direction == "rtl" else "No"
    ET.SubElement(root, "Notes").text = "Made with Local Diffusion."
    pages = ET.SubElement(root, "Pages")
    for i in range(len(project.pages)):
        ET.SubElement(pages, "Page", {"Image": str(i), **({"Type": "FrontCover"} if i == 0 else {})})
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def cbz_bytes(project: Project, folder: Path, pages: list[bytes] | None = None) -> bytes:
    """The page PNGs (rendered now unless given) and ComicInfo.xml, as a zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for i, data in enumerate(pages if pages is not None else pages_png(project, folder)):
            # PNGs are compressed already; stored as they are, as comic readers expect.
            z.writestr(zipfile.ZipInfo(f"page-{i + 1:03d}.png", date_time=ZIP_DATE), data)
        info = zipfile.ZipInfo("ComicInfo.xml", date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, comic_info(project))
    return buffer.getvalue()


def export_cbz(project: Project, folder: Path, target: Path, pages: list[bytes] | None = None) -> Path:
    data = cbz_bytes(project, folder, pages)
    return write_atomic(Path(target), lambda f: f.write(data))


def export_panels(project: Project, folder: Path, out_dir: Path) -> list[Path]:
    """Each panel's chosen image as `page-P-panel-N.png` (reading order), with its recipe in the PNG."""
    paths = []
    for p, page in enumerate(project.pages, start=1):
        for n, panel in enumerate(ordered_panels(project, page), start=1):
            chosen = panel.chosen_candidate()
            if chosen is not None:
                data = asset_path(folder, chosen.image).read_bytes()
                paths.append(write_atomic(Path(out_dir) / f"page-{p}-panel-{n}.png", lambda f, d=data: f.write(d)))
    return paths
