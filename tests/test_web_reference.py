"""Browser tests of the Generate page's reference images (Playwright, Debian's Chromium, tiny models).

The studio's home holds the tiny SD1 checkpoint, a tiny IP-Adapter made for it and the tiny CLIP image
encoder beside it; a second home has the checkpoint only.
"""

from __future__ import annotations

import httpx
import pytest
from PIL import Image, ImageDraw

from test_web import MODEL, browser, expect, open_generate, page, set_size, unlabelled_controls, wait_done  # noqa: F401

ADAPTER = "ip-adapter_tiny_sd1"


def checkpoint_home(root, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(root).ensure()
    (home.model_dir("checkpoint") / MODEL).symlink_to(sd1_folder.resolve(), target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd1_folder):
    from factories import build_image_encoder, build_ip_adapter_for
    from web_server import running_studio

    home = checkpoint_home(tmp_path_factory.mktemp("web-reference-home"), sd1_folder)
    build_ip_adapter_for(sd1_folder, home.model_dir("ipadapter") / f"{ADAPTER}.safetensors")
    build_image_encoder(home.model_dir("ipadapter") / "image_encoder")
    with running_studio(home) as running:
        yield running


@pytest.fixture()
def picture(tmp_path) -> str:
    image = Image.new("RGB", (80, 64), (240, 235, 220))
    ImageDraw.Draw(image).ellipse((12, 8, 60, 56), fill=(200, 30, 30))
    path = tmp_path / "mia.png"
    image.save(path)
    return str(path)


def open_references(page, server):
    open_generate(page, server)
    page.locator("summary", has_text="Reference images").click()
    return page.get_by_role("button", name="Add reference image")


def test_a_reference_is_generated_with_and_restored_by_use_these_settings(page, server, picture):
    add = open_references(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a girl in a red coat")
    page.fill("#f-steps", "2")
    page.fill("#f-seed", "5")
    add.click()
    card = page.locator(".reference-image").first
    expect(card.get_by_role("heading")).to_have_text("Reference image 1")
    card.locator("input[type=file]").set_input_files(picture)
    expect(card.locator(".drop-status")).to_contain_text("80 × 64")
    expect(card.locator("img.control-thumb")).to_be_visible()
    expect(card.get_by_label("Scale", exact=True)).to_have_value("0.5")
    card.get_by_label("Scale", exact=True).fill("0.7")
    adapter = card.get_by_label("IP-Adapter", exact=True)
    assert adapter.locator("option").all_inner_texts()[0] == "Automatic"
    assert adapter.locator("option").all_inner_texts()[1].startswith(f"{ADAPTER} [")
    card.get_by_role("button", name="What does Scale do?").click()
    expect(card.locator(".field.help-open .help")).to_contain_text("how strongly")
    assert unlabelled_controls(page) == []

    page.get_by_role("button", name="Generate", exact=True).click()
    wait_done(page, page.locator(".job").first)
    newest = httpx.get(server.url + "/api/images?limit=1").raise_for_status().json()["items"][0]
    recipe = httpx.get(server.url + f"/api/images/{newest['id']}").raise_for_status().json()["recipe"]
    [reference] = recipe["references"]
    assert reference["scale"] == 0.7 and reference["image"].startswith("inputs/") and reference["model"].startswith(f"{ADAPTER} [")

    # A fresh page has no references; "Use these settings" brings this one back.
    page.reload()
    expect(page.locator("#f-model option")).not_to_have_count(0)
    expect(page.locator(".reference-image")).to_have_count(0)
    page.goto(server.url + "/#/gallery")
    page.locator(f".grid li[data-id='{newest['id']}'] button").click()
    page.locator("dialog.viewer").get_by_role("button", name="Use these settings").click()
    restored = page.locator(".reference-image")
    expect(restored).to_have_count(1)
    expect(restored.get_by_label("Scale", exact=True)).to_have_value("0.7")
    expect(restored.get_by_label("IP-Adapter", exact=True)).to_have_value(ADAPTER)
    expect(restored.locator("img.control-thumb")).to_have_js_property("naturalWidth", 80)
    refs = page.evaluate("document.querySelector('#reference-images').references()")
    assert refs == [{"image": reference["image"], "scale": 0.7, "model": ADAPTER}]


def test_refusals_show_next_to_their_reference(page, server, picture):
    add = open_references(page, server)
    add.click()
    add.click()
    page.get_by_role("button", name="Generate", exact=True).click()
    first = page.locator(".reference-image").first
    expect(first.locator(".field-error:visible")).to_have_text("Reference image 1 has no picture; upload one or remove it.")

    # The server names references.1.model: the second card shows it.
    with open(picture, "rb") as f:
        ref = httpx.post(server.url + "/api/uploads", files={"file": ("mia.png", f, "image/png")}).raise_for_status().json()["ref"]
    page.evaluate("""(ref) => document.querySelector('#reference-images').fill(
        [{image: ref, scale: 0.5, model: ''}, {image: ref, scale: 0.5, model: 'ip-adapter_missing'}])""", ref)
    page.get_by_role("button", name="Generate", exact=True).click()
    second = page.locator(".reference-image").nth(1)
    expect(second.locator(".field-error:visible")).to_contain_text("No ipadapter named 'ip-adapter_missing'")
    expect(second.get_by_label("IP-Adapter", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".reference-image").first.locator(".field-error:visible")).to_have_count(0)


def test_without_an_adapter_the_section_says_how_to_add_one(page, tmp_path, sd1_folder):
    from web_server import running_studio

    with running_studio(checkpoint_home(tmp_path / "home", sd1_folder)) as bare:
        add = open_references(page, bare)
        note = page.locator(".reference-note")
        expect(note).to_contain_text("No IP-Adapter is installed")
        expect(note).to_contain_text("models/IP-Adapter")
        expect(note).to_contain_text("image_encoder/")
        expect(add).to_be_disabled()
