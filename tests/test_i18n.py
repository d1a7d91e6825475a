"""The studio's message catalogues (web/i18n/<language>.json): every language has the same keys, every key is used,
and the pages converted so far show no English when the browser asks for German.

A new language is a new catalogue file; these tests check it the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parent.parent / "src/localdiffusion/web"
CATALOGUES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted((WEB / "i18n").glob("*.json"))}
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def forms(message) -> list[str]:
    return list(message.values()) if isinstance(message, dict) else [message]


def test_english_and_german_exist():
    assert {"en", "de"} <= set(CATALOGUES)


@pytest.mark.parametrize("language", sorted(set(CATALOGUES) - {"en"}))
def test_every_catalogue_has_the_keys_of_the_english_one_and_no_others(language):
    english, other = CATALOGUES["en"], CATALOGUES[language]
    assert sorted(set(english) - set(other)) == [], f"missing in {language}.json"
    assert sorted(set(other) - set(english)) == [], f"in {language}.json but not in en.json"
    for key, message in english.items():
        wanted = {name for text in forms(message) for name in PLACEHOLDER.findall(text)}
        found = {name for text in forms(other[key]) for name in PLACEHOLDER.findall(text)}
        assert found <= wanted, f"{language}.json's {key} names placeholders the code does not give: {found - wanted}"
        if isinstance(message, dict):
            assert "other" in other[key], f"{language}.json's {key} has no 'other' plural form"


def test_every_key_is_used_by_the_studio():
    """A key is used where a script names it as a string ("job.done") or index.html names it in data-i18n."""
    sources = "\n".join(path.read_text(encoding="utf-8") for path in (WEB / "js").glob("*.js"))
    sources += (WEB / "index.html").read_text(encoding="utf-8")
    named = set(re.findall(r"""["'`:]([a-z][\w]*\.[\w.]+)["'`;]""", sources))
    assert sorted(set(CATALOGUES["en"]) - named) == []


def test_every_key_the_studio_names_exists():
    sources = "\n".join(path.read_text(encoding="utf-8") for path in (WEB / "js").glob("*.js"))
    called = set(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", sources))
    html = (WEB / "index.html").read_text(encoding="utf-8")
    called |= set(re.findall(r'data-i18n="([\w.]+)"', html)) | set(re.findall(r":([\w]+\.[\w.]+)", " ".join(
        re.findall(r'data-i18n-attr="([^"]+)"', html))))
    assert sorted(called - set(CATALOGUES["en"])) == []


# --- the converted pages in German (browser) -----------------------------------------------------

try:
    from test_web import MODEL, TIMEOUT_MS, browser, expect, server, studio_home  # noqa: F401  (fixtures)
except pytest.skip.Exception:  # no Chromium or Playwright here: the catalogue checks above still run
    browser = None

ENGLISH_WORDS = re.compile(r"\b(the|and|of|to|with|your|image|images|no|yet|load|more|search|only|starred|skip|menu)\b", re.I)
# The parts of the studio whose words come from the catalogues so far (the rest is converted page by page).
CONVERTED = ["header.top", ".skip-link", "#page-gallery", ".job", "dialog.viewer .viewer-head",
             "dialog.viewer .viewer-actions > :is(button, a):not(.share-wall, .explain-button, .upscale-button)"]
DATA = ".job-prompt, .device, #pref-language"  # a person's prompt, the device name, language names in their own language


def english_left(tab) -> list[str]:
    texts = tab.evaluate("""([roots, data]) => roots.flatMap(sel => [...document.querySelectorAll(sel)])
        .filter(el => el.getClientRects().length)
        .flatMap(el => { const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT); const out = [];
            while (walker.nextNode()) { const node = walker.currentNode; const parent = node.parentElement;
                if (parent.closest(data) || !parent.getClientRects().length) continue;
                if (node.textContent.trim()) out.push(node.textContent.trim()); }
            for (const attr of ['aria-label', 'title', 'placeholder', 'alt']) if (el.getAttribute(attr)) out.push(el.getAttribute(attr));
            return out; })""", [CONVERTED, DATA])
    english, german = CATALOGUES["en"], CATALOGUES["de"]
    patterns = [re.compile(PLACEHOLDER.sub(".*", re.escape(text).replace(r"\{", "{").replace(r"\}", "}")))
                for key, message in english.items() if english[key] != german[key] for text in forms(message)]
    return sorted({text for text in texts if ENGLISH_WORDS.search(text) or any(p.fullmatch(text) for p in patterns)})


@pytest.mark.skipif(browser is None, reason="needs Chromium and Playwright")
def test_the_converted_pages_speak_german_to_a_german_browser(browser, server):  # noqa: F811
    context = browser.new_context(locale="de-DE", viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    try:
        tab.goto(server.url + "/#/generate")
        expect(tab.locator("html")).to_have_attribute("lang", "de")
        expect(tab.locator("nav a[data-page=gallery]")).to_have_text("Galerie")
        tab.select_option("#f-model", MODEL)
        tab.fill("#f-width", "64")
        tab.fill("#f-height", "64")
        tab.fill("#f-steps", "2")
        tab.fill("#f-prompt", "ein Leuchtturm im Sturm")
        tab.locator("#gen-submit").click()
        expect(tab.locator(".job").first).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS * 2)
        assert english_left(tab) == []
        tab.goto(server.url + "/#/gallery")
        expect(tab.locator(".gallery-count")).to_contain_text("Bild")
        assert english_left(tab) == []
        tab.locator(".thumb").first.click()
        expect(tab.locator("dialog.viewer button.star")).to_have_text("☆ Markieren")
        assert english_left(tab) == []
        # The choice in the menu wins over the browser's language and is remembered.
        tab.keyboard.press("Escape")
        tab.select_option("#pref-language", "en")
        expect(tab.locator("html")).to_have_attribute("lang", "en")
        expect(tab.locator("nav a[data-page=gallery]")).to_have_text("Gallery")
        assert english_left(tab), "the check finds nothing even in English, so it could not fail"
    finally:
        context.close()
