"""The facilitator's console in a browser: a facilitator and a participant, each in their own context. The
facilitator freezes the participant (whose Generate button then says why), unfreezes them, pauses the queue,
moves a job to the front and resumes; the participant's finished job shows what it used; the presenter view
shows the facilitator's generation from another tab."""

from __future__ import annotations

import re

from test_web import TIMEOUT_MS, browser, expect, wait_done  # noqa: F401  (browser: the fixture)
from test_web_accounts import fill_generate, server, signed_in_page  # noqa: F401  (server: the fixture, the class of three)


def test_the_facilitator_runs_the_class_from_the_console(browser, server):
    errors: list[str] = []
    fay_context, fay = signed_in_page(browser, server, "fay", errors)
    ann_context, ann = signed_in_page(browser, server, "ann", errors)
    try:
        # only the facilitator has the console
        expect(fay.locator("nav a[data-page=console]")).to_be_visible()
        expect(ann.locator("nav a[data-page=console]")).to_be_hidden()
        fay.locator("nav a[data-page=console]").click()
        row = fay.locator(".console-people tr[data-user=ann]")
        expect(row).to_contain_text("ann")

        # freeze: ann's Generate button says why
        fay.get_by_role("button", name="Freeze ann").click()
        expect(row.locator("td.frozen")).to_have_text("paused")
        fill_generate(ann, "a lighthouse")
        generate = ann.get_by_role("button", name="Generate", exact=True)
        generate.click()
        refusal = ann.locator(".submit-row .form-error")
        expect(refusal).to_be_visible()
        expect(refusal).to_contain_text("paused by the facilitator")
        fay.get_by_role("button", name="Unfreeze ann").click()
        expect(row.locator("td.frozen")).to_have_text("no")

        # pause, queue two jobs, move the second to the front, resume
        fay.get_by_role("button", name="Pause all").click()
        expect(fay.locator(".console-queue-state")).to_contain_text("paused")
        expect(fay.locator(".console-workers tbody tr")).to_have_count(1)  # the server's one local worker
        expect(fay.locator(".console-workers tbody tr")).to_contain_text("local-0")
        generate.click()
        expect(refusal).to_be_hidden()
        expect(ann.locator(".job")).to_have_count(1)
        ann.fill("#f-prompt", "a second lighthouse")
        generate.click()
        expect(ann.locator(".job")).to_have_count(2)
        rows = fay.locator(".console-queue tbody tr")
        expect(rows).to_have_count(2)
        first, second = rows.nth(0).get_attribute("data-job"), rows.nth(1).get_attribute("data-job")
        assert first and second and int(first) < int(second)
        fay.get_by_role("button", name=f"Move job {second} to the front").click()
        expect(rows.nth(0)).to_have_attribute("data-job", second)
        expect(rows.nth(0)).to_contain_text("(front)")
        fay.get_by_role("button", name="Resume all").click()
        expect(fay.locator(".console-queue-state")).to_contain_text("running")
        for card in (ann.locator(".job").nth(0), ann.locator(".job").nth(1)):
            wait_done(ann, card)
        # each finished card says what its job used
        expect(ann.locator(".job .job-usage").first).to_contain_text(re.compile(r"Ran on cpu · [\d.]+ GPU-seconds · ≈ .*estimate"))
        audit = fay.locator(".console-audit li")
        expect(audit.first).to_contain_text("resume", timeout=TIMEOUT_MS)
        expect(fay.locator(".console-audit")).to_contain_text("front")
        expect(fay.locator(".console-total")).to_contain_text("2 jobs")

        # the presenter view follows the facilitator's generation from another tab
        present = fay_context.new_page()
        present.on("pageerror", lambda error: errors.append(f"present: {error}"))
        present.goto(server.url + "/#/present")
        expect(present.locator("#page-present")).to_have_attribute("data-live", "true", timeout=TIMEOUT_MS)
        expect(present.locator("header.top")).to_be_hidden()
        expect(present.locator(".present-caption")).to_have_text("Waiting for the next generation…")  # fay made nothing yet
        # ... then the next one: its finished image replaces it
        fill_generate(fay, "a lighthouse for the room")
        fay.get_by_role("button", name="Generate", exact=True).click()
        wait_done(fay, fay.locator(".job").first)
        expect(present.locator(".present-image")).to_have_attribute("src", re.compile(r"^/api/images/\d+/file$"))
        expect(present.locator(".present-caption")).to_contain_text("a lighthouse for the room")
    finally:
        ann_context.close()
        fay_context.close()
    assert not errors, errors
