"""Browser tests of the explanation panel and the parameter guide: generate an image in the studio,
ask why it looks like this, hover a word, scrub the timeline; open a card from a field's explanation
and try it on the prompt; sweep CFG and seed on the Compare page. Chromium via Playwright, as tests/test_web.py."""

from __future__ import annotations

import re

import pytest

from test_web import CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, browser, expect, open_generate, page, set_size, wait_done  # noqa: F401
from web_server import running_studio

STEPS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd1_folder):
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-explain-home")).ensure()
    (home.model_dir("checkpoint") / "tiny-sd1").symlink_to(sd1_folder, target_is_directory=True)
    with running_studio(home) as running:
        yield running


def generate_and_open(page, server) -> None:
    open_generate(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a red fox, snowy forest")
    page.fill("#f-negative_prompt", "blurry")
    page.fill("#f-steps", str(STEPS))
    page.fill("#f-seed", "5")
    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)
    card.locator(".result").click()
    expect(page.locator("dialog.viewer")).to_be_visible()


def test_why_panel_shows_heatmaps_and_timeline(page, server):
    generate_and_open(page, server)
    viewer = page.locator("dialog.viewer")
    viewer.get_by_role("button", name="Why does it look like this?").click()
    panel = viewer.locator("section.explain")
    expect(panel).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS * 3)

    overlay = viewer.locator(".explain-overlay")
    expect(overlay).to_be_hidden()
    fox = panel.locator(".word-chip[data-word='fox']")
    fox.hover()
    expect(overlay).to_be_visible()
    expect(overlay).to_have_attribute("src", re.compile(r"/explanation/files/attention/fox\.png$"))
    expect(overlay).to_have_js_property("complete", True)
    assert overlay.evaluate("img => img.naturalWidth") == 64
    page.mouse.move(0, 0)
    expect(overlay).to_be_hidden()

    # Keyboard focus shows the same as hover; negative-prompt words are marked as such.
    negative = panel.locator(".word-chip.negative[data-word='blurry']")
    expect(negative).to_contain_text("not: blurry")
    negative.focus()
    expect(overlay).to_have_attribute("src", re.compile(r"attention/negative/blurry\.png$"))
    panel.get_by_label("Late (detail)").check()
    fox.click()  # pinned, with the late-step map
    expect(overlay).to_have_attribute("src", re.compile(r"attention/late/fox\.png$"))

    # The timeline slider scrubs through every step's predicted image.
    slider = panel.get_by_label("Step of the denoising timeline")
    expect(slider).to_have_attribute("max", str(STEPS))
    slider.fill("1")
    frame = panel.locator(".explain-frame")
    expect(frame).to_have_attribute("src", re.compile(r"timeline/sample-001\.png$"))
    expect(panel.locator(".explain-step")).to_have_text(f"Step 1 of {STEPS}")
    # Each frame is the VAE's decode of that step's prediction, the image's own size (not 8 x 8 latent blocks).
    slider.fill(str(STEPS))
    expect(frame).to_have_attribute("src", re.compile(rf"timeline/sample-{STEPS:03d}\.png$"))
    expect(frame).to_have_js_property("complete", True)
    assert frame.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]
    # The CFG caption is shown once, as text, however many steps are shown; each view names its step.
    expect(panel.locator(".explain-cfg").get_by_text("multiplied by the scale")).to_have_count(1)
    expect(panel.locator(".explain-cfg figcaption")).to_have_text(["Step 1 of 4", "Step 3 of 4"])

    # Asking again shows the finished explanation at once.
    viewer.get_by_role("button", name="Why does it look like this?").click()
    expect(panel).to_have_attribute("data-state", "done")


def test_a_field_explanation_links_to_its_guide_card_which_tries_the_prompt(page, server):
    open_generate(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a lighthouse at dusk")
    page.fill("#f-steps", "3")  # the comparison keeps the form's steps when fewer than its own 10
    page.get_by_role("button", name="What does CFG scale do?").click()
    more = page.locator("#help-cfg_scale a.more")
    expect(more).to_be_visible()
    more.click()
    card = page.locator("#card-cfg_scale")
    expect(page.locator("#page-guide")).to_be_visible()
    expect(card).to_be_focused()
    expect(card).to_contain_text("How strongly your words push the picture.")
    expect(card.locator(".guide-illustration")).to_have_js_property("complete", True)
    assert card.locator(".guide-illustration").evaluate("img => img.naturalWidth") > 0

    card.get_by_role("button", name="Try it on my prompt").click()
    result = card.locator(".guide-try")
    expect(result).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS * 3)
    grid = result.locator("img.guide-grid")
    expect(grid).to_have_js_property("complete", True)
    assert grid.evaluate("img => img.naturalWidth") > 3 * 64
    expect(result).to_contain_text("CFG scale changes")
    # A parameter that one quick comparison cannot show says why.
    expect(page.locator("#card-batch_size")).to_contain_text("No quick comparison")


def test_the_compare_page_sweeps_cfg_and_seed_of_the_generate_settings(page, server):
    open_generate(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a lighthouse at dusk")
    page.fill("#f-steps", "2")
    page.click("nav a[data-page='compare']")
    section = page.locator("#page-compare")
    expect(section).to_be_visible()
    expect(section.locator(".compare-base")).to_contain_text("a lighthouse at dusk")

    page.select_option("#compare-x-field", label="CFG scale")
    expect(page.locator("#compare-x-values")).to_have_attribute("placeholder", "e.g. 3,7,12")
    page.fill("#compare-x-values", "3,abc")
    expect(section.locator(".compare-count")).to_contain_text("Give the Y axis its values")
    page.select_option("#compare-y-field", label="Seed")
    page.fill("#compare-y-values", "1-2")
    # The server reads the axes as they are typed and names the bad value next to its axis.
    expect(page.locator("#err-x")).to_contain_text("'abc'")
    expect(page.locator("#compare-x-values")).to_have_attribute("aria-invalid", "true")
    page.fill("#compare-x-values", "3,9")
    expect(section.locator(".compare-count")).to_contain_text("4 cells")
    expect(page.locator("#err-x")).to_be_hidden()

    section.get_by_role("button", name="Compare", exact=True).click()
    result = section.locator(".compare-result")
    expect(result).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS * 3)
    grid = result.locator(".compare-grid > img")
    expect(grid).to_have_js_property("complete", True)
    assert grid.evaluate("img => img.naturalWidth") > 2 * 64
    expect(result).to_contain_text("CFG scale changes")
    expect(result).to_contain_text("Seed changes")

    # A cell loads its own settings into the Generate form.
    result.get_by_text("Use one cell's settings").click()
    result.get_by_role("button", name="Use CFG scale 9, Seed 2").click()
    expect(page.locator("#page-generate")).to_be_visible()
    expect(page.locator("#f-cfg_scale")).to_have_value("9")
    expect(page.locator("#f-seed")).to_have_value("2")


def test_the_guides_model_card_opens_the_compare_page_with_a_model_axis(page, server):
    open_generate(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a lighthouse at dusk")
    page.click("nav a[data-page='guide']")
    card = page.locator("#card-model")
    expect(card).to_contain_text("No quick comparison")
    expect(card).not_to_contain_text("localdiffusion compare")  # no terminal command for a browser user
    card.get_by_role("link", name="Compare models on the Compare page").click()
    section = page.locator("#page-compare")
    expect(section).to_be_visible()
    expect(page.locator("#compare-x-field")).to_have_value("model")
    expect(page.locator("#compare-x-values")).to_have_value("tiny-sd1")  # the installed checkpoints
    expect(page.locator("#compare-y-field")).to_have_value("seed")
    expect(page.locator("#compare-y-values")).to_have_value("1,2")
    expect(section.locator(".compare-count")).to_contain_text("2 cells")
