"""Hardening against hostile or careless requests: no upload stalls the server, every size is checked
before anything is allocated, and every bad value is a 4xx sentence (issue 23)."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import pytest
from PIL import Image, PngImagePlugin

from localdiffusion.infotext import MAX_INFOTEXT
from localdiffusion.metadata.stealth import write_stealth

from web_server import running_studio


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stealth_bomb() -> bytes:
    """A 20 MB parameter line without a colon, gzip-compressed into the alpha bits of a 400x400 PNG."""
    return png_bytes(write_stealth(Image.new("RGB", (400, 400), "white"), "a" * 20_000_000))


@pytest.fixture(scope="module")
def long_line() -> bytes:
    """A PNG whose `parameters` text is one line of word characters without a colon, just under the limit:
    A1111's regex took 1.5 s for 20,000 such characters and 6.2 s for 40,000, holding the GIL."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a" * (MAX_INFOTEXT - 1))
    return png_bytes(Image.new("RGB", (8, 8)), pnginfo=info)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from localdiffusion.store.home import Home

    with running_studio(Home(tmp_path_factory.mktemp("hardening-home")).ensure()) as running:
        yield running


def post_png_info(client: httpx.Client, route: str, data: bytes) -> httpx.Response:
    if route == "/api/pnginfo":
        return client.post(route, files={"file": ("image.png", data, "image/png")})
    return client.post(route, json={"image": base64.b64encode(data).decode("ascii")})


@pytest.mark.parametrize("route", ["/api/pnginfo", "/sdapi/v1/png-info"])
@pytest.mark.parametrize("upload", ["stealth_bomb", "long_line"])
def test_a_malicious_png_info_upload_never_stalls_other_requests(server, route, upload, request):
    data = request.getfixturevalue(upload)
    answer: dict[str, object] = {}
    with httpx.Client(base_url=server.url, timeout=30) as uploading, httpx.Client(base_url=server.url, timeout=30) as other:

        def send() -> None:
            started = time.perf_counter()
            answer["response"] = post_png_info(uploading, route, data)
            answer["seconds"] = time.perf_counter() - started

        uploader = threading.Thread(target=send)
        uploader.start()
        waits = []
        while True:  # other requests, timed while the upload is in flight (at least one)
            started = time.perf_counter()
            assert other.get("/api/status").status_code == 200
            waits.append(time.perf_counter() - started)
            if not uploader.is_alive():
                break
        uploader.join()
    assert max(waits) < 0.5, waits
    assert answer["seconds"] < 1.0
    response = answer["response"]
    if upload == "stealth_bomb":
        assert response.status_code == 400
        body = response.json()
        assert body["field"] == ("file" if route == "/api/pnginfo" else "image")
        assert body["detail"].startswith("The text hidden in the image's pixels (stealth_pnginfo) is more than 262,144 bytes")
        assert "above the limit of 65,536 characters" in body["detail"]
    else:
        assert response.status_code == 200, response.text
        body = response.json()
        prompt = body["fields"]["prompt"] if route == "/api/pnginfo" else body["parameters"]["Prompt"]
        assert prompt == "a" * (MAX_INFOTEXT - 1)
