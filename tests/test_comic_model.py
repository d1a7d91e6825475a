"""Comic projects without models: page sizes, layout templates and editing, prompts, storage."""

from __future__ import annotations

import json
import zipfile

import pytest

from localdiffusion.comic import (
    TEMPLATES, Character, Panel, Project, Style, compose_prompt, consistency_notes, export_archive, import_archive,
    merge_panels, move_gutter, new_page, open_project, ordered_panels, page_size, panel_recipe, save_project,
    set_gutter, slant_border, split_panel,
)
from localdiffusion.comic.geometry import bbox, rect
from localdiffusion.comic.model import Page
from localdiffusion.errors import BadInput


def cast_project(**changes) -> Project:
    return Project(title="Rain", characters=[
        Character(name="Mia", description="a girl with short red hair, green raincoat", seed=1234),
        Character(name="Bolt", description="a small round blue robot with one big eye"),
    ], **changes)


def test_page_sizes():
    assert page_size("A4").width_mm == 210 and page_size("Letter").height_mm == pytest.approx(279.4)
    assert page_size("custom", 6, 9, unit="in").width_mm == pytest.approx(152.4)
    with pytest.raises(BadInput, match="'B5' is unknown"):
        page_size("B5")


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_templates_fit_the_live_area_without_overlap(name):
    project = Project()
    page = new_page(project, name)
    assert len(page.panels) == TEMPLATES[name].panels <= 8
    m = page.margin_mm
    for panel in page.panels:
        box = bbox(panel.shape)
        assert box.x >= m - 1e-6 and box.y >= m - 1e-6
        assert box.right <= project.page_size.width_mm - m + 1e-6 and box.bottom <= project.page_size.height_mm - m + 1e-6
    if not TEMPLATES[name].inset:  # gutters keep neighbours apart: no two boxes of a rect grid overlap
        rects = [bbox(p.shape) for p in page.panels if all(abs(a.x - b.x) < 1e-6 or abs(a.y - b.y) < 1e-6
                                                           for a, b in zip(p.shape, p.shape[1:]))]
        for i, a in enumerate(rects):
            for b in rects[i + 1:]:
                assert a.right <= b.x + 1e-6 or b.right <= a.x + 1e-6 or a.bottom <= b.y + 1e-6 or b.bottom <= a.y + 1e-6


def test_templates_cover_one_to_eight_panels():
    assert {t.panels for t in TEMPLATES.values()} == set(range(1, 9))


def test_rtl_reading_order_is_mirrored():
    ltr = ordered_panels(Project(), page := new_page(Project(), "grid-2x2"))
    rtl_project = Project(direction="rtl")
    rtl = ordered_panels(rtl_project, new_page(rtl_project, "grid-2x2"))
    assert bbox(ltr[0].shape).x < bbox(ltr[1].shape).x
    assert bbox(rtl[0].shape).x > bbox(rtl[1].shape).x
    assert [round(bbox(p.shape).y) for p in rtl] == [round(bbox(p.shape).y) for p in ltr]
    assert page.panels == ltr  # templates store panels in reading order


def test_split_merge_and_the_eight_panel_limit():
    project = Project()
    page = new_page(project, "grid-2x2")
    first = page.panels[0]
    before = first.shape
    new = split_panel(page, first.id, "horizontal")
    assert len(page.panels) == 5
    assert bbox(new.shape).y - bbox(first.shape).bottom == pytest.approx(page.gutter_mm)
    merge_panels(page, first.id, new.id)
    assert [(p.x, p.y) for p in first.shape] == [(p.x, p.y) for p in before]
    for _ in range(4):
        split_panel(page, page.panels[-1].id, "vertical", 0.5) if bbox(page.panels[-1].shape).w > 40 else \
            split_panel(page, page.panels[-1].id, "horizontal")
    assert len(page.panels) == 8
    with pytest.raises(BadInput, match="at most 8"):
        split_panel(page, page.panels[0].id, "vertical")
    with pytest.raises(BadInput, match="do not share a whole edge"):
        merge_panels(page, page.panels[0].id, page.panels[-1].id)


def test_page_with_nine_panels_is_refused():
    with pytest.raises(BadInput, match="9 panels; a page holds at most 8"):
        Page(panels=[Panel(shape=rect(0, 0, 10, 10)) for _ in range(9)])


def test_gutter_drag_slant_and_width():
    project = Project()
    page = new_page(project, "grid-2x2")
    tl, tr, bl, br = page.panels
    move_gutter(page, tl.id, "right", 10)
    assert tl.shape[1].x == tr.shape[0].x - page.gutter_mm
    assert bl.shape[1].x == pytest.approx(103.0)  # the other row keeps its gutter
    slant_border(page, tl.id, "right", 6)
    assert tl.shape[1].x - tl.shape[2].x == pytest.approx(6)
    assert tr.shape[0].x - tl.shape[1].x == pytest.approx(page.gutter_mm)
    assert tr.shape[3].x - tl.shape[2].x == pytest.approx(page.gutter_mm)
    set_gutter(page, 8)
    assert bbox(bl.shape).y - bbox(tl.shape).bottom == pytest.approx(8)
    assert bbox(tl.shape).x == page.margin_mm  # margin edges stay
    with pytest.raises(BadInput, match="smaller than"):
        move_gutter(page, tl.id, "right", -150)


def test_compose_prompt_has_each_present_characters_description():
    project = cast_project(style=Style(prefix="comic art", suffix="ink"))
    panel = Panel(shape=rect(0, 0, 100, 50), characters=["Mia", "Bolt"], action="Mia waves", setting="a rainy street",
                  shot="wide")
    prompt = compose_prompt(project, panel)
    assert prompt == ("comic art, wide shot, full body, a girl with short red hair, green raincoat, "
                      "a small round blue robot with one big eye, Mia waves, a rainy street, ink")
    panel.characters.append("Max")
    with pytest.raises(BadInput, match="'Max', who is not in the cast; the cast is 'Mia' or 'Bolt'"):
        compose_prompt(project, panel)


def test_panel_recipe_size_seed_and_override():
    project = cast_project()
    wide = Panel(shape=rect(0, 0, 180, 60), characters=["Mia"])
    recipe = panel_recipe(project, wide)
    assert recipe.width % 8 == 0 and recipe.height % 8 == 0 and recipe.width > recipe.height
    assert abs(recipe.width * recipe.height - 512 * 512) / (512 * 512) < 0.1
    assert recipe.seed == 1234 and recipe.subseed_strength == pytest.approx(0.2)
    other = panel_recipe(project, wide, candidate=1)
    assert other.seed == 1234 and other.subseed == (recipe.subseed + 1) % 2**32
    bolt = panel_recipe(project, Panel(shape=rect(0, 0, 50, 50), characters=["Bolt"], seed=7))
    assert (bolt.seed, bolt.subseed_strength) == (7, 0.0)
    wide.prompt_override = "my own words"
    assert panel_recipe(project, wide).prompt == "my own words"


def test_consistency_notes_explain_a_missing_ip_adapter(tmp_path):
    project = cast_project()
    project.characters[1].reference_image = "assets/bolt.png"
    notes = consistency_notes(project, tmp_path)
    assert any("seed" in n and "Mia" in n for n in notes)
    assert any("no IP-Adapter weights" in n and "Bolt" in n for n in notes)


def test_save_reopen_and_archive_round_trip(tmp_path):
    project = cast_project()
    project.pages.append(new_page(project, "large-plus-three"))
    folder = tmp_path / "p"
    save_project(project, folder)
    (folder / "assets" / "x.png").write_bytes(b"png")
    assert open_project(folder) == project
    archive = export_archive(folder, tmp_path / "rain.ldcomic")
    assert archive.read_bytes() == export_archive(folder, tmp_path / "again.zip").read_bytes()
    assert import_archive(archive, tmp_path / "copy") == project
    assert (tmp_path / "copy" / "assets" / "x.png").read_bytes() == b"png"


def test_import_refuses_paths_escaping_the_folder(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("project.json", json.dumps(Project().model_dump(mode="json")))
        z.writestr("assets/../../escape.txt", "x")
    with pytest.raises(BadInput, match="outside project.json and assets/"):
        import_archive(evil, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_recipes_refuse_non_finite_numbers():
    """Recipes are persisted in jobs and candidates: NaN would be written as null and never read back."""
    from pydantic import ValidationError

    from localdiffusion.recipe import ControlUnit, Recipe

    for value in (float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="finite number"):
            ControlUnit(threshold_a=value)
        with pytest.raises(ValidationError, match="finite number"):
            Recipe.model_validate_json('{"controls": [{"threshold_b": %s}]}' % ("NaN" if value != value else "Infinity"))
        with pytest.raises(ValidationError, match="finite number"):
            Project.model_validate({"pages": [{"gutter_mm": value}]})
        with pytest.raises(ValidationError, match="finite number"):
            Style(cfg=value)


def test_assets_are_checked_where_panels_are_rendered(tmp_path):
    from localdiffusion.comic.prompts import panel_references

    project = cast_project()
    project.pages.append(new_page(project, "grid-2x2"))
    panel = project.pages[0].panels[0]
    panel.characters = ["Mia"]
    project.characters[0].reference_image = "assets/mia.png"
    folder = tmp_path / "project"
    save_project(project, folder)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not for the comic")
    (folder / "assets" / "mia.png").symlink_to(outside)
    with pytest.raises(BadInput, match="leads outside the project's assets/ folder"):
        panel_references(project, panel, folder)
    assert [r.image for r in panel_references(project, panel)] == ["assets/mia.png"]
    with pytest.raises(BadInput, match="'/etc/passwd' is not a picture in the project's assets/ folder"):
        project.characters[0].reference_image = "/etc/passwd"
