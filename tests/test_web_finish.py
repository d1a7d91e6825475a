"""Browser tests of finishing: mask tools then inpaint, and an upscale from the image viewer.

The browser, page and helpers come from tests/test_web.py (Playwright on Debian's Chromium).
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from test_web import (MODEL, TIMEOUT_MS, browser, expect, open_generate, page, submit_job,  # noqa: F401 (fixtures)
                      unlabelled_controls, wait_done)
from test_upscale import write_esrgan
from web_server import running_studio


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-finish-home")).ensure()
    (home.model_dir("checkpoint") / MODEL).symlink_to(sd1_folder, target_is_directory=True)
    write_esrgan(home.model_dir("upscaler"))
    return home


@pytest.fixture(scope="module")
def server(studio_home):
    with running_studio(studio_home) as running:
        yield running


def fetch_image(server, path: str) -> Image.Image:
    image = Image.open(io.BytesIO(httpx.get(server.url + path, timeout=30).content))
    image.load()
    return image


def test_paint_a_mask_grow_it_and_inpaint(page, server, tmp_path):
    rng = np.random.default_rng(2)
    source = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), "RGB")
    source.save(tmp_path / "source.png")
    open_generate(page, server)
    page.get_by_role("tab", name="Inpaint").click()
    page.set_input_files("#init-image-file", str(tmp_path / "source.png"))
    expect(page.locator("#init-image .drop-status")).to_contain_text("128 × 96")
    editor = page.locator("#mask-editor")
    canvas = editor.locator(".mask-paint")
    expect(canvas).to_have_js_property("width", 128)

    # A short brush stroke across the middle, 6 px wide.
    page.fill("#mask-editor input[type=range]", "6")
    canvas.evaluate("el => el.scrollIntoView({block: 'center'})")
    box = canvas.bounding_box()
    at = lambda x, y: (box["x"] + box["width"] * x / 128, box["y"] + box["height"] * y / 96)
    page.mouse.move(*at(50, 48))
    page.mouse.down()
    page.mouse.move(*at(78, 48), steps=6)
    page.mouse.up()
    alpha_at = "([x, y]) => document.querySelector('#mask-editor').alpha()[y * 128 + x]"
    assert page.evaluate(alpha_at, [64, 48]) > 200 and page.evaluate(alpha_at, [64, 58]) == 0

    # Grow by 12 px: the mask now reaches 10 px above and below the stroke, and no further than about 16.
    editor.get_by_label("By how many pixels", exact=True).fill("12")
    editor.get_by_role("button", name="Grow the mask").click()
    assert page.evaluate(alpha_at, [64, 58]) == 255 and page.evaluate(alpha_at, [64, 38]) == 255
    assert page.evaluate(alpha_at, [64, 68]) == 0

    page.fill("#f-prompt", "a yellow sun")
    page.fill("#f-steps", "3")
    page.fill("#f-mask_blur", "2")
    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)
    expect(card.locator(".result img")).to_have_count(1)

    job = httpx.get(f"{server.url}/api/jobs/{card.get_attribute('data-job-id')}").json()
    mask = np.asarray(Image.open(server.studio.home.root / job["recipe"]["mask"]).convert("L"))
    assert mask[58, 64] == 255 and mask[70, 64] == 0  # the grown mask is what was sent
    result = np.asarray(fetch_image(server, f"/api/images/{job['result']['images'][0]}/file").convert("RGB"), dtype=np.int16)
    original = np.asarray(source, dtype=np.int16)
    far = np.ones(mask.shape, bool)
    far[20:78, 25:105] = False  # well away from the grown, blurred mask
    assert (result[far] == original[far]).all(), "pixels far outside the mask are unchanged"
    assert np.abs(result - original)[mask > 200].mean() > 5, "the masked area was repainted"


def test_mask_tools_rectangle_lasso_invert_and_brightness(page, server, tmp_path):
    image = Image.new("RGB", (64, 64), (20, 20, 20))
    image.paste((250, 250, 250), (0, 0, 16, 64))  # a bright band on the left
    image.save(tmp_path / "band.png")
    open_generate(page, server)
    page.get_by_role("tab", name="Inpaint").click()
    page.set_input_files("#init-image-file", str(tmp_path / "band.png"))
    editor = page.locator("#mask-editor")
    canvas = editor.locator(".mask-paint")
    expect(canvas).to_have_js_property("width", 64)
    count = "() => document.querySelector('#mask-editor').alpha().filter(a => a > 127).length"
    editor.get_by_role("button", name="Select by brightness").click()
    page.wait_for_function(f"({count})() > 0")
    assert page.evaluate(count) == 16 * 64
    editor.get_by_role("button", name="Invert").click()
    assert page.evaluate(count) == 48 * 64

    editor.get_by_role("button", name="Clear").click()
    editor.get_by_role("button", name="Rectangle").click()
    canvas.evaluate("el => el.scrollIntoView({block: 'center'})")
    box = canvas.bounding_box()
    at = lambda x, y: (box["x"] + box["width"] * x / 64, box["y"] + box["height"] * y / 64)
    page.mouse.move(*at(10, 10))
    page.mouse.down()
    page.mouse.move(*at(30, 40), steps=4)
    page.mouse.up()
    assert abs(page.evaluate(count) - 20 * 30) < 60
    editor.get_by_role("button", name="Lasso").click()
    canvas.evaluate("el => el.scrollIntoView({block: 'center'})")
    box = canvas.bounding_box()
    page.mouse.move(*at(2, 2))
    page.mouse.down()
    for x, y in ((62, 2), (62, 25), (2, 25)):
        page.mouse.move(*at(x, y), steps=2)
    page.mouse.up()
    # The lasso's 60 x 23 area joins the rectangle, which it overlaps by 20 x 15.
    assert abs(page.evaluate(count) - (20 * 30 + 60 * 23 - 20 * 15)) < 120


def test_mask_edits_are_grouped_in_plain_words_with_explanations(page, server, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    open_generate(page, server)
    page.get_by_role("tab", name="Inpaint").click()
    page.set_input_files("#init-image-file", str(tmp_path / "red.png"))
    editor = page.locator("#mask-editor")
    expect(editor.locator("fieldset.mask-group > legend")).to_have_text(
        ["Change the mask edge", "Select by colour", "Select by brightness"])
    edge = editor.locator("fieldset.mask-group").filter(has_text="Change the mask edge")
    expect(edge.locator(".mask-actions button")).to_have_text(["Grow", "Shrink", "Soften"])
    brightness = editor.locator("fieldset.mask-group").filter(has_text="Select by brightness")
    expect(brightness.locator("label")).to_have_text(["From (dark)", "To (light)"])
    assert unlabelled_controls(page) == []

    # Each setting has the "i" of every other field, and it shows only its own explanation.
    for name, label in [("mask_edge", "By how many pixels"), ("mask_tolerance", "How similar"),
                        ("mask_brightness_from", "From (dark)"), ("mask_brightness_to", "To (light)")]:
        assert page.locator(f"#f-{name}").get_attribute("aria-describedby") == f"help-{name}"
        editor.get_by_role("button", name=f"What does {label} do?").click()
        expect(page.locator(f"#help-{name}")).to_be_visible()
        expect(editor.locator(".help:visible")).to_have_count(1)
    expect(page.locator("#help-mask_edge")).to_contain_text("Grow")

    # "Pick a colour" chooses the picking tool; the tolerance decides how close a colour must be.
    editor.get_by_role("button", name="Pick a colour").click()
    expect(editor.locator(".mask-stage")).to_have_attribute("data-tool", "pick")
    expect(editor.get_by_role("button", name="Pick colour", exact=True)).to_have_attribute("aria-pressed", "true")


def test_upscale_from_the_viewer_lands_in_the_gallery(page, server):
    job = submit_job(server, {"prompt": "a small boat", "model": MODEL, "width": 64, "height": 64, "steps": 2, "seed": 8})
    image_id = job["result"]["images"][0]
    page.goto(server.url + "/#/gallery")
    tile = page.locator(f".grid li[data-id='{image_id}'] button")
    expect(tile).to_be_visible()
    before = page.locator(".grid li").count()
    tile.click()
    viewer = page.locator("dialog.viewer")
    viewer.get_by_role("button", name="Upscale…").click()
    form = viewer.locator("form.upscale")
    expect(form.locator("select[name=upscaler] option")).to_have_count(3)  # Lanczos, Nearest, the model
    form.locator("select[name=upscaler]").select_option("4x-tiny")
    form.locator("input[name=scale]").fill("2")
    form.get_by_role("button", name="Upscale", exact=True).click()
    expect(form.locator(".upscale-status")).to_contain_text("128 × 128", timeout=TIMEOUT_MS * 2)
    form.get_by_role("button", name="Show it").click()
    expect(viewer.locator(".meta")).to_contain_text("128 × 128")
    expect(viewer.locator("details pre")).to_contain_text("Postprocess upscaler: 4x-tiny")
    page.keyboard.press("Escape")
    expect(page.locator(".grid li")).to_have_count(before + 1)  # the gallery heard of the new image
