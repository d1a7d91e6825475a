"""Screenshots of the facilitator's console and the presenter view for the README (docs/images/console*.png).

    PYTHONPATH=src python scripts/console_screenshots.py [--chromium /usr/bin/chromium]

A throwaway home with a small class (no model is needed: the queue is paused, finished jobs and images are
recorded directly), the real server, Playwright's Chromium; each PNG is reduced to a palette to stay small.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from localdiffusion.jobs import Event  # noqa: E402
from localdiffusion.recipe import Recipe  # noqa: E402
from localdiffusion.store.accounts import Accounts  # noqa: E402
from localdiffusion.store.db import Database  # noqa: E402
from localdiffusion.store.home import Home  # noqa: E402
from localdiffusion.store.png import png_with_metadata  # noqa: E402
from web_server import running_studio  # noqa: E402

PEOPLE = {"fay": "facilitator", "ann": "participant", "bo": "participant", "cy": "participant"}
PASSWORD = "a-password-for-screens"


def picture(seed: int) -> Image.Image:
    image = Image.new("RGB", (512, 512), (30 + seed * 40, 60, 120))
    draw = ImageDraw.Draw(image)
    draw.rectangle((200, 120, 300, 420), fill=(240, 240, 230))  # a lighthouse, roughly
    draw.polygon([(190, 120), (310, 120), (250, 60)], fill=(200, 40, 40))
    draw.rectangle((0, 420, 512, 512), fill=(20, 40, 90))
    return image


def prepare(home: Home, studio) -> None:
    recipe = Recipe(prompt="a lighthouse at dusk, watercolour", model="tiny-sd1", steps=20, width=512, height=512)
    for n, name in enumerate(("ann", "bo", "fay")):
        owner = studio.accounts.get(name).owner_id
        path = home.outputs / f"{name}.png"
        path.write_bytes(png_with_metadata(picture(n), recipe.prompt, recipe.model_dump_json()))
        studio.db.add_image(path=path, recipe_json=recipe.model_dump_json(), width=512, height=512, prompt=recipe.prompt, owner_id=owner)
        job = studio.queue.submit(recipe, owner)
        studio.queue.claim(1.0)
        studio.queue.record_run(job.id, "cuda:0 (NVIDIA RTX 4070)" if n < 2 else "cpu", 42.0 + 17 * n)
        studio.queue.finish(job.id, {"images": []})
    studio.queue.pause()
    for name in ("ann", "bo", "ann"):
        studio.queue.submit(recipe, studio.accounts.get(name).owner_id)
    studio.accounts.set_frozen("cy", True)


def save_small(data: bytes, target: Path) -> None:
    image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=64)
    image.save(target, optimize=True)
    print(f"{target.relative_to(ROOT)}: {target.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        home = Home(Path(folder)).ensure()
        with Database(home.db_path) as db:
            for name, role in PEOPLE.items():
                Accounts(db).add(name, PASSWORD, role)
        with running_studio(home) as server, sync_playwright() as playwright:
            prepare(home, server.studio)
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            page = context.new_page()
            page.goto(server.url + "/")
            page.fill("#signin-username", "fay")
            page.fill("#signin-password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.locator(".user-menu summary").wait_for()
            page.goto(server.url + "/#/console")
            page.reload()  # a fresh start as the signed-in facilitator
            page.locator(".console-people tr[data-user=ann]").wait_for()
            page.get_by_role("button", name="Turn joining on").click()
            page.get_by_role("button", name="Turn joining off").wait_for()
            page.fill("#join-address", "http://studio.lan:7860/")
            page.get_by_role("button", name="Save", exact=True).click()
            page.locator(".console-qr figcaption", has_text="studio.lan").wait_for()
            page.locator("#toast").wait_for(state="hidden")
            time.sleep(0.5)
            page.evaluate("window.scrollTo(0, 0)")
            save_small(page.screenshot(full_page=True), args.out / "console.png")
            present = context.new_page()
            present.set_viewport_size({"width": 960, "height": 600})
            present.goto(server.url + "/#/present")
            present.locator("#page-present[data-live=true]").wait_for(state="attached")
            fay = server.studio.accounts.get("fay").owner_id
            image = server.studio.db.list_images(fay, 0, 1)[0].id
            server.studio.events.publish(Event("done", 999, fay, "", {"status": "done", "result": {
                "images": [image], "infotexts": ["a lighthouse at dusk, watercolour"]}}))
            present.locator(".present-image:not([hidden])").wait_for()
            time.sleep(0.5)
            save_small(present.screenshot(), args.out / "console-present.png")
            browser.close()


if __name__ == "__main__":
    main()
