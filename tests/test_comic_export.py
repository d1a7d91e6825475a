"""PDF and raster exports without models: clipping through fpdf2's public API, print and screen quality,
and sizes refused before anything is allocated."""

from __future__ import annotations

import io

import pypdf
import pytest
from PIL import Image

from localdiffusion.comic import Candidate, Project, new_page, save_project
from localdiffusion.comic.export import page_png_bytes, pages_png, pdf_bytes
from localdiffusion.comic.geometry import is_rectangle, pt, rect
from localdiffusion.comic.model import PageSize
from localdiffusion.errors import BadInput
from localdiffusion.recipe import Recipe


def picture_project(tmp_path, dpi: int = 100) -> tuple[Project, object]:
    """One page, two panels with pictures: a rectangle and a slanted quad."""
    project = Project(title="Export", dpi=dpi, created="2024-01-01T00:00:00+00:00")
    page = new_page(project, "grid-2x2")
    project.pages.append(page)
    folder = tmp_path / "project"
    save_project(project, folder)
    noise = Image.effect_noise((256, 256), 60).convert("RGB")  # detail, so that JPEG has work to do
    noise.save(folder / "assets" / "a.png")
    first, second = page.panels[0], page.panels[1]
    tl, tr, br, bl = second.shape
    second.shape = [tl, pt(tr.x - 20, tr.y), br, bl]  # slant the right edge
    for panel in (first, second):
        panel.candidates = [Candidate(id="c1", image="assets/a.png", recipe=Recipe())]
        panel.chosen = "c1"
    return project, folder


def images_of(data: bytes) -> list:
    page = pypdf.PdfReader(io.BytesIO(data)).pages[0]
    return [x.get_object() for x in page["/Resources"]["/XObject"].values()]


def test_slanted_panels_clip_their_picture_to_the_outline(tmp_path):
    project, folder = picture_project(tmp_path)
    slanted = project.pages[0].panels[1]
    assert is_rectangle(project.pages[0].panels[0].shape) and not is_rectangle(slanted.shape)
    data = pdf_bytes(project, folder)
    assert data == pdf_bytes(project, folder), "the same project gives the same bytes"
    images = images_of(data)
    masked = [i for i in images if "/SMask" in i]
    assert len(images) == 2 and len(masked) == 1
    mask = masked[0]["/SMask"].get_object()
    alpha = Image.frombytes("L", (mask["/Width"], mask["/Height"]), mask.get_data())
    assert alpha.getpixel((alpha.width - 1, 0)) == 0, "the corner cut off by the slant is outside the panel"
    assert alpha.getpixel((alpha.width // 2, alpha.height // 2)) == 255
    content = pypdf.PdfReader(io.BytesIO(data)).pages[0].get_contents().get_data()
    assert content.count(b" re W n") == 2  # fpdf2's public rect_clip around each picture


def test_screen_pdf_is_small_with_pictures_at_150_dpi_as_jpeg(tmp_path):
    project, folder = picture_project(tmp_path, dpi=300)
    printed, screen = pdf_bytes(project, folder), pdf_bytes(project, folder, quality="screen")
    assert len(screen) * 4 < len(printed)
    assert screen == pdf_bytes(project, folder, quality="screen")
    box_mm = project.pages[0].panels[0].shape[1].x - project.pages[0].panels[0].shape[0].x
    for image in images_of(screen):
        assert image["/Filter"] == "/DCTDecode"
    widths = sorted(int(i["/Width"]) for i in images_of(screen))
    assert widths[0] == round(box_mm / 25.4 * 150)
    assert sorted(int(i["/Width"]) for i in images_of(printed))[0] == round(box_mm / 25.4 * 300)


@pytest.fixture()
def no_big_images(monkeypatch):
    """Fail at once if anything allocates a picture of more than 200 megapixels."""
    new = Image.new

    def guarded(mode, size, *args, **kwargs):
        assert size[0] * size[1] <= 200_000_000, f"allocated {size}"
        return new(mode, size, *args, **kwargs)

    monkeypatch.setattr(Image, "new", guarded)


def test_huge_pages_are_refused_before_anything_is_allocated(tmp_path, no_big_images):
    project = Project(page_size=PageSize(name="custom", width_mm=1000, height_mm=1000), dpi=600)
    project.pages.append(new_page(project, "grid-2x2"))
    sentence = (r"^A 1000×1000 mm page at 600 dpi is 23622×23622 pixels \(558 megapixels\), above the limit of 100 "
                r"megapixels a page; lower the dpi to 254 or less, or make the page smaller\.$")
    with pytest.raises(BadInput, match=sentence):
        page_png_bytes(project, 0, tmp_path)
    with pytest.raises(BadInput, match=sentence):
        pdf_bytes(project, tmp_path)
    with pytest.raises(BadInput, match=sentence):
        pages_png(project, tmp_path)


def test_a_book_too_big_for_one_export_is_refused(tmp_path, no_big_images):
    project = Project(dpi=600)
    project.pages = [new_page(project, "grid-2x2") for _ in range(30)]
    with pytest.raises(BadInput, match=r"^30 pages of 210×297 mm at 600 dpi come to 1044 megapixels, above the limit of 1000 "
                                       r"megapixels for one export; lower the dpi to 587 or less, or split the comic"):
        pages_png(project, tmp_path)
    assert pdf_bytes(project, tmp_path, quality="screen").startswith(b"%PDF")  # 150 dpi fits


def test_is_rectangle():
    assert is_rectangle(rect(0, 0, 10, 5)) and is_rectangle(list(reversed(rect(0, 0, 10, 5))))
    assert not is_rectangle([pt(0, 0), pt(10, 0), pt(8, 5), pt(0, 5)])
    assert not is_rectangle([pt(0, 0), pt(10, 0), pt(10, 5)])
    assert not is_rectangle([pt(0, 0), pt(10, 0), pt(10, 0), pt(0, 5)])
