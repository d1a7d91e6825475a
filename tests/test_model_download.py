"""A first model from the studio: downloads of the table's checkpoints from a local HTTP server standing in for
the Hugging Face Hub (HF_ENDPOINT), never the network: progress, resume after a dropped connection, the
published SHA-256 checked, and the model in the library without a rescan."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from localdiffusion.errors import BadInput, OfflineError
from localdiffusion.models.hashing import sha256_file
from localdiffusion.models.hub import download_verified, file_url, partial_path
from localdiffusion.models.provenance import EXTRA_TABLES_VARIABLE
from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

from factories import build_single_file
from test_provenance import extra_row

REPO, FILENAME = "tests/tiny", "tiny.safetensors"


class FakeHub:
    """Serves one file at /{repo}/resolve/main/{filename} with Range support; `drops` requests are cut after
    `drop_after` bytes (the headers promise the whole length, as a dropped connection does)."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.ranges, self.drops, self.drop_after = payload, [], 0, len(payload) // 2
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path != f"/{REPO}/resolve/main/{FILENAME}":
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                hub.ranges.append(wanted)
                start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
                body = hub.payload[start:]
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Length", str(len(body)))
                if wanted:
                    self.send_header("Content-Range", f"bytes {start}-{len(hub.payload) - 1}/{len(hub.payload)}")
                self.end_headers()
                if hub.drops:
                    hub.drops -= 1
                    self.wfile.write(body[:hub.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, sd1_folder) -> Path:
    return build_single_file(sd1_folder, tmp_path_factory.mktemp("tiny") / FILENAME)


@pytest.fixture()
def hub(tiny_file, monkeypatch):
    fake = FakeHub(tiny_file.read_bytes())
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    yield fake
    fake.close()


def test_download_reports_progress_and_checks_the_hash(hub, tiny_file, tmp_path):
    seen: list[tuple[int, int | None]] = []
    target = tmp_path / "models" / FILENAME
    url = file_url(REPO, FILENAME)
    assert url == f"{hub.endpoint}/{REPO}/resolve/main/{FILENAME}"
    download_verified(url, target, sha256_file(tiny_file), len(hub.payload), on_progress=lambda d, t: seen.append((d, t)), chunk=4096)
    assert target.read_bytes() == hub.payload and not partial_path(target).exists()
    assert seen[0] == (0, len(hub.payload)) and seen[-1] == (len(hub.payload), len(hub.payload))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3


def test_a_dropped_download_resumes_from_where_it_stopped(hub, tiny_file, tmp_path):
    target = tmp_path / FILENAME
    hub.drops = 1
    with pytest.raises(OfflineError, match="try again to resume"):
        download_verified(file_url(REPO, FILENAME), target, sha256_file(tiny_file), len(hub.payload), retries=0)
    assert not target.exists() and partial_path(target).stat().st_size == hub.drop_after
    download_verified(file_url(REPO, FILENAME), target, sha256_file(tiny_file), len(hub.payload), retries=0)
    assert hub.ranges == [None, f"bytes={hub.drop_after}-"]  # the second request asked only for the rest
    assert target.read_bytes() == hub.payload and not partial_path(target).exists()


def test_a_drop_is_resumed_within_one_call(hub, tiny_file, tmp_path):
    hub.drops, hub.drop_after = 2, len(hub.payload) // 4
    target = download_verified(file_url(REPO, FILENAME), tmp_path / FILENAME, sha256_file(tiny_file), None)
    assert target.read_bytes() == hub.payload and len(hub.ranges) == 3 and hub.ranges[1] is not None


def test_a_wrong_hash_is_refused_and_nothing_is_left(hub, tmp_path):
    target = tmp_path / FILENAME
    with pytest.raises(BadInput, match=r"not the published 000000000000.*deleted"):
        download_verified(file_url(REPO, FILENAME), target, "0" * 64, len(hub.payload))
    assert list(tmp_path.iterdir()) == []


def test_offline_variable_refuses_before_any_request(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        download_verified(file_url(REPO, FILENAME), tmp_path / FILENAME, "0" * 64)
    assert hub.ranges == []


def _studio_with_table(tmp_path, monkeypatch, row: dict) -> Studio:
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"models": [row]}))
    monkeypatch.setenv(EXTRA_TABLES_VARIABLE, str(table))
    return Studio.open(Home(tmp_path / "home").ensure())


def _wait(client: TestClient, model_id: str) -> dict:
    for _ in range(600):
        (item,) = [d for d in client.get("/api/models/downloads").json() if d["id"] == model_id]
        if item["state"] != "running":
            return item
        time.sleep(0.05)
    raise AssertionError("the download did not finish")


def test_studio_download_adds_the_model_without_a_rescan(hub, tiny_file, tmp_path, monkeypatch):
    studio = _studio_with_table(tmp_path, monkeypatch, {**extra_row(sha256_file(tiny_file), len(hub.payload)), "repo": REPO, "filename": FILENAME})
    with TestClient(create_app(studio)) as client:
        assert client.get("/api/models", params={"kind": "checkpoint"}).json() == []  # scanned once, empty
        row = next(m for m in client.get("/api/models/known").json()["models"] if m["id"] == "test-tiny")
        assert (row["fits"], row["present"], row["downloadable"], row["licence"]) == (True, False, True, "Test Licence 1.0")
        started = client.post("/api/models/downloads", json={"id": "test-tiny"})
        assert started.status_code == 202
        done = _wait(client, "test-tiny")
        assert (done["state"], done["done"], done["total"], done["model"]) == ("done", len(hub.payload), len(hub.payload), "tiny")
        models = client.get("/api/models", params={"kind": "checkpoint"}).json()
        assert [(m["name"], m["provenance"]["known"]) for m in models] == [("tiny", "test-tiny")]
        assert next(m for m in client.get("/api/models/known").json()["models"] if m["id"] == "test-tiny")["present"]
        assert client.post("/api/models/downloads", json={"id": "test-tiny"}).status_code == 409


def test_studio_download_with_a_wrong_hash_leaves_nothing(hub, tmp_path, monkeypatch):
    studio = _studio_with_table(tmp_path, monkeypatch, {**extra_row("f" * 64, len(hub.payload)), "repo": REPO, "filename": FILENAME})
    with TestClient(create_app(studio)) as client:
        client.post("/api/models/downloads", json={"id": "test-tiny"})
        failed = _wait(client, "test-tiny")
        assert failed["state"] == "failed" and "not the published ffffffffffff" in failed["detail"]
        assert list(studio.home.model_dir("checkpoint").iterdir()) == []
        assert client.get("/api/models", params={"kind": "checkpoint"}).json() == []
        unknown = client.post("/api/models/downloads", json={"id": "nope"})
        assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
        assert client.post("/api/models/downloads", json={"id": "sd-turbo"}).status_code == 422  # no published hash
