"""Working together in a browser: a facilitator and two participants, each in their own browser context. A
participant shares an image and the other uses its settings from the class wall; the facilitator hides it.
A class comic with a panel for each participant: each fills their own, the API refuses the other's, and each
page updates live as the other works."""

from __future__ import annotations

from test_web import TIMEOUT_MS, browser, expect  # noqa: F401  (browser: the fixture)
from test_web_accounts import generate, server, signed_in_page  # noqa: F401  (server: the fixture)
from test_web_comic import use_fast_style, wait_saved


def people(browser, server, errors):
    return {name: signed_in_page(browser, server, name, errors) for name in ("fay", "ann", "bo")}


def close(everyone) -> None:
    for context, _ in everyone.values():
        context.close()


def test_a_shared_image_on_the_wall_gives_its_settings_and_a_facilitator_hides_it(browser, server):
    errors: list[str] = []
    everyone = people(browser, server, errors)
    fay, ann, bo = (everyone[name][1] for name in ("fay", "ann", "bo"))
    try:
        expect(ann.locator("#f-model option")).not_to_have_count(0, timeout=TIMEOUT_MS)  # on a busy machine
        generate(ann, "a lighthouse for the whole class")
        ann.goto(server.url + "/#/gallery")
        ann.locator(".grid .thumb").first.click()
        share = ann.locator("dialog.viewer .share-wall")
        expect(share).to_have_text("Share to class wall", timeout=TIMEOUT_MS)
        share.click()
        expect(share).to_have_attribute("aria-pressed", "true", timeout=TIMEOUT_MS)
        ann.keyboard.press("Escape")

        bo.goto(server.url + "/#/wall")
        item = bo.locator(".wall-item", has_text="a lighthouse for the whole class")
        expect(item).to_contain_text("by ann", timeout=TIMEOUT_MS)
        expect(item.locator(".wall-picture img")).to_have_js_property("complete", True, timeout=TIMEOUT_MS)
        assert item.locator(".wall-picture img").evaluate("img => img.naturalWidth") > 0  # through the wall's address
        item.get_by_role("button", name="Use these settings").click()
        expect(bo).to_have_url(server.url + "/#/generate", timeout=TIMEOUT_MS)
        expect(bo.locator("#f-prompt")).to_have_value("a lighthouse for the whole class", timeout=TIMEOUT_MS)
        expect(bo.locator("#f-steps")).to_have_value("2", timeout=TIMEOUT_MS)

        fay.goto(server.url + "/#/wall")
        fays = fay.locator(".wall-item", has_text="a lighthouse for the whole class")
        fays.get_by_role("button", name="Hide").click()
        expect(fays).to_contain_text("Hidden by fay", timeout=TIMEOUT_MS)
        bo.goto(server.url + "/#/wall")
        bo.locator("#wall-refresh").click()
        expect(bo.locator(".wall-grid li.empty")).to_have_text("Nothing is shared yet.", timeout=TIMEOUT_MS)  # loaded, and hidden
        expect(bo.locator(".wall-item", has_text="a lighthouse for the whole class")).to_have_count(0)
        assert not errors, errors
    finally:
        close(everyone)


def open_comic(page, server, title: str) -> None:
    page.goto(server.url + "/#/comic")
    page.get_by_role("link", name=title).click()
    expect(page.locator(".comic-editor")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator(".comic-svg .comic-panel")).to_have_count(4, timeout=TIMEOUT_MS)


def select_panel(page, panel_id: str) -> None:
    page.locator(f'.comic-panel[data-panel="{panel_id}"] .panel-hit').click()


def status_of_put(page, url: str, body: dict) -> int:
    """What the API answers this page's user (with its CSRF token) to a PUT."""
    return page.evaluate("""async ([url, body]) => {
        const { request } = await import("/js/api.js");
        try { await request("PUT", url, body); return 200; } catch (error) { return error.status; }
    }""", [url, body])


def test_a_class_comic_each_fills_their_own_panel_and_sees_the_others_live(browser, server):
    errors: list[str] = []
    everyone = people(browser, server, errors)
    fay, ann, bo = (everyone[name][1] for name in ("fay", "ann", "bo"))
    try:
        fay.goto(server.url + "/#/comic")
        fay.fill("#comic-new-title", "Our harbour")
        fay.locator("#comic-new-class").check()
        fay.get_by_role("button", name="Create comic").click()
        expect(fay.locator("#comic-class-info")).to_contain_text("Class comic", timeout=TIMEOUT_MS)
        use_fast_style(fay)
        wait_saved(fay)
        first, second = fay.locator(".comic-svg .comic-panel").evaluate_all("els => els.map(e => e.dataset.panel)")[:2]
        for panel, name in ((first, "ann"), (second, "bo")):
            select_panel(fay, panel)
            fay.select_option("#comic-assignee", name)
            expect(fay.locator("#toast")).to_contain_text(f"The panel is {name}'s now.", timeout=TIMEOUT_MS)
        project_id = fay.url.split("/")[-1]

        open_comic(ann, server, "Our harbour")
        open_comic(bo, server, "Our harbour")
        expect(ann.locator("#comic-class-info")).to_contain_text("you fill the 1 panel assigned to you", timeout=TIMEOUT_MS)
        select_panel(bo, first)  # ann's panel, locked on bo's page
        expect(bo.locator(".panel-locked")).to_have_text("This panel is ann's: only ann (and the facilitator) change it.", timeout=TIMEOUT_MS)

        select_panel(ann, first)
        ann.fill("#comic-action", "a boat leaves the harbour")
        wait_saved(ann)
        expect(bo.locator("#comic-action")).to_have_value("a boat leaves the harbour", timeout=TIMEOUT_MS)  # live, without a reload
        # the API refuses each the other's panel
        assert status_of_put(bo, f"/api/comics/{project_id}/panels/{first}", {"action": "bo was here"}) == 403
        assert status_of_put(ann, f"/api/comics/{project_id}/panels/{second}", {"action": "ann was here"}) == 403

        select_panel(bo, second)
        expect(bo.locator(".panel-locked")).to_have_count(0, timeout=TIMEOUT_MS)
        bo.fill("#comic-action", "gulls over the pier")
        bo.fill("#comic-candidates", "1")
        bo.locator("#comic-generate").click()
        # bo's candidate lands in bo's panel on ann's page and on the facilitator's, as it finishes
        for page in (ann, fay, bo):
            expect(page.locator(f'.comic-panel[data-panel="{second}"] image')).to_have_count(1, timeout=TIMEOUT_MS * 3)
        select_panel(ann, second)
        expect(ann.locator("#comic-action")).to_have_value("gulls over the pier", timeout=TIMEOUT_MS)
        assert not errors, errors
    finally:
        close(everyone)


def test_a_client_id_asked_before_the_session_token_was_known_does_not_block_the_pages(browser, server):
    """The event socket asks for a client id as the modules load, before the page knows its session's CSRF
    token; that request is refused. Once the token is known the pages ask again, rather than wait for it
    (which made "This page could not load" now and then, with three people signing in at once)."""
    errors: list[str] = []
    context, page = signed_in_page(browser, server, "ann", errors)
    try:
        held = []

        def hold_the_first_without_a_token(route):
            if "x-csrf-token" not in route.request.headers and not held:
                held.append(route)  # still on its way while the page starts
                return
            route.continue_()

        page.evaluate("sessionStorage.clear()")  # no client id yet: the next start asks for one
        page.route("**/api/clients", hold_the_first_without_a_token)
        page.reload()
        expect(page.locator("#f-model option")).not_to_have_count(0, timeout=TIMEOUT_MS)
        assert held, "the socket's early request was not seen"
        held[0].continue_()
        expect(page.locator("#page-generate")).not_to_contain_text("could not load")
        assert not errors, errors
    finally:
        context.close()
