"""The Library page in a browser: search by meaning, facets, highlighted prompts, links out, "Use this prompt" and
"Use these settings"; and "prompts like yours" under the Generate page's prompt, with the typical settings."""

from __future__ import annotations

import pytest

from library_data import write_diffusiondb
from test_web import TIMEOUT_MS, browser, expect, open_generate, page, studio_home  # noqa: F401  (fixtures)
from web_server import running_studio

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def server(studio_home, tmp_path_factory):
    from localdiffusion.library import Library

    folder = tmp_path_factory.mktemp("library-files")
    with Library(studio_home.root) as library:
        library.import_path(write_diffusiondb(folder / "metadata.parquet"))
        listing = folder / "mine.txt"
        listing.write_text("(masterpiece:1.2), a heron in ink <lora:ink:0.8>, __colours__\n", encoding="utf-8")
        library.import_path(listing, source_name="Class prompts", licence="CC-BY 4.0")
    with running_studio(studio_home) as running:
        yield running


def test_the_library_page_searches_filters_and_fills_the_generate_page(page, server):
    page.goto(server.url + "/#/library")
    expect(page.locator("#library-semantic")).to_be_checked()
    page.fill("#library-q", "kitten napping on the couch")
    page.get_by_role("button", name="Search", exact=True).click()
    first = page.locator(".library-card").first
    expect(first).to_contain_text("a photo of a cat sleeping on a sofa", timeout=TIMEOUT_MS)
    expect(first).to_contain_text("DiffusionDB · CC0 1.0")
    expect(first).to_contain_text("Sampler LMS")
    lexica = page.get_by_role("link", name="Lexica")
    expect(lexica).to_have_attribute("href", "https://lexica.art/?q=kitten%20napping%20on%20the%20couch")
    expect(lexica).to_have_attribute("target", "_blank")
    assert "noopener" in lexica.get_attribute("rel")
    expect(page.get_by_role("link", name="DiffusionDB explorer")).to_have_count(1)

    page.fill("#library-q", "heron")
    page.get_by_role("button", name="Search", exact=True).click()
    heron = page.locator(".library-card", has_text="a heron in ink")
    expect(heron.locator(".syn-weight")).to_have_text(":1.2")
    expect(heron.locator(".syn-network")).to_have_text("<lora:ink:0.8>")
    expect(heron.locator(".syn-wildcard")).to_have_text("__colours__")
    expect(heron).to_contain_text("Class prompts · CC-BY 4.0")

    page.fill("#library-q", "painting")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".library-card")).to_have_count(2, timeout=TIMEOUT_MS)
    page.locator(".facet", has_text="DDIM").click()
    expect(page.locator(".library-card")).to_have_count(1, timeout=TIMEOUT_MS)
    card = page.locator(".library-card").first
    expect(card).to_contain_text("portrait of an old fisherman")
    card.get_by_role("button", name="Use these settings").click()
    expect(page).to_have_url(server.url + "/#/generate", timeout=TIMEOUT_MS)
    expect(page.locator("#f-steps")).to_have_value("40", timeout=TIMEOUT_MS)
    expect(page.locator("#f-cfg_scale")).to_have_value("7.5")

    page.goto(server.url + "/#/library")
    page.locator(".library-card", has_text="fisherman").get_by_role("button", name="Use this prompt").click()
    expect(page.locator("#f-prompt")).to_have_value("portrait of an old fisherman with a beard, oil painting", timeout=TIMEOUT_MS)


def test_prompts_like_yours_appear_as_one_types_with_the_typical_settings(page, server):
    open_generate(page, server)
    page.locator("#f-prompt").press_sequentially("an elderly sailor painted in oils", delay=5)
    panel = page.locator(".like-yours")
    expect(panel).to_be_visible(timeout=TIMEOUT_MS)
    expect(panel.locator(".like-yours-list li").first).to_contain_text("portrait of an old fisherman")
    expect(panel.locator(".like-yours-list li")).to_have_count(5)
    panel.get_by_role("button", name="35 steps").click()
    expect(page.locator("#f-steps")).to_have_value("35")
    panel.get_by_role("button", name="512×512").click()
    expect(page.locator("#f-width")).to_have_value("512")
    panel.locator(".like-yours-list button").first.click()
    expect(page.locator("#f-prompt")).to_have_value("portrait of an old fisherman with a beard, oil painting")
