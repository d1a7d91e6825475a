"""Comics end to end on the tiny SD1 model: STORY.yaml -> project -> PDF, CBZ, PNG pages, panel PNGs."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pypdf
import pytest
from PIL import Image

from cli_runner import run_cli
from localdiffusion.comic import ImageView, ordered_panels
from localdiffusion.comic.book import export_all, render_book
from localdiffusion.comic.export import comic_info
from localdiffusion.comic.geometry import bbox, box_inside, contains
from localdiffusion.comic.lettering import fit_text, letter
from localdiffusion.comic.model import MM_PER_INCH, Balloon, Box, Point
from localdiffusion.comic.render import fit_image
from localdiffusion.comic.storage import open_project
from localdiffusion.comic.story import parse_story
from localdiffusion.errors import BadInput
from localdiffusion.metadata import read_image_metadata
from localdiffusion.store.home import Home

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "story.yaml"
FAST = {"steps": 1, "base_size": 64, "sampler": "Euler"}
DPI = 40
PT_PER_MM = 72 / MM_PER_INCH


def fast(project):
    project.style = project.style.model_copy(update=FAST)
    project.dpi = DPI
    return project


def eight_panel_story(direction: str = "ltr") -> str:
    panels = "\n".join(f"""      - description: "step {i}"
        characters: [Ann]
        dialogue: [{{speaker: Ann, text: "Line {i} of eight"}}]""" for i in range(1, 9))
    return f"""title: Eight
authors: [Tester]
direction: {direction}
characters:
  - {{name: Ann, description: "a woman in a yellow coat", seed: 7}}
pages:
  - panels:
{panels}
"""


@pytest.fixture(scope="module")
def sd1_home(tmp_path_factory, sd1_folder) -> Home:
    """A home with only the tiny SD1 model, so these tests do not build the whole zoo."""
    home = Home(tmp_path_factory.mktemp("comic-home")).ensure()
    (home.model_dir("checkpoint") / sd1_folder.name).symlink_to(sd1_folder, target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def sd1_engine(sd1_home):
    from localdiffusion.engine import Engine
    from localdiffusion.models.library import ModelLibrary
    from localdiffusion.store.db import Database

    return Engine(ModelLibrary(sd1_home, Database(sd1_home.db_path)))


@pytest.fixture(scope="module")
def four_panel(tmp_path_factory, sd1_engine):
    out = tmp_path_factory.mktemp("four")
    project = fast(parse_story(EXAMPLE.read_text(), "story.yaml"))
    return project, render_book(sd1_engine, project, out)


def placed_images(page: pypdf.PageObject) -> list[tuple[float, float, float, float]]:
    """(x, y, w, h) in points of every image drawn on the page, from the matrix in force at each `Do`."""
    found = []

    def visit(op, args, cm, tm):
        if op == b"Do":
            found.append((cm[4], cm[5], cm[0], cm[3]))

    page.extract_text(visitor_operand_before=visit)
    return found


def test_four_panel_story_pdf(four_panel):
    project, book = four_panel
    reader = pypdf.PdfReader(book.pdf)
    assert len(reader.pages) == 1
    page = reader.pages[0]
    width, height = float(page.mediabox.width), float(page.mediabox.height)
    assert (width, height) == pytest.approx((210 * PT_PER_MM, 297 * PT_PER_MM), abs=0.1)
    images = placed_images(page)
    assert len(images) == 4
    for x, y, w, h in images:
        assert 0 <= x and 0 <= y and x + w <= width + 0.01 and y + h <= height + 0.01
    text = " ".join(page.extract_text().split())
    for line in ("It had rained all week.", "Hey... are you lost?", "Then you can come with me.", "Beep!", "BZZT"):
        assert line in text
    assert reader.metadata.title == "The Lost Robot"


def test_balloons_sit_inside_their_panels(four_panel):
    project, _ = four_panel
    for panel in project.pages[0].panels:
        for balloon in panel.balloons:
            assert box_inside(balloon.box, panel.shape), (panel.id, balloon.text)
            if balloon.tail is not None:
                assert contains(panel.shape, balloon.tail)


def test_outputs_of_the_render(four_panel):
    project, book = four_panel
    assert [p.name for p in book.pages] == ["page-1.png"]
    with Image.open(book.pages[0]) as page:
        assert page.size == (round(210 / MM_PER_INCH * DPI), round(297 / MM_PER_INCH * DPI))
    assert len(book.panels) == 4
    recipe = read_image_metadata(book.panels[1].read_bytes()).to_recipe()
    assert recipe.seed == 1234 and recipe.subseed_strength == pytest.approx(0.2)  # Mia's seed, with a variation
    assert "a girl with short red hair" in recipe.prompt and "one big glowing eye" in recipe.prompt
    saved = open_project(book.project)
    assert all(p.chosen_candidate() is not None for p in saved.pages[0].panels)


def test_cbz_and_comic_info(four_panel):
    _, book = four_panel
    with zipfile.ZipFile(book.cbz) as z:
        names = z.namelist()
        assert names == ["page-001.png", "ComicInfo.xml"]
        info = ET.fromstring(z.read("ComicInfo.xml"))
        Image.open(io.BytesIO(z.read("page-001.png"))).verify()
    assert info.tag == "ComicInfo"
    assert info.findtext("Title") == "The Lost Robot" and info.findtext("Writer") == "Workshop group 1"
    assert info.findtext("PageCount") == "1" and info.findtext("Manga") == "No"
    assert [p.get("Image") for p in info.find("Pages")] == ["0"]


def test_save_reopen_reexport_is_identical(four_panel, tmp_path):
    _, book = four_panel
    project = open_project(book.project)
    again = export_all(project, book.project, tmp_path)
    assert again.pdf.read_bytes() == book.pdf.read_bytes()
    assert again.cbz.read_bytes() == book.cbz.read_bytes()
    assert again.pages[0].read_bytes() == book.pages[0].read_bytes()


def test_eight_panel_story_and_rtl(tmp_path, sd1_engine):
    ltr = fast(parse_story(eight_panel_story("ltr")))
    rtl = fast(parse_story(eight_panel_story("rtl")))
    book = render_book(sd1_engine, rtl, tmp_path / "rtl")
    reader = pypdf.PdfReader(book.pdf)
    assert len(reader.pages) == 1 and len(placed_images(reader.pages[0])) == 8
    text = " ".join(reader.pages[0].extract_text().split())
    assert all(f"Line {i} of eight" in text for i in range(1, 9))
    # Panel i of the story sits mirrored: first on the right in rtl, on the left in ltr.
    for a, b in zip(ordered_panels(ltr, ltr.pages[0]), ordered_panels(rtl, rtl.pages[0])):
        assert a.action == b.action
        assert bbox(a.shape).x + bbox(a.shape).right == pytest.approx(210 - (bbox(b.shape).x + bbox(b.shape).right) + 210)
    first_ltr, first_rtl = ordered_panels(ltr, ltr.pages[0])[0], ordered_panels(rtl, rtl.pages[0])[0]
    assert bbox(first_ltr.shape).x < 105 < bbox(first_rtl.shape).x
    with zipfile.ZipFile(book.cbz) as z:
        assert ET.fromstring(z.read("ComicInfo.xml")).findtext("Manga") == "YesAndRightToLeft"


def test_story_errors_name_the_line():
    with pytest.raises(BadInput, match=r"^story.yaml line 4: this is not valid YAML \(expected .,. or .\]."):
        parse_story("title: x\npages:\n  - panels: [a\n  b: c\n")
    story = EXAMPLE.read_text().replace("characters: [Bolt]", "characters: [Max]")
    line = next(i for i, text in enumerate(story.splitlines(), start=1) if "the robot looks up" in text)
    with pytest.raises(BadInput, match=rf"^story.yaml line {line}: the panel names the character 'Max', who is not in the cast; "
                                       r"the cast is 'Mia' or 'Bolt'\."):
        parse_story(story)
    nine = eight_panel_story().replace("pages:\n  - panels:\n", "pages:\n  - panels:\n      - description: extra\n")
    with pytest.raises(BadInput, match=r"^story.yaml line 7: page 1 has 9 panels; a page holds at most 8\."):
        parse_story(nine)
    with pytest.raises(BadInput, match="layout 'grid-2x2' has 4"):
        parse_story(eight_panel_story().replace("  - panels:", "  - layout: grid-2x2\n    panels:"))


def test_lettering_fits_and_fit_image():
    size, lines = fit_text("a long line of dialogue that has to wrap to fit", 30, 20)
    assert len(lines) > 1 and 5 <= size <= 12
    for kind in ("speech-oval", "speech-rect", "thought", "caption", "sfx"):
        lettered = letter(Balloon(kind=kind, text="Hi there", box=Box(x=10, y=10, w=40, h=20), tail=Point(x=30, y=60)))
        assert lettered.lines and lettered.lines[0].text
    image = Image.new("RGB", (100, 50), "red")
    covered = fit_image(image, 40, 40, ImageView())
    assert covered.size == (40, 40) and covered.getpixel((0, 0)) == (255, 0, 0)
    contained = fit_image(image, 40, 40, ImageView(fit="contain"))
    assert contained.getpixel((20, 2)) == (255, 255, 255) and contained.getpixel((20, 20)) == (255, 0, 0)


def test_cli_render(tmp_path, capsys, sd1_home):
    story = tmp_path / "story.yaml"
    story.write_text(EXAMPLE.read_text().replace("steps: 20", "steps: 1"))
    code, out, err = run_cli(capsys, "comic", "render", story, "-o", tmp_path / "out", "--home", sd1_home.root,
                             "--base-size", 64, "--dpi", DPI, "--sampler", "Euler")
    assert code == 0, err
    for name in ("comic.pdf", "comic.cbz", "page-1.png", "project/project.json"):
        assert (tmp_path / "out" / name).is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: [unclosed\n")
    code, _, err = run_cli(capsys, "comic", "render", bad, "-o", tmp_path / "bad", "--home", sd1_home.root)
    assert code == 2 and "bad.yaml line" in err
    code, out, _ = run_cli(capsys, "comic", "export", tmp_path / "out" / "project", "-o", tmp_path / "again",
                           "--archive", tmp_path / "x.ldcomic")
    assert code == 0 and (tmp_path / "again" / "comic.pdf").read_bytes() == (tmp_path / "out" / "comic.pdf").read_bytes()
    assert comic_info(open_project(tmp_path / "out" / "project")).startswith(b"<?xml")


def test_shared_attention_keeps_the_first_panel_and_steers_the_others(tmp_path, sd1_engine):
    import numpy as np

    from localdiffusion.comic.book import shared_attention_bytes

    story = fast(parse_story(EXAMPLE.read_text().replace("steps: 20", "steps: 20\n  shared_attention: 0.5"), "story.yaml"))
    assert story.style.shared_attention == 0.5
    plain = story.model_copy(deep=True)
    plain.style = plain.style.model_copy(update={"shared_attention": 0.0})
    kept = shared_attention_bytes(sd1_engine, story, tmp_path / "shared" / "project")
    books = {"shared": render_book(sd1_engine, story, tmp_path / "shared"), "plain": render_book(sd1_engine, plain, tmp_path / "plain")}

    def images(project, folder) -> list[np.ndarray]:
        return [np.asarray(Image.open(folder / panel.chosen_candidate().image), dtype=np.int16)
                for page in project.pages for panel in ordered_panels(project, page)]

    shared, alone = images(story, books["shared"].project), images(plain, books["plain"].project)
    assert (shared[0] == alone[0]).all(), "the first panel is the look; keeping its tokens does not change it"
    assert all(np.abs(s - a).mean() > 0 for s, a in zip(shared[1:], alone[1:])), "the others attend to it"
    assert kept > 0 and shared_attention_bytes(sd1_engine, plain, tmp_path / "plain" / "project") == 0


def test_cli_render_says_what_shared_attention_keeps(tmp_path, capsys, sd1_home):
    story = tmp_path / "story.yaml"
    story.write_text(EXAMPLE.read_text().replace("steps: 20", "steps: 1"))
    code, _, err = run_cli(capsys, "comic", "render", story, "-o", tmp_path / "out", "--home", sd1_home.root,
                           "--base-size", 64, "--dpi", DPI, "--sampler", "Euler", "--shared-attention", 0.5)
    assert code == 0, err
    said = " ".join(err.split())
    assert re.search(r"Shared attention keeps about [\d.]+ (B|KiB|MiB|GiB) of the first panel's tokens", said), said
    assert "Shared attention: when the empty panels are generated together" in said
