"""Browser test of the Guide's Flavours section: SD 1.5, SDXL, SD 3.5 and FLUX in plain language with their settings."""

from __future__ import annotations

import pytest

from test_web import CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, browser, expect, open_generate, page  # noqa: F401
from web_server import running_studio


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd1_folder, flux_folder):
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("flavours-web-home")).ensure()
    for folder in (sd1_folder, flux_folder):
        (home.model_dir("checkpoint") / folder.name).symlink_to(folder, target_is_directory=True)
    with running_studio(home) as running:
        yield running


def test_the_guide_describes_each_flavour_and_its_settings(page, server):
    open_generate(page, server)
    page.click("nav a[data-page='guide']")
    section = page.locator("section.guide-flavours")
    expect(section.get_by_role("heading", name="Flavours")).to_be_visible()
    cards = section.locator("article")
    expect(cards).to_have_count(4)
    expect(cards.nth(0)).to_contain_text("SD 1.5")
    expect(cards.nth(3)).to_contain_text("Distilled CFG Scale 3.5")
    for word in ("Size", "Speed", "Prompt style", "Licence", "Settings"):
        expect(cards.nth(2)).to_contain_text(word)


def test_distilled_cfg_is_offered_with_a_flux_model_and_goes_into_the_job(page, server):
    open_generate(page, server)
    expect(page.locator("#f-distilled_cfg_scale")).to_be_hidden()  # not for SD 1.5
    page.select_option("#f-model", "tiny-flux")
    expect(page.locator("#f-distilled_cfg_scale")).to_be_visible()
    page.fill("#f-distilled_cfg_scale", "2.5")
    page.fill("#f-steps", "1")
    page.fill("#f-cfg_scale", "1")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.get_by_role("button", name="Generate", exact=True).click()
    assert request.value.post_data_json["distilled_cfg_scale"] == 2.5
