"""The studio's pages and /docs work under the server's Content-Security-Policy, and a tab's client id is its own.

Browser tests (Debian's Chromium through Playwright), on the fixtures of test_web.py.
"""

from __future__ import annotations

import httpx

from test_web import browser, expect, open_generate, page, server, set_size, studio_home, wait_done  # noqa: F401

# Every CSP refusal the page meets, as "directive blocked-URL".
RECORD_VIOLATIONS = """window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));"""
PAGES = ["generate", "gallery", "models", "comic", "compare", "guide"]


def test_the_studio_works_under_its_content_security_policy(page, server):  # noqa: F811
    page.add_init_script(RECORD_VIOLATIONS)
    open_generate(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a lighthouse under a strict policy")
    page.fill("#f-steps", "4")
    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)
    # The previews (WEBP data URLs over the event socket) and the result (an image URL of this server) showed.
    assert int(card.get_attribute("data-previews")) >= 1
    expect(card.locator(".result img")).to_have_js_property("complete", True)
    for name in PAGES:
        page.goto(f"{server.url}/#/{name}")
        expect(page.locator(f"#page-{name}")).to_be_visible()
        page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__csp") == []


def test_the_api_docs_render_offline_under_the_policy(page, server):  # noqa: F811
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Local Diffusion")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.evaluate("window.__csp") == []


def test_a_tab_keeps_its_issued_client_id_to_itself(page, server):  # noqa: F811
    open_generate(page, server)
    secret = page.evaluate("sessionStorage.getItem('localdiffusion.client')")
    assert secret and len(secret) >= 32
    job = page.evaluate("""async () => (await fetch('/api/jobs', {method: 'POST', headers: {'Content-Type': 'application/json',
        'X-Client-Id': sessionStorage.getItem('localdiffusion.client')},
        body: JSON.stringify({prompt: 'mine', steps: 1, width: 64, height: 64})})).json()""")
    # Another client (a script) sees the job but not the id, and cannot cancel it.
    with httpx.Client(base_url=server.url, timeout=30) as other:
        seen = other.get(f"/api/jobs/{job['id']}").text
        assert secret not in seen
        assert other.delete(f"/api/jobs/{job['id']}").status_code in (403, 409)
