"""The reference library over HTTP: search (words, meaning, facets), prompts like yours, sources, styles, imports
(an upload or a server path; facilitators only on a class server) and the NSFW threshold."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from library_data import A1111_STYLES_CSV, CIVITAI_RESPONSE, write_diffusiondb, write_image_folder
from test_accounts import add_class, basic

from localdiffusion.server.app import create_app
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home

pytest.importorskip("pyarrow")


@pytest.fixture()
def client(tmp_path):
    home = Home(tmp_path / "home").ensure()
    with TestClient(create_app(Studio.open(home), start_worker=False)) as c:
        yield c


def test_import_a_server_path_and_an_upload_then_search_them(client, tmp_path):
    parquet = write_diffusiondb(tmp_path / "metadata.parquet")
    r = client.post("/api/library/imports", json={"path": str(parquet)})
    assert r.status_code == 201 and r.json()["added"] == 5
    assert client.post("/api/library/imports", json={"path": str(parquet)}).json()["added"] == 0
    upload = client.post("/api/library/imports", files={"file": ("styles.csv", A1111_STYLES_CSV, "text/csv")},
                         data={"source_name": "Class styles", "licence": "CC0 1.0"})
    assert upload.status_code == 201, upload.text
    assert upload.json()["styles_added"] == 3 and upload.json()["source"] == "Class styles"

    found = client.get("/api/library/search", params={"q": "kitten napping on the couch", "semantic": "true"}).json()
    top = found["entries"][0]
    assert top["prompt"].startswith("a photo of a cat") and top["licence"] == "CC0 1.0"
    assert {"id", "prompt", "negative_prompt", "source", "licence", "score", "settings", "url", "thumb"} <= set(top)
    assert "source" in found["facets"] and "size" in found["facets"]
    words = client.get("/api/library/search", params={"q": "painting", "sampler": "DDIM"}).json()["entries"]
    assert [e["settings"]["sampler_name"] for e in words] == ["DDIM"]
    bad = client.get("/api/library/search", params={"q": "x", "size": "big"})
    assert bad.status_code == 400 and bad.json()["field"] == "size"

    sources = client.get("/api/library/sources").json()
    assert [(s["name"], s["entries"]) for s in sources] == [("DiffusionDB", 5), ("Class styles", 3)]
    assert [s["name"] for s in client.get("/api/library/styles").json()] == ["Cinematic", "Watercolour", "Plain"]


def test_prompts_like_yours_and_more_like_this(client, tmp_path):
    client.post("/api/library/imports", json={"path": str(write_diffusiondb(tmp_path / "m.parquet"))})
    like = client.get("/api/library/similar", params={"prompt": "an elderly sailor painted in oils"}).json()
    assert like["entries"][0]["prompt"].startswith("portrait of an old fisherman") and len(like["entries"]) == 4
    # four visible entries, each sampler once: the nearest entry's wins the tie
    assert like["typical"] == {"cfg_scale": 7.2, "steps": 35, "sampler_name": "DDIM", "width": 512, "height": 512}
    more = client.get("/api/library/similar", params={"id": like["entries"][0]["id"], "count": 2}).json()
    assert len(more["entries"]) == 2 and like["entries"][0]["id"] not in [e["id"] for e in more["entries"]]


def test_save_as_style_and_thumbnails_of_imported_pictures(client, tmp_path):
    assert client.post("/api/library/styles", json={"name": "Mine", "prompt": "{prompt}, ink"}).status_code == 201
    assert client.get("/api/library/styles").json() == [{"name": "Mine", "prompt": "{prompt}, ink", "negative_prompt": ""}]
    assert client.post("/api/library/styles", json={"name": "  "}).status_code == 400
    folder = write_image_folder(tmp_path / "pics")
    client.post("/api/library/imports", json={"path": str(folder), "kind": "images"})
    (entry,) = client.get("/api/library/search", params={"q": "dunes"}).json()["entries"]
    picture = client.get(entry["thumb"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/webp"
    assert client.get("/api/library/images/999/thumb").status_code == 404


def test_a_malformed_upload_is_one_sentence_naming_the_line(client):
    r = client.post("/api/library/imports", files={"file": ("list.csv", b"name,prompt\nA,b,c,d\n", "text/csv")},
                    data={"kind": "styles"})
    assert r.status_code == 400 and "list.csv, line 2" in r.json()["detail"]


def test_on_a_class_server_only_facilitators_import_and_set_the_threshold(tmp_path):
    home = Home(tmp_path / "home").ensure()
    add_class(home)
    civitai = tmp_path / "civitai.json"
    civitai.write_text(json.dumps(CIVITAI_RESPONSE))
    with TestClient(create_app(Studio.open(home), start_worker=False)) as c:
        assert c.post("/api/library/imports", json={"path": str(civitai)}, headers=basic("ann")).status_code == 403
        assert c.put("/api/library/settings", json={"nsfw_threshold": 1}, headers=basic("ann")).status_code == 403
        # a facilitator uploads: a path on the server, or everyone's gallery, is the server owner's to publish
        assert c.post("/api/library/imports", json={"path": str(civitai)}, headers=basic("fay")).status_code == 403
        assert c.post("/api/library/imports", files={"file": ("x.json", b"{}", "application/json")}, data={"kind": "gallery"},
                      headers=basic("fay")).status_code == 403
        uploaded = c.post("/api/library/imports", files={"file": ("civitai.json", civitai.read_bytes(), "application/json")},
                          data={"kind": "civitai"}, headers=basic("fay"))
        assert uploaded.status_code == 201, uploaded.text
        # styles are the class's: a participant cannot replace one
        assert c.post("/api/library/styles", json={"name": "Cinematic", "prompt": "mine"}, headers=basic("ann")).status_code == 403
        assert c.post("/api/library/styles", json={"name": "Cinematic", "prompt": "ours"}, headers=basic("fay")).status_code == 201
        hidden = c.get("/api/library/search", params={"q": "explicit"}, headers=basic("ann")).json()["entries"]
        assert hidden == []
        assert c.put("/api/library/settings", json={"nsfw_threshold": 1}, headers=basic("fay")).json() == {"nsfw_threshold": 1.0}
        shown = c.get("/api/library/search", params={"q": "explicit"}, headers=basic("ann")).json()["entries"]
        assert [e["prompt"] for e in shown] == ["something explicit"]
        assert c.get("/api/library/search", params={"q": "x"}).status_code == 401
