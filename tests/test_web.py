"""Browser tests of the studio's web UI: Playwright drives Debian's Chromium against the real app on tiny models.

Failures leave a screenshot under test-artifacts/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MODEL = "tiny-sd1"
TIMEOUT_MS = 20_000

if not Path(CHROMIUM).exists():
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need Playwright (pip install playwright)")
expect = sync_api.expect

from web_server import running_studio  # noqa: E402  (after the skips: it imports the server stack)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory, model_home):
    """A home of our own (so the database is ours) that links the session's tiny checkpoints."""
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-home")).ensure()
    for folder in sorted(model_home.model_dir("checkpoint").iterdir()):
        if folder.name in (MODEL, "tiny-sd1-inpaint"):
            (home.model_dir("checkpoint") / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def server(studio_home):
    with running_studio(studio_home) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, request):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    failed_before = request.session.testsfailed
    yield page
    # The call phase has been reported by now, so a failure of this test has been counted.
    if request.session.testsfailed > failed_before or errors:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.errors.txt").write_text("\n".join(errors) or "(no page errors)")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_generate(page, server) -> None:
    page.goto(server.url + "/#/generate")
    expect(page.locator("#f-model option")).not_to_have_count(0)
    page.select_option("#f-model", MODEL)


def set_size(page, width: int, height: int) -> None:
    page.fill("#f-width", str(width))
    page.fill("#f-height", str(height))


def wait_done(page, card) -> None:
    expect(card).to_have_attribute("data-status", "done", timeout=TIMEOUT_MS * 2)


def submit_job(server, recipe: dict, client: str = "test-api") -> dict:
    """Queue a job through the API and wait until it has finished."""
    with httpx.Client(base_url=server.url, headers={"X-Client-Id": client}, timeout=30) as http:
        job = http.post("/api/jobs", json=recipe).raise_for_status().json()
        deadline = time.monotonic() + 60
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = http.get(f"/api/jobs/{job['id']}").raise_for_status().json()
    assert job["status"] == "done", job
    return job


def unlabelled_controls(page) -> list[str]:
    """Visible controls with no accessible name (a <label for>, aria-label, aria-labelledby or button text)."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button, [role=tab]')]
        .filter(el => el.getClientRects().length && el.type !== 'hidden')
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby')
                      && !((el.tagName === 'BUTTON') && el.textContent.trim()))
        .map(el => el.outerHTML.slice(0, 120))""")


# --- tests ---------------------------------------------------------------------------------


def test_generate_shows_step_previews_then_the_result(page, server):
    open_generate(page, server)
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a red apple on a table")
    page.fill("#f-steps", "8")
    page.fill("#f-seed", "1234")
    assert unlabelled_controls(page) == []

    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)

    assert int(card.get_attribute("data-previews")) >= 1, "no step preview arrived over the WebSocket"
    result = card.locator(".result img")
    expect(result).to_have_count(1)
    expect(result).to_have_js_property("complete", True)
    assert result.evaluate("img => img.naturalWidth") == 64
    # The seed of the result can be reused.
    page.get_by_role("button", name=re.compile("Reuse last seed")).click()
    expect(page.locator("#f-seed")).to_have_value("1234")

    # Clicking the result opens the viewer with the recipe.
    card.locator(".result").click()
    viewer = page.locator("dialog.viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".recipe-prompt").first).to_contain_text("a red apple on a table")


def record_job_statuses(page) -> None:
    """Keep every text the job cards' status lines show (the load phase passes quickly on a tiny model)."""
    page.evaluate("""() => {
        window.jobStatuses = [];
        new MutationObserver(() => {
            for (const el of document.querySelectorAll('.job-status')) {
                if (window.jobStatuses.at(-1) !== el.textContent) window.jobStatuses.push(el.textContent);
            }
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")


def test_the_first_job_of_a_model_says_it_is_loading_then_shows_seeds_and_time(page, server, monkeypatch):
    engine = server.studio.engine
    engine.cache.clear()  # as after a restart: the model is not in memory
    load = engine.models._load

    def slow_load(info):  # a real checkpoint takes seconds: long enough for the card's poll to see it too
        time.sleep(2.5)
        return load(info)

    monkeypatch.setattr(engine.models, "_load", slow_load)
    open_generate(page, server)
    page.wait_for_function("async () => (await import('/js/events.js')).eventsConnected()")
    set_size(page, 64, 64)
    page.fill("#f-prompt", "a blue kite")
    page.fill("#f-steps", "3")
    page.fill("#f-seed", "4321")
    page.fill("#f-batch_size", "2")
    record_job_statuses(page)
    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)

    statuses = page.evaluate("window.jobStatuses")
    assert any(s.startswith(f"Loading model '{MODEL}'…") for s in statuses), statuses
    loading = next(i for i, s in enumerate(statuses) if s.startswith("Loading model"))
    assert all(not s.startswith("Step ") for s in statuses[:loading]), "steps were shown before the model had loaded"
    assert not any(s.startswith("Step 0") for s in statuses), statuses
    # The finished card says how long it took, and each image's seed, to make it again or vary it.
    expect(card.locator(".job-status")).to_have_text(re.compile(r"^Done: 2 images in \d+(\.\d)? s(, .* loading the model)?\.$"))
    expect(card.locator(".result-seed")).to_have_text(["Seed 4321", "Seed 4322"])


def test_explanations_open_from_the_keyboard(page, server):
    open_generate(page, server)
    info = page.get_by_role("button", name="What does Steps do?")
    info.focus()
    help_text = page.locator("#help-steps")
    expect(help_text).to_be_visible()
    expect(help_text).to_contain_text("step")
    assert page.locator("#f-steps").get_attribute("aria-describedby") == "help-steps"
    page.keyboard.press("Tab")
    expect(help_text).to_be_hidden()


def test_each_mode_shows_only_its_fields(page, server):
    open_generate(page, server)
    for hidden in ("#f-denoising_strength", "#f-hr_scale", "#mask-editor", "#f-outpaint_pixels"):
        expect(page.locator(hidden)).to_be_hidden()
    page.get_by_role("checkbox", name="Hires fix").check()
    expect(page.locator("#f-hr_scale")).to_be_visible()
    expect(page.locator("#f-hr_upscaler option")).not_to_have_count(0)
    expect(page.locator("#f-denoising_strength")).to_be_visible()
    # Tabs follow the arrow keys.
    page.get_by_role("tab", name="Text to image").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Image to image")).to_be_focused()
    expect(page.get_by_role("tab", name="Image to image")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#f-hr_scale")).to_be_hidden()
    expect(page.locator("#init-image .drop-zone")).to_be_visible()
    page.get_by_role("tab", name="Outpaint").click()
    expect(page.locator("#f-outpaint_pixels")).to_be_visible()
    expect(page.locator("#f-width")).to_be_hidden()
    # The schedule types offered are those of the chosen sampler.
    page.select_option("#f-sampler_name", "DEIS")
    assert page.locator("#f-scheduler option").all_inner_texts() == ["Automatic", "Karras", "Exponential", "SGM Uniform"]
    page.select_option("#f-sampler_name", "DDIM")  # A1111 runs DDIM over its own timesteps, whatever the type
    assert page.locator("#f-scheduler option").all_inner_texts() == ["Automatic (A1111's timesteps)"]


@pytest.fixture(scope="module")
def sdxl_server(tmp_path_factory, model_home):
    """A studio with SD 1.5, SDXL and the SDXL refiner."""
    from localdiffusion.store.home import Home

    home = Home(tmp_path_factory.mktemp("web-sdxl-home")).ensure()
    for name in (MODEL, "tiny-sdxl", "tiny-sdxl-refiner"):
        (home.model_dir("checkpoint") / name).symlink_to((model_home.model_dir("checkpoint") / name).resolve(),
                                                         target_is_directory=True)
    with running_studio(home) as running:
        yield running


def test_the_refiner_is_offered_with_an_sdxl_model_and_goes_into_the_job(page, sdxl_server):
    open_generate(page, sdxl_server)
    expect(page.locator("#refiner-group")).to_be_hidden()  # an SD 1.5 model has no refiner
    page.select_option("#f-model", "tiny-sdxl")
    expect(page.locator("#refiner-group")).to_be_visible()
    assert page.locator("#f-refiner_checkpoint option").all_inner_texts() == ["None", "tiny-sdxl-refiner"]
    page.select_option("#f-refiner_checkpoint", "tiny-sdxl-refiner")
    page.fill("#f-refiner_switch_at", "0.6")
    set_size(page, 64, 64)
    page.fill("#f-steps", "2")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as request:
        page.get_by_role("button", name="Generate", exact=True).click()
    sent = request.value.post_data_json
    assert (sent["refiner_checkpoint"], sent["refiner_switch_at"]) == ("tiny-sdxl-refiner", 0.6)
    page.select_option("#f-model", MODEL)
    expect(page.locator("#refiner-group")).to_be_hidden()


def test_paint_a_mask_and_inpaint(page, server, tmp_path):
    source = tmp_path / "source.png"
    Image.new("RGB", (128, 96), (40, 120, 200)).save(source)
    open_generate(page, server)
    page.get_by_role("tab", name="Inpaint").click()
    page.set_input_files("#init-image-file", str(source))
    expect(page.locator("#init-image .drop-status")).to_contain_text("128 × 96")
    expect(page.locator("#f-width")).to_have_value("128")

    canvas = page.locator("#mask-editor .mask-paint")
    expect(canvas).to_have_js_property("width", 128)
    page.fill("#mask-editor input[type=range]", "12")
    canvas.evaluate("el => el.scrollIntoView({block: 'center'})")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    assert page.evaluate("document.querySelector('#mask-editor').hasMask()")

    page.fill("#f-prompt", "a yellow sun")
    page.fill("#f-steps", "4")
    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    wait_done(page, card)
    expect(card.locator(".result img")).to_have_count(1)

    job = httpx.get(f"{server.url}/api/jobs/{card.get_attribute('data-job-id')}").json()
    recipe = job["recipe"]
    assert recipe["mode"] == "inpaint" and recipe["init_image"] and recipe["mask"]
    mask = Image.open(server.studio.home.root / recipe["mask"]).convert("L")
    assert mask.size == (128, 96)
    assert mask.getpixel((64, 48)) > 200, "the painted stroke is white in the mask"
    assert mask.getpixel((5, 5)) < 50 and mask.getpixel((64, 5)) < 50, "unpainted areas are black"


def test_empty_mask_is_refused_next_to_the_mask(page, server, tmp_path):
    source = tmp_path / "source.png"
    Image.new("RGB", (64, 64), "white").save(source)
    open_generate(page, server)
    page.get_by_role("tab", name="Inpaint").click()
    page.set_input_files("#init-image-file", str(source))
    expect(page.locator("#f-width")).to_have_value("64")
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#err-mask")).to_contain_text("mask is empty")
    expect(page.locator(".job")).to_have_count(0)


def test_server_refusals_show_next_to_the_field(page, server):
    open_generate(page, server)
    set_size(page, 100, 64)
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#err-width")).to_contain_text("multiple of 8")
    expect(page.locator("#f-width")).to_have_attribute("aria-invalid", "true")


def test_gallery_search_view_and_reuse_settings(page, server):
    job = submit_job(server, {"prompt": "a quiet lighthouse at dusk", "model": MODEL, "width": 64, "height": 64,
                              "steps": 5, "cfg_scale": 5.5, "seed": 777, "sampler_name": "Euler"})
    image_id = job["result"]["images"][0]

    page.goto(server.url + "/#/gallery")
    page.fill("#gallery-search", "lighthouse")
    tile = page.locator(f".grid li[data-id='{image_id}'] button")
    expect(tile).to_be_visible()
    expect(page.locator(".grid li")).to_have_count(1)
    expect(tile.locator("img")).to_have_attribute("loading", "lazy")
    tile.click()

    viewer = page.locator("dialog.viewer")
    expect(viewer.locator(".recipe")).to_contain_text("a quiet lighthouse at dusk")
    expect(viewer.locator(".recipe-list")).to_contain_text("777")
    viewer.get_by_role("button", name="☆ Star").click()
    expect(viewer.get_by_role("button", name="★ Starred")).to_have_attribute("aria-pressed", "true")
    viewer.get_by_role("button", name="Use these settings").click()

    expect(page.locator("#page-generate")).to_be_visible()
    expect(page.locator("#f-prompt")).to_have_value("a quiet lighthouse at dusk")
    expect(page.locator("#f-seed")).to_have_value("777")
    expect(page.locator("#f-steps")).to_have_value("5")
    expect(page.locator("#f-cfg_scale")).to_have_value("5.5")
    expect(page.locator("#f-sampler_name")).to_have_value("Euler")
    expect(page.locator("#f-model")).to_have_value(MODEL)
    expect(page.locator("#f-width")).to_have_value("64")


def test_dropping_a_png_reads_its_settings(page, server):
    job = submit_job(server, {"prompt": "a paper boat", "model": MODEL, "width": 64, "height": 64, "steps": 3, "seed": 4242})
    page.goto(server.url + "/#/gallery")
    expect(page.locator(".toolbar h2")).to_have_text("Gallery")
    # A drop from another program: a File in a DataTransfer, dropped on the page.
    page.evaluate("""async (url) => {
        const blob = await (await fetch(url)).blob();
        const data = new DataTransfer();
        data.items.add(new File([blob], 'from-elsewhere.png', {type: 'image/png'}));
        document.querySelector('main').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
    }""", f"/api/images/{job['result']['images'][0]}/file")
    dialog = page.locator("dialog.pnginfo")
    expect(dialog).to_contain_text("a paper boat")
    dialog.get_by_role("button", name="Use these settings").click()
    expect(page.locator("#f-prompt")).to_have_value("a paper boat")
    expect(page.locator("#f-seed")).to_have_value("4242")


def test_send_to_img2img_uploads_the_image(page, server):
    job = submit_job(server, {"prompt": "a green hill", "model": MODEL, "width": 64, "height": 64, "steps": 3, "seed": 5})
    page.goto(server.url + "/#/gallery")
    page.locator(f".grid li[data-id='{job['result']['images'][0]}'] button").click()
    page.locator("dialog.viewer").get_by_role("button", name="Send to img2img").click()
    expect(page.get_by_role("tab", name="Image to image")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#init-image .drop-status")).to_contain_text("64 × 64")
    expect(page.locator("img.input-preview")).to_be_visible()
    expect(page.locator("#f-prompt")).to_have_value("a green hill")
    # Outpainting the same image previews the larger canvas: 128 pixels more on the right by default.
    page.get_by_role("tab", name="Outpaint").click()
    expect(page.locator("canvas.outpaint-preview")).to_have_js_property("width", 192)
    expect(page.locator("[data-field=outpaint] .hint").last).to_contain_text("192 × 64")


def test_cancel_a_running_job(page, server):
    open_generate(page, server)
    set_size(page, 128, 128)
    page.fill("#f-prompt", "a very long job")
    page.fill("#f-steps", "150")
    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.locator(".job").first
    expect(card.locator(".job-status")).to_contain_text("Step", timeout=TIMEOUT_MS * 2)
    card.get_by_role("button", name="Cancel").click()
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(card.locator(".job-status")).to_have_text("Cancelled.")
    expect(card.locator(".result")).to_have_count(0)


def test_models_page_lists_models_and_refuses_a_bad_path(page, server):
    page.goto(server.url + "/#/models")
    rows = page.locator("table.models tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(MODEL)
    expect(rows.first).to_contain_text("sd1")
    page.fill("#model-path", "/nowhere/at/all.safetensors")
    page.get_by_role("button", name="Add model").click()
    expect(page.locator("#model-path")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".form-message")).not_to_have_text("Adding…")
    page.get_by_role("button", name="Rescan folders").click()
    expect(page.locator(".form-message")).to_contain_text("scanned again")
    assert unlabelled_controls(page) == []


def test_without_models_the_studio_explains_how_to_add_one(browser, tmp_path):
    from localdiffusion.store.home import Home

    with running_studio(Home(tmp_path / "empty-home").ensure()) as empty:
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(empty.url)
            callout = page.get_by_role("region", name="No models yet")
            expect(callout).to_be_visible(timeout=TIMEOUT_MS)
            expect(callout).to_contain_text("models add")
            expect(page.get_by_role("button", name="Generate", exact=True)).to_be_disabled()
        finally:
            context.close()
