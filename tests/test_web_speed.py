"""The Generate page's speed aids in a real browser: the few-step suggestion (applied only on a click), the time
estimate near the Generate button, and the decoder choice, shown with the image it made."""

from __future__ import annotations

import re
import shutil

import pytest

from test_web import MODEL, browser, expect, open_generate, page, set_size, unlabelled_controls, wait_done  # noqa: F401

TURBO = "sd_turbo_tiny"


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd1_folder):
    from test_fast_cpu import build_taesd
    from web_server import running_studio

    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-speed-home")).ensure()
    (home.model_dir("checkpoint") / MODEL).symlink_to(sd1_folder.resolve(), target_is_directory=True)
    shutil.copytree(sd1_folder, home.model_dir("checkpoint") / TURBO)
    build_taesd(1).save_pretrained(home.model_dir("vae-approx") / "taesd")
    with running_studio(home) as running:
        yield running


def test_a_few_step_model_is_suggested_its_settings_and_they_apply_only_on_a_click(page, server):
    open_generate(page, server)
    page.fill("#f-steps", "20")
    page.fill("#f-cfg_scale", "7")
    page.select_option("#f-model", TURBO)
    hint = page.locator("#fast-preset")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("This looks like a few-step model")
    expect(page.locator("#f-steps")).to_have_value("20")  # nothing changes by itself
    hint.get_by_role("button", name="Use its settings").click()
    expect(page.locator("#f-steps")).to_have_value("1")
    expect(page.locator("#f-cfg_scale")).to_have_value("1")
    expect(page.locator("#f-sampler_name")).to_have_value("Euler a")
    expect(page.locator("#f-scheduler")).to_have_value("SGM Uniform")
    expect(hint).to_be_hidden()

    page.select_option("#f-model", MODEL)
    expect(hint).to_be_hidden()  # an ordinary model gets no suggestion


def test_the_estimate_and_the_decoder_choice(page, server):
    open_generate(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a lighthouse at dusk")
    page.fill("#f-steps", "2")
    estimate = page.locator("#gen-estimate")
    expect(estimate).to_have_text("No estimate yet: this machine has not run this model.")
    expect(page.locator("#f-vae-decode")).to_be_visible()  # a TAESD for SD1 is installed
    page.select_option("#f-vae-decode", "fast")
    assert unlabelled_controls(page) == []

    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)
    expect(card).to_contain_text("decoded with TAESD (fast)")

    page.fill("#f-steps", "3")  # a change asks again; the finished run is now history
    expect(estimate).to_have_text(re.compile(r"About \d+ (s|min) on this machine\."))

    card.locator(".result").click()
    viewer = page.locator("dialog.viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".meta")).to_contain_text("decoded with TAESD (fast)")
