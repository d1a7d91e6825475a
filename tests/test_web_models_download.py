"""Browser test of a first model from the studio: the empty Generate page offers the table's public checkpoints
that fit this machine; one click downloads one from a local stand-in for the hub (HF_ENDPOINT) with a progress
bar, and the model is ready to use without a rescan; the Models page shows its licence."""

from __future__ import annotations

import json

import pytest

from test_web import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, expect, sync_api  # noqa: F401  (skips without a browser)
from test_model_download import FILENAME, REPO, FakeHub
from test_provenance import extra_row
from web_server import running_studio

from localdiffusion.models.hashing import sha256_file
from localdiffusion.models.provenance import EXTRA_TABLES_VARIABLE
from localdiffusion.store.home import Home
from factories import build_single_file


@pytest.fixture()
def empty_studio(tmp_path, sd1_folder, monkeypatch):
    tiny = build_single_file(sd1_folder, tmp_path / "src" / FILENAME)
    hub = FakeHub(tiny.read_bytes())
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"models": [{**extra_row(sha256_file(tiny), tiny.stat().st_size), "repo": REPO, "filename": FILENAME}]}))
    monkeypatch.setenv(EXTRA_TABLES_VARIABLE, str(table))
    with running_studio(Home(tmp_path / "home").ensure()) as server:
        yield server, hub
    hub.close()


def test_empty_generate_page_downloads_a_first_model(empty_studio):
    server, hub = empty_studio
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/#/generate")
        offer = page.locator('article.model-offer[data-model="test-tiny"]')
        expect(offer).to_contain_text("Test Licence 1.0")
        expect(offer).to_contain_text("Tests.")
        offer.get_by_role("button", name="Download Tiny test checkpoint").click()
        expect(page.locator("#f-model option", has_text="tiny")).to_have_count(1)  # ready to generate, no rescan
        expect(offer.locator("p.offer-message")).to_contain_text("is in the library as tiny")  # the callout is hidden now
        expect(offer.locator("progress")).to_have_attribute("value", "100")
        assert hub.ranges == [None]
        page.goto(server.url + "/#/models")
        row = page.locator("table.models tr", has_text="tiny")
        expect(row).to_contain_text("Test Licence 1.0")
        assert not errors, errors
        browser.close()
