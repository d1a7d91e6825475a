"""Accessibility of every page of the studio: axe-core finds no critical or serious problem in either colour scheme or
on a phone, a phone never scrolls sideways, focus stays visible and is never lost, and the whole way from a prompt to a
starred image works from the keyboard alone.

The routes come from main.js's route table, so a page added there without passing these checks fails them.
Each page's phone-size dark-mode screenshot is kept under test-artifacts/a11y/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_web import ARTIFACTS, MODEL, TIMEOUT_MS, browser, expect, server, studio_home  # noqa: F401  (fixtures)
from a11y import assert_no_serious_violations

MAIN_JS = Path(__file__).resolve().parent.parent / "src/localdiffusion/web/js/main.js"
PHONE = {"width": 390, "height": 844}
TABLET = {"width": 820, "height": 1180}
DESKTOP = {"width": 1360, "height": 900}


def studio_routes() -> list[str]:
    """The page names of main.js's `PAGES` table (its keys, one per line: `name: { init: ...`)."""
    table = re.search(r"const PAGES = \{(.*?)\n\};", MAIN_JS.read_text(), re.S)
    assert table, "main.js has no `const PAGES = {...};` route table"
    return re.findall(r"^\s*(\w+): \{ init:", table.group(1), re.M)


ROUTES = studio_routes()


@pytest.fixture()
def open_page(browser, request):  # noqa: F811
    """`open_page(route, viewport=..., color_scheme=..., locale=...)`: a fresh tab on a studio route, ready."""
    contexts = []
    errors: list[str] = []

    def opener(url, *, viewport=DESKTOP, color_scheme="light", locale="en-GB", has_touch=False):
        context = browser.new_context(viewport=viewport, color_scheme=color_scheme, locale=locale, has_touch=has_touch)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(url)
        expect(tab.locator("body[data-ready=true]")).to_have_count(1)
        tab.wait_for_load_state("networkidle")
        return tab

    yield opener
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_the_route_table_is_read():
    assert {"generate", "gallery", "models", "compare", "guide"} <= set(ROUTES)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("route", ROUTES)
def test_every_page_passes_axe_in_both_colour_schemes(open_page, server, route, scheme):  # noqa: F811
    tab = open_page(f"{server.url}/#/{route}", color_scheme=scheme)
    expect(tab.locator(f"#page-{route}")).to_be_visible()
    assert_no_serious_violations(tab, f"#/{route} ({scheme})")


@pytest.mark.parametrize("route", ROUTES)
def test_every_page_fits_a_phone_and_passes_axe_there(open_page, server, route):  # noqa: F811
    tab = open_page(f"{server.url}/#/{route}", viewport=PHONE, color_scheme="dark")
    expect(tab.locator(f"#page-{route}")).to_be_visible()
    (ARTIFACTS / "a11y").mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "a11y" / f"phone-dark-{route}.png"), full_page=True)
    overflow = tab.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"#/{route} scrolls sideways on a 390 px phone by {overflow} px"
    assert_no_serious_violations(tab, f"#/{route} (phone, dark)")


# --- keyboard, focus and theme ---------------------------------------------------------------

FOCUSED_IS_BODY = "() => !document.activeElement || document.activeElement === document.body"


def tab_to(tab, selector: str, limit: int = 200, key: str = "Tab") -> int:
    """Press Tab until the focused element matches `selector`; focus must never fall back to the page body."""
    for presses in range(1, limit + 1):
        tab.keyboard.press(key)
        assert not tab.evaluate(FOCUSED_IS_BODY), f"focus fell back to the page body after {presses} Tabs"
        if tab.evaluate("(s) => document.activeElement.matches(s)", selector):
            return presses
    raise AssertionError(f"{selector} was not reached in {limit} Tabs")


CONTRAST = """(el) => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                              return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const ring = lum(rgb(getComputedStyle(el).outlineColor));
  const page = lum(rgb(getComputedStyle(document.body).backgroundColor));
  return (Math.max(ring, page) + 0.05) / (Math.min(ring, page) + 0.05);
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_focus_ring_is_visible_against_the_page(open_page, server, scheme):  # noqa: F811
    tab = open_page(f"{server.url}/#/generate", color_scheme=scheme)
    tab_to(tab, "#gen-submit")
    submit = tab.locator("#gen-submit")
    assert submit.evaluate("el => getComputedStyle(el).outlineStyle") == "solid"
    assert submit.evaluate(CONTRAST) >= 3, "the focus ring has less than 3:1 contrast with the page"


def test_skip_links_reach_the_content_and_the_generate_button_early(open_page, server):  # noqa: F811
    tab = open_page(f"{server.url}/#/gallery")
    assert tab_to(tab, ".skip-link[data-skip=generate]") <= 2
    tab.keyboard.press("Enter")
    expect(tab.locator("#gen-submit")).to_be_focused()
    expect(tab.locator("#page-generate")).to_be_visible()
    tab.keyboard.press("Shift+Tab")
    assert not tab.evaluate(FOCUSED_IS_BODY)


def test_the_theme_menu_switches_and_is_remembered(open_page, server):  # noqa: F811
    tab = open_page(f"{server.url}/#/generate", color_scheme="light")
    light = tab.evaluate("() => getComputedStyle(document.body).backgroundColor")
    tab.select_option("#pref-theme", "dark")
    expect(tab.locator("html")).to_have_attribute("data-theme", "dark")
    dark = tab.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert dark != light
    tab.reload()
    expect(tab.locator("body[data-ready=true]")).to_have_count(1)
    expect(tab.locator("html")).to_have_attribute("data-theme", "dark")
    assert tab.evaluate("() => getComputedStyle(document.body).backgroundColor") == dark
    tab.select_option("#pref-theme", "system")
    expect(tab.locator("html")).not_to_have_attribute("data-theme", "dark")


def test_reduced_motion_stops_animations(open_page, server):  # noqa: F811
    tab = open_page(f"{server.url}/#/gallery")
    tab.emulate_media(reduced_motion="reduce")
    assert tab.evaluate("""() => { const probe = document.createElement('div');
        probe.style.animation = 'spin 1s infinite'; probe.style.transition = 'opacity 1s';
        document.body.append(probe); const s = getComputedStyle(probe);
        const out = [s.animationName, s.transitionDuration]; probe.remove(); return out; }""") == ["none", "0s"]


def test_a_phone_folds_the_pages_behind_a_menu(open_page, server):  # noqa: F811
    tab = open_page(f"{server.url}/#/generate", viewport=PHONE)
    compare = tab.locator("nav a[data-page=compare]")
    expect(compare).to_be_hidden()
    tab.get_by_role("button", name="Menu").click()
    expect(compare).to_be_visible()
    compare.click()
    expect(tab.locator("#page-compare")).to_be_visible()
    expect(compare).to_be_hidden()  # the menu closes once a page is chosen
    tab.goto(f"{server.url}/#/generate")
    expect(tab.locator("#gen-submit")).to_be_visible()
    tab.get_by_role("link", name="Jump to the results").click()
    expect(tab.locator("#output-title")).to_be_focused()
    expect(tab.locator("#output-title")).to_be_in_viewport()


def test_from_prompt_to_a_starred_image_with_the_keyboard_alone(open_page, server):  # noqa: F811
    tab = open_page(f"{server.url}/#/generate")
    tab_to(tab, "#f-prompt")
    tab.keyboard.type("a lighthouse by the keyboard")
    tab_to(tab, "#f-model")
    for _ in range(10):  # arrow keys pick the model in the closed list
        if tab.locator("#f-model").input_value() == MODEL:
            break
        tab.keyboard.press("ArrowDown")
    assert tab.locator("#f-model").input_value() == MODEL
    for name, value in (("#f-width", "64"), ("#f-height", "64"), ("#f-steps", "4")):
        tab_to(tab, name)
        tab.keyboard.press("Control+a")
        tab.keyboard.type(value)
    tab_to(tab, "#gen-submit")
    tab.keyboard.press("Enter")
    card = tab.locator(".job").first
    expect(card).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS * 2)
    result = card.locator(".result img")
    expect(result).to_have_attribute("alt", "a lighthouse by the keyboard")
    expect(tab.locator("#announce-polite")).to_contain_text("Done")

    tab_to(tab, ".job .result")
    tab.keyboard.press("Enter")
    viewer = tab.locator("dialog.viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".viewer-image img:not(.explain-overlay)")).to_have_attribute("alt", "a lighthouse by the keyboard")
    tab_to(tab, "dialog.viewer button.star")
    tab.keyboard.press("Space")
    expect(viewer.locator("button.star")).to_have_attribute("aria-pressed", "true")
    tab.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(card.locator(".result")).to_be_focused()  # focus returns to the image that opened the viewer


@pytest.mark.parametrize("viewport, shown", [(PHONE, True), (TABLET, False)])
def test_the_comic_editor_says_on_a_phone_that_it_needs_a_larger_screen(open_page, server, viewport, shown):  # noqa: F811
    tab = open_page(f"{server.url}/#/comic", viewport=viewport, has_touch=True)
    note = tab.locator("#page-comic .needs-larger-screen")
    expect(note).to_be_visible() if shown else expect(note).to_be_hidden()
