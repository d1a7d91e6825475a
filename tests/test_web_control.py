"""Browser tests of the ControlNet panel and the pose editor (Playwright, Debian's Chromium, tiny models).

The studio's home holds the tiny SD1 checkpoint and a tiny SD1 ControlNet named as an OpenPose one.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re

import httpx
import pytest
from PIL import Image, ImageDraw

from test_web import MODEL, browser, expect, open_generate, page, set_size, unlabelled_controls, wait_done  # noqa: F401

from localdiffusion.control.pose import COLOURS

CONTROLNET = "control_openpose-tiny-sd1"
EDITOR = "#pose-editor"
RIGHT_WRIST = 4


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory, sd1_folder):
    from factories import build_controlnet

    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-control-home")).ensure()
    (home.model_dir("checkpoint") / MODEL).symlink_to(sd1_folder.resolve(), target_is_directory=True)
    build_controlnet(sd1_folder, home.model_dir("controlnet") / CONTROLNET)
    return home


@pytest.fixture(scope="module")
def server(studio_home):
    from web_server import running_studio

    with running_studio(studio_home) as running:
        yield running


def add_unit(page, server):
    open_generate(page, server)
    page.locator("summary", has_text="ControlNet").click()
    page.get_by_role("button", name="Add ControlNet unit").click()
    unit = page.locator(".control-unit").first
    expect(unit.get_by_role("heading")).to_have_text("ControlNet unit 1")
    return unit


def pose_of(page) -> dict:
    return page.evaluate(f"document.querySelector('{EDITOR}').pose")


def point(pose: dict, joint: int, person: int = 0) -> list[float]:
    return pose["people"][person]["pose_keypoints_2d"][3 * joint : 3 * joint + 3]


def open_editor_with_preset(page, unit, preset: str) -> dict:
    unit.get_by_role("button", name="Open the pose editor").click()
    dialog = page.locator("dialog.pose-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("select[id^=pose-preset] option", has_text=preset)).to_have_count(1)
    dialog.get_by_label("Preset pose", exact=True).select_option(label=preset)
    expect(dialog.locator(".pose-status")).to_have_text(f"Loaded the {preset.lower()} pose.")
    return pose_of(page)


def drag(page, selector: str, dx: float, dy: float) -> None:
    box = page.locator(selector).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=6)
    page.mouse.up()


def png_at(server, url: str) -> Image.Image:
    return Image.open(io.BytesIO(httpx.get(server.url + url).raise_for_status().content)).convert("RGB")


# --- tests ---------------------------------------------------------------------------------


def test_units_list_preprocessors_models_and_explain_the_window(page, server):
    unit = add_unit(page, server)
    module = unit.get_by_label("Preprocessor", exact=True)
    assert module.locator("option").all_inner_texts()[:2] == ["None: the image is the map", "Canny edges"]
    assert CONTROLNET in unit.get_by_label("ControlNet model", exact=True).locator("option").all_inner_texts()[1]
    module.select_option("canny")
    expect(unit.get_by_label("Low threshold", exact=True)).to_have_value("100")
    expect(unit.get_by_label("Processing resolution", exact=True)).to_have_value("512")
    expect(unit.locator(".control-window")).to_have_text("With 20 steps this unit steers steps 1 to 20 (all of them).")
    page.fill("#f-steps", "10")
    unit.get_by_label("Ending control step", exact=True).fill("0.5")
    expect(unit.locator(".control-window")).to_have_text("With 10 steps this unit steers steps 1 to 5.")
    unit.get_by_role("button", name="What does Control weight do?").click()
    expect(unit.locator(".field.help-open .help")).to_contain_text("steers the image")
    assert unlabelled_controls(page) == []

    # A unit without a picture is named before anything is sent.
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator(".form-error")).to_have_text(re.compile("ControlNet unit 1 has no picture"))
    unit.get_by_role("button", name="Remove ControlNet unit 1").click()
    expect(page.locator(".control-unit")).to_have_count(0)


def test_canny_preview_becomes_the_units_map(page, server, tmp_path):
    drawing = tmp_path / "drawing.png"
    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).rectangle((20, 12, 70, 50), outline="black", width=3)
    image.save(drawing)
    unit = add_unit(page, server)
    unit.locator("input[type=file]").set_input_files(str(drawing))
    expect(unit.locator(".drop-status")).to_contain_text("96 × 64")
    unit.get_by_label("Preprocessor", exact=True).select_option("canny")
    unit.get_by_label("Processing resolution", exact=True).fill("64")
    unit.get_by_role("button", name="Preview the map").click()
    expect(unit.locator(".control-map")).to_be_visible()
    expect(unit.locator(".control-map")).to_have_js_property("naturalWidth", 96)
    controls = page.evaluate("document.querySelector('#control-units').units()")
    assert controls[0]["module"] == "canny" and controls[0]["map"].startswith("inputs/")
    assert controls[0]["image"] != controls[0]["map"]
    # Changing a setting makes the kept map stale: the job would make a new one.
    unit.get_by_label("High threshold", exact=True).fill("250")
    expect(unit.locator(".control-map")).to_be_hidden()
    assert "map" not in page.evaluate("document.querySelector('#control-units').units()")[0]


def test_pose_editor_edits_a_preset_and_feeds_the_unit(page, server):
    unit = add_unit(page, server)
    before = open_editor_with_preset(page, unit, "Walking")
    assert len(before["people"]) == 1 and before["canvas_width"] == 512

    # Drag the right wrist: its point in the pose JSON follows the pointer.
    handle = f"{EDITOR} circle.pose-handle[data-person='0'][data-joint='{RIGHT_WRIST}']"
    scale = page.evaluate(f"(() => {{ const r = document.querySelector('{EDITOR} svg').getBoundingClientRect(); return 512 / r.width; }})()")
    drag(page, handle, 40, 30)
    after = pose_of(page)
    x0, y0, _ = point(before, RIGHT_WRIST)
    x1, y1, c1 = point(after, RIGHT_WRIST)
    assert c1 == 1 and abs(x1 - x0 - 40 * scale) < 3 and abs(y1 - y0 - 30 * scale) < 3
    assert point(after, 1) == point(before, 1)  # the neck stayed
    shown = re.fullmatch(r"right wrist: x (\d+), y (\d+)\.", page.locator(f"{EDITOR} .pose-where").inner_text())
    assert shown and abs(int(shown[1]) - x1) <= 1 and abs(int(shown[2]) - y1) <= 1

    # Keyboard: nudge the selected joint, then hide and show it.
    page.locator(f"{EDITOR} svg").focus()
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    assert point(pose_of(page), RIGHT_WRIST)[0] == pytest.approx(round(x1 - 3, 1), abs=0.11)
    page.keyboard.press("h")
    assert point(pose_of(page), RIGHT_WRIST) == [0, 0, 0]
    page.keyboard.press("h")
    assert point(pose_of(page), RIGHT_WRIST)[2] == 1

    # People: duplicate, mirror, remove; the scale slider grows the selected person about its centre.
    dialog = page.locator("dialog.pose-dialog")
    dialog.get_by_role("button", name="Duplicate").click()
    assert len(pose_of(page)["people"]) == 2
    expect(dialog.get_by_label("Person", exact=True)).to_have_value("1")
    dialog.get_by_role("button", name="Remove person").click()
    assert len(pose_of(page)["people"]) == 1
    before_mirror = pose_of(page)
    shown = [point(before_mirror, j) for j in range(18) if point(before_mirror, j)[2] > 0]
    centre_x = sum(p[0] for p in shown) / len(shown)  # the pivot: the mean of the shown joints
    dialog.get_by_role("button", name="Mirror").click()
    mirrored = pose_of(page)
    # Turned around in place: the right shoulder is where the left one was, reflected about the person's centre.
    assert point(mirrored, 2)[0] == pytest.approx(2 * centre_x - point(before_mirror, 5)[0], abs=0.2)
    width_before = abs(point(mirrored, 2)[0] - point(mirrored, 5)[0])
    dialog.get_by_label("Scale", exact=True).fill("150")
    dialog.get_by_label("Scale", exact=True).dispatch_event("change")
    grown = pose_of(page)
    assert abs(point(grown, 2)[0] - point(grown, 5)[0]) == pytest.approx(1.5 * width_before, rel=0.02)
    assert unlabelled_controls(page) == []

    # Use it: the unit gets the rendered map as its picture, module "none" and the OpenPose ControlNet.
    dialog.get_by_role("button", name="Use in ControlNet unit").click()
    expect(dialog).to_be_hidden()
    expect(unit.get_by_label("Preprocessor", exact=True)).to_have_value("none")
    expect(unit.get_by_label("ControlNet model", exact=True)).to_have_value(CONTROLNET)
    controls = page.evaluate("document.querySelector('#control-units').units()")
    assert controls[0]["module"] == "none" and controls[0]["model"] == CONTROLNET
    rendered = png_at(server, "/api/" + controls[0]["image"])
    x, y, _ = point(grown, RIGHT_WRIST)
    assert rendered.getpixel((int(x), int(y))) == COLOURS[RIGHT_WRIST]
    assert rendered.getpixel((int(x0), int(y0))) != COLOURS[RIGHT_WRIST]  # not where the preset had it

    # Reopening the editor continues with the same pose.
    unit.get_by_role("button", name="Open the pose editor").click()
    assert point(pose_of(page), RIGHT_WRIST) == point(grown, RIGHT_WRIST)


def test_generate_with_a_pose_unit_records_the_controlnet(page, server):
    unit = add_unit(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a dancer on a stage")
    page.fill("#f-steps", "3")
    page.fill("#f-seed", "7")
    open_editor_with_preset(page, unit, "Running")
    page.locator("dialog.pose-dialog").get_by_role("button", name="Use in ControlNet unit").click()
    expect(unit.get_by_label("ControlNet model", exact=True)).to_have_value(CONTROLNET)

    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)
    expect(card.locator(".result img")).to_have_count(1)
    card.locator(".result").click()
    viewer = page.locator("dialog.viewer")
    expect(viewer.locator("pre")).to_contain_text(re.compile(rf'ControlNet 0: "Module: none, Model: {CONTROLNET}'))
    expect(viewer.locator(".recipe-list")).to_contain_text(re.compile(rf"ControlNet 1\s*none → {CONTROLNET}"))
    newest = httpx.get(server.url + "/api/images?limit=1").raise_for_status().json()["items"][0]
    recipe = httpx.get(server.url + f"/api/images/{newest['id']}").raise_for_status().json()["recipe"]
    assert recipe["controls"][0]["model"].startswith(CONTROLNET) and recipe["controls"][0]["module"] == "none"


def open_pose_editor(page, server):
    unit = add_unit(page, server)
    unit.get_by_role("button", name="Open the pose editor").click()
    return page.locator("dialog.pose-dialog")


def pose_photo(tmp_path):
    from test_pose import drawn_figure

    photo = tmp_path / "figure.png"
    drawn_figure().save(photo)
    return photo


@pytest.mark.pose
def test_pose_from_a_photo(page, server, tmp_path):
    dialog = open_pose_editor(page, server)
    dialog.locator("input[type=file][id^=pose-photo]").set_input_files(str(pose_photo(tmp_path)))
    expect(dialog.locator(".pose-status")).to_have_text("The pose was found; drag the joints to adjust it.")
    expect(dialog.locator("svg image")).to_have_count(1)  # the photo behind the skeleton
    found = pose_of(page)
    assert len(found["people"]) == 1 and point(found, 0)[1] < point(found, 8)[1]  # the nose above the hip


def test_pose_from_a_photo_without_the_pose_extra_says_how_to_install_it(page, server, tmp_path):
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("the [pose] extra is installed here")
    dialog = open_pose_editor(page, server)
    dialog.locator("input[type=file][id^=pose-photo]").set_input_files(str(pose_photo(tmp_path)))
    expect(dialog.locator(".pose-status")).to_contain_text("bash scripts/setup.sh --pose")


def test_pose_json_files_save_and_load(page, server, tmp_path):
    dialog = open_pose_editor(page, server)
    shown = pose_of(page)
    # Save JSON downloads the pose; loading it back (or any OpenPose file) replaces the pose.
    with page.expect_download() as download:
        dialog.get_by_role("button", name="Save JSON").click()
    assert json.loads(download.value.path().read_text()) == shown
    other = {"canvas_width": 768, "canvas_height": 512, "people": [{"pose_keypoints_2d": [100, 50, 1] * 18}]}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    dialog.locator("input[type=file][id^=pose-json]").set_input_files(str(path))
    expect(dialog.locator(".pose-status")).to_have_text("Loaded other.json.")
    loaded = pose_of(page)
    assert (loaded["canvas_width"], loaded["canvas_height"]) == (768, 512) and point(loaded, 3) == [100, 50, 1]
    expect(dialog.get_by_label("Canvas size", exact=True)).to_have_value("768x512")
    path.write_text('{"people": []}')
    dialog.locator("input[type=file][id^=pose-json]").set_input_files(str(path))
    expect(dialog.locator(".pose-status")).to_have_text("The pose JSON has no canvas_width and canvas_height.")


def test_a_unit_sends_its_control_mode_and_pixel_perfect(page, server, tmp_path):
    drawing = tmp_path / "drawing.png"
    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).rectangle((20, 12, 70, 50), outline="black", width=3)
    image.save(drawing)
    unit = add_unit(page, server)
    set_size(page, 128, 64)
    page.fill("#f-prompt", "a box on a table")
    page.fill("#f-steps", "3")
    mode = unit.get_by_label("Control mode", exact=True)
    expect(mode).to_have_value("Balanced")
    assert mode.locator("option").all_inner_texts() == ["Balanced", "My prompt is more important", "ControlNet is more important"]
    unit.get_by_role("button", name="What does Control mode do?").click()
    expect(unit.locator(".field.help-open .help")).to_contain_text("negative-prompt side of CFG")
    unit.get_by_role("button", name="What does Pixel perfect do?").click()
    expect(unit.locator(".field.help-open .help")).to_contain_text("at the size it is used at")
    unit.get_by_role("button", name="What does Pixel perfect do?").click()
    expect(unit.locator(".field.help-open")).to_have_count(0)
    assert unlabelled_controls(page) == []

    unit.locator("input[type=file]").set_input_files(str(drawing))
    expect(unit.locator(".drop-status")).to_contain_text("96 × 64")
    unit.get_by_label("Preprocessor", exact=True).select_option("canny")
    mode.select_option("ControlNet is more important")
    unit.get_by_label("Pixel perfect", exact=True).check()
    expect(unit.get_by_label("Processing resolution", exact=True)).to_be_disabled()
    # The preview works at the image's size: the 96x64 drawing covering 128x64 at 1.333 x 64 = 85.
    unit.get_by_role("button", name="Preview the map").click()
    expect(unit.locator(".control-map")).to_have_js_property("naturalHeight", 85)
    (sent,) = page.evaluate("document.querySelector('#control-units').units()")
    assert sent["control_mode"] == "ControlNet is more important" and sent["pixel_perfect"] is True
    assert sent["processor_res"] == 85 and sent["map"].startswith("inputs/")
    # Another image size needs another map.
    set_size(page, 128, 128)
    assert "map" not in page.evaluate("document.querySelector('#control-units').units()")[0]
    set_size(page, 128, 64)
    unit.get_by_label("ControlNet model", exact=True).select_option(CONTROLNET)  # the one installed, whatever its name says

    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)
    newest = httpx.get(server.url + "/api/images?limit=1").raise_for_status().json()["items"][0]
    (kept,) = httpx.get(server.url + f"/api/images/{newest['id']}").raise_for_status().json()["recipe"]["controls"]
    assert kept["control_mode"] == "ControlNet is more important" and kept["pixel_perfect"] and kept["processor_res"] == 85
    card.locator(".result").click()
    expect(page.locator("dialog.viewer pre")).to_contain_text("Pixel Perfect: True, Control Mode: ControlNet is more important")


def test_a_pose_from_the_editor_shows_in_the_units_drop_zone(page, server):
    unit = add_unit(page, server)
    intro = page.locator("#control-units > p.hint").first
    expect(intro).not_to_contain_text("press Preview")
    expect(unit.locator(".drop-status")).to_have_text("No image yet.")
    open_editor_with_preset(page, unit, "Standing")
    page.locator("dialog.pose-dialog").get_by_role("button", name="Use in ControlNet unit").click()
    expect(unit.get_by_label("Preprocessor", exact=True)).to_have_value("none")
    expect(unit.locator(".drop-status")).to_have_text("The pose editor's map: 512 × 512")
    expect(unit.get_by_role("button", name="Preview the map")).to_be_hidden()
    expect(unit.locator(".control-thumb").first).to_be_visible()
