"""The comic page editor: its layout and asset routes over HTTP, then the browser flow of issue 6
(a 4-panel page from a template, a candidate per panel, a balloon, the PDF export read back with pypdf).
Chromium via Playwright, as tests/test_web.py."""

from __future__ import annotations

import io
import re

import httpx
import pypdf
import pytest
from PIL import Image

from test_web import TIMEOUT_MS, browser, expect, page  # noqa: F401
from web_server import running_studio

FAST_STYLE = {"steps": 1, "base_size": 64, "sampler": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-comic-home")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    with running_studio(home) as running:
        yield running


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, headers={"X-Client-Id": "tab-test"}, timeout=30) as client:
        yield client


def new_comic(http, **body) -> dict:
    answer = http.post("/api/comics", json={"title": "Layout test", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def layout(http, project: dict, **edit) -> httpx.Response:
    return http.post(f"/api/comics/{project['id']}/layout", json={"page": project["pages"][0]["id"], **edit})


def panels(project: dict, page: int = 0) -> list[dict]:
    return project["pages"][page]["panels"]


# --- the layout and asset routes -----------------------------------------------------------


def test_layout_edits_go_through_the_comic_layer(http):
    project = new_comic(http, template="grid-2x2")
    first = panels(project)[0]

    split = layout(http, project, op="split", panel=first["id"], direction="vertical").json()
    assert len(panels(split)) == 5
    new = next(p for p in panels(split) if p["id"] not in {q["id"] for q in panels(project)})
    merged = layout(http, split, op="merge", panel=first["id"], other=new["id"]).json()
    assert len(panels(merged)) == 4
    assert next(p for p in panels(merged) if p["id"] == first["id"])["shape"] == first["shape"]

    right_before = first["shape"][1]["x"]
    moved = layout(http, merged, op="gutter", panel=first["id"], side="right", delta_mm=10).json()
    assert next(p for p in panels(moved) if p["id"] == first["id"])["shape"][1]["x"] == pytest.approx(right_before + 10)

    slanted = layout(http, moved, op="slant", panel=first["id"], side="bottom", amount_mm=8).json()
    bottom = next(p for p in panels(slanted) if p["id"] == first["id"])["shape"]
    assert bottom[2]["y"] != pytest.approx(bottom[3]["y"])

    wider = layout(http, slanted, op="gutter-width", width_mm=8).json()
    assert wider["pages"][0]["gutter_mm"] == 8

    grown = layout(http, wider, op="add-page", template="three-tiers").json()
    assert [len(p["panels"]) for p in grown["pages"]] == [4, 3]
    assert grown["pages"][1]["template"] == "three-tiers"
    again = http.get(f"/api/comics/{project['id']}").json()
    assert again == grown  # saved


def test_layout_errors_are_one_sentence(http):
    project = new_comic(http, template="grid-2x3")
    first = panels(project)[0]
    fewer = layout(http, project, op="template", template="grid-2x2")
    assert fewer.status_code == 400
    assert "has 4 panels but the page has 6" in fewer.json()["detail"]
    missing = layout(http, project, op="merge", panel=first["id"])
    assert missing.status_code == 400
    assert missing.json() == {"detail": "The layout change 'merge' needs 'other': the id of the neighbour to merge with.",
                              "field": "other"}
    far = layout(http, project, op="gutter", panel=first["id"], side="right", delta_mm=200)
    assert far.status_code == 400 and "smaller than 12 mm" in far.json()["detail"]
    unknown = http.post(f"/api/comics/{project['id']}/layout", json={"op": "split", "page": "nope", "panel": first["id"]})
    assert unknown.status_code == 400 and "There is no page 'nope'" in unknown.json()["detail"]


def test_reference_upload_becomes_a_project_asset(http):
    project = new_comic(http)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, format="PNG")
    answer = http.post(f"/api/comics/{project['id']}/assets", files={"file": ("mia.png", buffer.getvalue(), "image/png")})
    assert answer.status_code == 201, answer.text
    ref = answer.json()["ref"]
    assert ref.startswith("assets/upload-") and answer.json()["width"] == 40
    served = http.get(f"/api/comics/{project['id']}/assets/{ref.removeprefix('assets/')}")
    assert served.status_code == 200 and Image.open(io.BytesIO(served.content)).size == (40, 30)
    bad = http.post(f"/api/comics/{project['id']}/assets", files={"file": ("x.png", b"not an image", "image/png")})
    assert bad.status_code == 400


# --- the browser ---------------------------------------------------------------------------


def set_field(page, selector: str, value: str) -> None:
    page.fill(selector, value)
    page.locator(selector).dispatch_event("change")


def create_comic(page, server, title: str) -> None:
    page.goto(server.url + "/#/comic")
    page.fill("#comic-new-title", title)
    page.select_option("#comic-new-template", "grid-2x2")
    page.get_by_role("button", name="Create comic").click()
    expect(page.locator(".comic-editor")).to_be_visible()
    expect(page.locator(".comic-svg .comic-panel")).to_have_count(4)


def use_fast_style(page) -> None:
    page.locator(".comic-section summary", has_text="Style").click()
    set_field(page, "#comic-style-steps", str(FAST_STYLE["steps"]))
    set_field(page, "#comic-style-size", str(FAST_STYLE["base_size"]))
    page.select_option("#comic-style-sampler", FAST_STYLE["sampler"])


def saved_comic(server, title: str) -> dict:
    comics = httpx.get(f"{server.url}/api/comics").json()
    return httpx.get(f"{server.url}/api/comics/{next(c['id'] for c in comics if c['title'] == title)}").json()


def wait_saved(page) -> None:
    expect(page.locator(".save-state")).to_have_text("Saved.", timeout=TIMEOUT_MS)


def test_four_panel_page_generated_lettered_and_exported(page, server, tmp_path):
    create_comic(page, server, "The lost robot")
    use_fast_style(page)
    page.get_by_role("button", name="Add a character").click()
    page.locator("fieldset.character textarea").fill("a small round robot, blue paint")

    panel_ids = page.locator(".comic-svg .comic-panel").evaluate_all("els => els.map(e => e.dataset.panel)")
    for i, panel_id in enumerate(panel_ids):
        page.locator(f'.comic-panel[data-panel="{panel_id}"] .panel-hit').click()
        expect(page.locator("#comic-panel-title")).to_have_text(f"Panel {i + 1}")
        if i == 0:
            page.locator(".comic-sidebar .chip", has_text="Character 1").locator("input").check()
            page.fill("#comic-action", "the robot waves")
            expect(page.locator("#comic-prompt")).to_have_value("comic book illustration, clean ink lines, flat colours, "
                                                                  "medium shot, a small round robot, blue paint, the robot waves")
        page.fill("#comic-candidates", "1")
        page.locator("#comic-generate").click()
        expect(page.locator(".comic-jobs .job, .comic-candidates .candidate")).to_have_count(1)
    # The candidates' jobs run in the queue; each image lands in its panel when its job is done.
    for panel_id in panel_ids:
        expect(page.locator(f'.comic-panel[data-panel="{panel_id}"] image')).to_have_count(1, timeout=TIMEOUT_MS * 3)
    expect(page.locator(".comic-candidates .candidate.chosen img")).to_be_visible()

    page.locator(f'.comic-panel[data-panel="{panel_ids[0]}"] .panel-hit').click()
    page.get_by_role("button", name="Speech (oval)").click()
    page.fill("#comic-balloon-text", "Hello there, little robot!")
    expect(page.locator(".comic-svg .balloon text")).to_contain_text("little")
    wait_saved(page)

    page.locator("[data-export=pdf]").click()
    # A 300-dpi print PDF on a busy machine; its size shows before it is saved.
    expect(page.locator("#comic-export-size")).to_have_text(re.compile(r"^the-lost-robot\.pdf: [\d.]+ (KB|MB)$"),
                                                            timeout=TIMEOUT_MS * 3)
    with page.expect_download() as download:
        page.locator("#comic-export-save").click()
    expect(page.locator("dialog.export-ready")).to_have_count(0)
    path = tmp_path / "comic.pdf"
    download.value.save_as(path)
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) == 1
    text = " ".join(reader.pages[0].extract_text().split())
    assert "Hello there, little robot!" in text

    # Zoom into panel 1's image with the wheel; drag its candidate onto panel 4.
    first = page.locator(f'.comic-panel[data-panel="{panel_ids[0]}"] .panel-hit')
    box = first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.8)
    page.mouse.wheel(0, -300)
    expect(page.locator("#comic-zoom")).not_to_have_value("1")
    source = page.locator(".comic-candidates .candidate img").first
    href = page.locator(f'.comic-panel[data-panel="{panel_ids[0]}"] image').get_attribute("href")
    source.drag_to(page.locator(f'.comic-panel[data-panel="{panel_ids[3]}"] .panel-hit'))
    expect(page.locator(f'.comic-panel[data-panel="{panel_ids[3]}"] image')).to_have_attribute("href", href)
    wait_saved(page)

    # The server's render of the page, as the exports draw it (A4 at 300 dpi).
    page.locator("#comic-preview").click()
    printed = page.locator("dialog.comic-preview img")
    expect(printed).to_have_js_property("complete", True, timeout=TIMEOUT_MS * 3)  # a 300-dpi render on a busy machine
    assert printed.evaluate("img => img.naturalWidth") == 2480
    page.keyboard.press("Escape")

    saved = saved_comic(server, "The lost robot")
    panels_saved = saved["pages"][0]["panels"]
    assert all(p["chosen"] for p in panels_saved), "every panel shows a picked candidate"
    assert panels_saved[0]["balloons"][0]["text"] == "Hello there, little robot!"
    assert panels_saved[0]["view"]["zoom"] > 1
    fourth = next(p for p in panels_saved if p["id"] == panel_ids[3])
    assert next(c for c in fourth["candidates"] if c["id"] == fourth["chosen"])["image"] == panels_saved[0]["candidates"][0]["image"]

    # "Why this image?" opens the candidate in the viewer; "Inpaint…" takes it to the Generate page.
    page.locator(f'.comic-panel[data-panel="{panel_ids[0]}"] .panel-hit').click()
    page.get_by_role("button", name="Why this image?").first.click()
    expect(page.locator("dialog.viewer:not(.comic-preview)")).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Inpaint…").first.click()
    expect(page).to_have_url(re.compile(r"#/generate$"))
    expect(page.locator("#mode-tab-inpaint")).to_have_attribute("aria-selected", "true")


def test_editing_the_layout_and_lettering_by_hand(page, server):
    create_comic(page, server, "Hand edits")
    svg = page.locator(".comic-svg")
    first = page.locator(".comic-svg .comic-panel").first
    first_id = first.get_attribute("data-panel")
    first.locator(".panel-hit").click()
    svg.focus()  # the arrow keys walk the panels in reading order
    page.keyboard.press("ArrowRight")
    expect(page.locator("#comic-panel-title")).to_have_text("Panel 2")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#comic-panel-title")).to_have_text("Panel 1")

    # Dragging the right-hand gutter handle moves the gutter on the server's geometry.
    handle = page.locator(".gutter-handle.side-right")
    box = handle.bounding_box()
    scale = svg.bounding_box()["width"] / 210  # px per mm on an A4 page
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 15 * scale, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    expect(page.locator(".save-state")).to_have_text("Saved.")
    page.wait_for_function(
        "([id, x]) => Number(document.querySelector(`[data-panel='${id}'] .panel-hit`).points[1].x) > x",
        arg=[first_id, 10 + 93 + 10])

    # Shift+drag on the bottom handle slants that border instead.
    handle = page.locator(".gutter-handle.side-bottom").bounding_box()
    page.keyboard.down("Shift")
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2 + 8 * scale, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_function(
        "id => { const p = document.querySelector(`[data-panel='${id}'] .panel-hit`).points;"
        " return Math.abs(p[3].y - p[2].y) > 4; }", arg=first_id)

    # Split, then merge back.
    page.locator("#comic-split-h").click()
    expect(page.locator(".comic-svg .comic-panel")).to_have_count(5)
    page.locator(f'.comic-panel[data-panel="{first_id}"] .panel-hit').click()
    page.locator("[data-merge=bottom]").click()
    expect(page.locator(".comic-svg .comic-panel")).to_have_count(4)

    # A character's reference picture is kept in the project's assets.
    page.get_by_role("button", name="Add a character").click()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buffer, format="PNG")
    page.get_by_label("Reference image of Character 1").set_input_files(
        {"name": "mia.png", "mimeType": "image/png", "buffer": buffer.getvalue()})
    expect(page.locator("fieldset.character img")).to_have_js_property("naturalWidth", 32)

    # A pose drawn in the pose editor becomes the panel's OpenPose unit.
    page.get_by_role("button", name="Pose…").click()
    dialog = page.locator("dialog.pose-dialog")
    dialog.get_by_label("Preset pose").select_option("standing")
    dialog.get_by_role("button", name="Use in ControlNet unit").click()
    expect(dialog).to_have_count(0)
    expect(page.locator(".comic-sidebar")).to_contain_text("1 ControlNet unit steer")

    # A thought bubble: the tail tip drags to a speaker point; an SFX turns.
    page.get_by_role("button", name="Thought").click()
    tail = page.locator(".tail-handle")
    before = tail.bounding_box()
    page.mouse.move(before["x"] + 3, before["y"] + 3)
    page.mouse.down()
    page.mouse.move(before["x"] + 40, before["y"] + 30, steps=4)
    page.mouse.up()
    page.get_by_role("button", name="Sound effect").click()
    page.locator("#comic-balloon-rotation").fill("-30")
    expect(page.locator(".balloon-sfx text")).to_have_attribute("transform", re.compile(r"^rotate\(30 "))
    page.locator(".balloon-sfx .balloon-hit").dblclick()
    page.locator(".balloon-editor").fill("KRAK")
    page.locator(".balloon-editor").press("Escape")
    expect(page.locator(".balloon-sfx text")).to_have_text("KRAK")
    wait_saved(page)

    saved = saved_comic(server, "Hand edits")
    panel = next(p for p in saved["pages"][0]["panels"] if p["id"] == first_id)
    thought, sfx = panel["balloons"]
    assert thought["kind"] == "thought" and thought["tail"]["x"] > 0
    assert sfx["kind"] == "sfx" and sfx["rotation"] == -30 and sfx["text"] == "KRAK"
    assert saved["characters"][0]["reference_image"].startswith("assets/upload-")
    (unit,) = panel["controls"]
    assert unit["module"] == "none" and unit["image"].startswith("inputs/")

    # Pages: add one from a template (it opens), move it first, delete the other.
    page.select_option("#comic-new-page-template", "three-tiers")
    page.locator("#comic-add-page").click()
    expect(page.locator(".comic-page-list li")).to_have_count(2)
    expect(page.locator(".comic-page-list li.current")).to_contain_text("Page 2")
    expect(page.locator(".comic-svg .comic-panel")).to_have_count(3)
    page.get_by_role("button", name="Move page 2 up").click()
    expect(page.locator(".comic-page-list li.current")).to_contain_text("Page 1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete page 2").click()
    expect(page.locator(".comic-page-list li")).to_have_count(1)
    wait_saved(page)
    assert [len(p["panels"]) for p in saved_comic(server, "Hand edits")["pages"]] == [3]


def test_every_pages_field_has_a_visible_label(page, server):
    create_comic(page, server, "Labels")
    fields = page.locator(".comic-pages").locator("input, select, textarea")
    assert fields.count() >= 6
    unlabelled = fields.evaluate_all("""els => els.filter(e => e.offsetParent !== null)
        .filter(e => ![...e.labels].some(l => l.offsetParent !== null && l.textContent.trim()))
        .map(e => e.outerHTML)""")
    assert unlabelled == []
    expect(page.locator("label[for=comic-border-width]")).to_have_text("Border width (mm)")
    expect(page.locator("label[for=comic-border-colour]")).to_have_text("Border colour")
    page.get_by_label("Border width (mm)").fill("1.5")
    page.get_by_label("Border width (mm)").dispatch_event("change")
    wait_saved(page)
    assert saved_comic(server, "Labels")["pages"][0]["border"]["width_mm"] == 1.5


def test_enter_after_adding_a_balloon_opens_its_text_and_the_list_follows(page, server):
    create_comic(page, server, "Enter")
    page.locator(".comic-svg .comic-panel .panel-hit").first.click()
    page.get_by_role("button", name="Speech (oval)").click()
    page.keyboard.press("Enter")
    editor = page.locator(".balloon-editor")
    expect(editor).to_be_focused()
    page.keyboard.type("Hi there")
    expect(page.locator(".comic-svg .balloon text")).to_contain_text("Hi there")
    editor.press("Escape")
    chip = page.locator(".comic-sidebar [data-balloon]")
    expect(chip).to_have_text("1. Hi there")
    expect(page.locator("#comic-balloon-text")).to_have_value("Hi there")
    page.fill("#comic-balloon-text", "Bye now")  # typed in the sidebar: the list follows as well
    expect(chip).to_have_text("1. Bye now")
    wait_saved(page)
    assert saved_comic(server, "Enter")["pages"][0]["panels"][0]["balloons"][0]["text"] == "Bye now"


def test_screen_pdf_says_its_size_before_saving(page, server, tmp_path):
    create_comic(page, server, "Sizes")
    wait_saved(page)
    page.get_by_role("button", name="PDF for screen").click()
    size = page.locator("#comic-export-size")
    expect(size).to_have_text(re.compile(r"^sizes-screen\.pdf: [\d.]+ (B|KB|MB)$"))
    with page.expect_download() as download:
        page.locator("#comic-export-save").click()
    assert download.value.suggested_filename == "sizes-screen.pdf"
    path = tmp_path / "screen.pdf"
    download.value.save_as(path)
    assert pypdf.PdfReader(path).pages[0].mediabox.width > 0
    page.get_by_role("button", name="PDF for print").click()
    expect(page.locator("dialog.export-ready")).to_contain_text("“PDF for screen” makes a much smaller file")
    page.get_by_role("button", name="Close").click()
    expect(page.locator("dialog.export-ready")).to_have_count(0)


def test_all_empty_panels_generated_together_with_shared_attention(page, server):
    create_comic(page, server, "Together")
    use_fast_style(page)
    wait_saved(page)
    status = page.locator("#comic-together-status")
    page.fill("#comic-shared-share", "0.4")
    page.locator("#comic-shared-share").dispatch_event("change")
    expect(status).to_contain_text(re.compile(r"4 panels; the shared tokens will take about \d+ MiB"))
    page.get_by_role("button", name="Generate all empty panels together").click()
    expect(status).to_have_text("Queued 4 panels as one job.")
    for panel_id in page.locator(".comic-svg .comic-panel").evaluate_all("els => els.map(e => e.dataset.panel)"):
        expect(page.locator(f'.comic-panel[data-panel="{panel_id}"] image')).to_have_count(1, timeout=TIMEOUT_MS * 3)
    saved = saved_comic(server, "Together")
    candidates = [p["candidates"][0] for p in saved["pages"][0]["panels"]]
    assert len({c["job_id"] for c in candidates}) == 1 and sorted(c["job_index"] for c in candidates) == [0, 1, 2, 3]
    assert httpx.get(f"{server.url}/api/jobs/{candidates[0]['job_id']}").json()["result"]["shared_attention"] == 0.4


STALE = "This comic was changed in another tab or by another person since you opened it; reload it to see the changes."


def test_two_tabs_editing_one_comic_never_overwrite_each_other_silently(page, server):
    create_comic(page, server, "Two tabs")
    wait_saved(page)
    other = page.context.new_page()  # a second tab: its own client id, its own copy of the project
    other.goto(page.url)
    for tab in (page, other):
        tab.locator(".comic-section summary", has_text="Project").click()
    expect(other.locator("#comic-title-input")).to_have_value("Two tabs")

    set_field(page, "#comic-title-input", "Edited in the first tab")
    wait_saved(page)
    set_field(other, "#comic-title-input", "Edited in the second tab")
    conflict = other.locator(".comic-conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text(STALE)
    expect(other.locator(".save-state")).to_have_text(f"Not saved: {STALE}")
    expect(other.locator("#comic-title-input")).to_have_value("Edited in the second tab")  # still on screen
    saved = saved_comic(server, "Edited in the first tab")  # the first tab's edit stands
    assert saved["title"] == "Edited in the first tab"

    # A layout edit from the stale tab is refused the same way, and changes nothing.
    other.locator("#comic-add-page").click()
    expect(conflict).to_contain_text(STALE)
    assert len(saved_comic(server, "Edited in the first tab")["pages"]) == 1

    other.get_by_role("button", name="Reload the comic").click()
    expect(conflict).to_be_hidden()
    expect(other.locator("#comic-title-input")).to_have_value("Edited in the first tab")
    set_field(other, "#comic-title-input", "Edited again after reloading")
    wait_saved(other)
    assert saved_comic(server, "Edited again after reloading")["version"] == saved["version"] + 1
    other.close()
