"""The studio in a browser once the home has accounts: two participants and a facilitator, each in their own
browser context, sign in, generate with the tiny model, and each sees only their own gallery."""

from __future__ import annotations

import re

import pytest

from test_web import MODEL, TIMEOUT_MS, browser, expect, set_size, wait_done  # noqa: F401  (browser: the fixture)

from web_server import running_studio  # noqa: E402

PEOPLE = {"ann": ("participant", "ann-password-1"), "bo": ("participant", "bo-password-22"),
          "fay": ("facilitator", "fay-password-333")}


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_home):
    from localdiffusion.store.accounts import Accounts
    from localdiffusion.store.db import Database
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-accounts")).ensure()
    (home.model_dir("checkpoint") / MODEL).symlink_to((model_home.model_dir("checkpoint") / MODEL).resolve(),
                                                      target_is_directory=True)
    with Database(home.db_path) as db:
        for name, (role, password) in PEOPLE.items():
            Accounts(db).add(name, password, role)
    with running_studio(home) as running:
        yield running


def signed_in_page(browser, server, name: str, errors: list[str]):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"{name}: {error}"))
    page.goto(server.url + "/#/generate")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator(".top nav")).to_be_hidden()
    page.fill("#signin-username", name)
    page.fill("#signin-password", "not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".signin-form [role=alert]")).to_contain_text("not right")
    page.fill("#signin-password", PEOPLE[name][1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".user-menu summary")).to_have_text(f"{name} · {PEOPLE[name][0]}")
    return context, page


def fill_generate(page, prompt: str) -> None:
    """The Generate page filled for a quick tiny-model image of `prompt`."""
    page.goto(page.url.split("#")[0] + "#/generate")
    expect(page.locator("#f-model option")).not_to_have_count(0)
    page.select_option("#f-model", MODEL)
    set_size(page, 64, 64)
    page.fill("#f-prompt", prompt)
    page.fill("#f-steps", "2")


def generate(page, prompt: str) -> None:
    fill_generate(page, prompt)
    page.get_by_role("button", name="Generate", exact=True).click()
    wait_done(page, page.locator(".job").first)


def gallery_prompts(page) -> list[str]:
    page.goto(page.url.split("#")[0] + "#/gallery")
    page.wait_for_load_state("networkidle")
    return page.evaluate("async () => (await (await fetch('/api/images')).json()).items.map(i => i.prompt)")


def test_two_participants_and_a_facilitator_each_see_their_own_gallery(browser, server):
    errors: list[str] = []
    people = {name: signed_in_page(browser, server, name, errors) for name in PEOPLE}
    try:
        for name, (_, page) in people.items():
            generate(page, f"a lighthouse drawn by {name}")
        for name, (_, page) in people.items():
            assert gallery_prompts(page) == [f"a lighthouse drawn by {name}"], name
            expect(page.locator(".grid li")).to_have_count(1)
        # the user menu: API tokens (shown once), then log out back to the sign-in page
        ann = people["ann"][1]
        ann.locator(".user-menu summary").click()
        ann.get_by_role("button", name="My API tokens").click()
        ann.fill("#token-label", "script")
        ann.get_by_role("button", name="New token").click()
        expect(ann.locator(".token-new code")).to_have_text(re.compile(r"^ldp_"))
        expect(ann.locator(".token-list li")).to_contain_text("script")
        ann.get_by_role("button", name="Close").click()
        ann.get_by_role("button", name="Log out").click()  # the menu is still open
        expect(ann.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        for context, _ in people.values():
            context.close()
    assert not errors, errors
