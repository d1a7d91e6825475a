"""Who may ask what: client secrets, Host and Origin checks, the access token, body limits, headers and the schema."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from localdiffusion.server import a1111, api, comic, control, explain, finish, wall
from localdiffusion.server.app import BodyLimitMiddleware, create_app
from localdiffusion.server.auth import FailureThrottle
from localdiffusion.server.openapi import answers_bytes, binary_answers
from localdiffusion.server.studio import Studio
from localdiffusion.store.home import Home, Settings

from test_server_api import RECIPE, linked_home

EVIL = "http://evil.example"


def studio_app(home: Home, token: str | None = None, **settings):
    if settings:
        home.save_settings(Settings(**settings))
    return create_app(Studio.open(home, token=token), start_worker=False)


@pytest.fixture()
def bare(tmp_path):
    """A studio without models or token, whose worker does not run."""
    with TestClient(studio_app(Home(tmp_path / "home").ensure())) as c:
        yield c


@pytest.fixture()
def idle(tmp_path, model_home):
    """A studio with the tiny models whose worker does not run, so that jobs stay queued."""
    with TestClient(studio_app(linked_home(tmp_path / "home", model_home))) as c:
        yield c


def new_secret(client: TestClient) -> str:
    answer = client.post("/api/clients")
    assert answer.status_code == 201
    return answer.json()["client"]


def closed_with_policy_violation(client: TestClient, url: str, **kwargs) -> str:
    """Open the socket (the server accepts it, then closes it with 1008): the reason it gave."""
    with client.websocket_connect(url, **kwargs) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    return closed.value.reason


# --- 1. a client id is a secret ------------------------------------------------------------------


def test_the_server_issues_client_secrets_and_never_shows_them(idle):
    mine, theirs = new_secret(idle), new_secret(idle)
    assert mine != theirs and len(mine) >= 32
    job = idle.post("/api/jobs", json=RECIPE, headers={"X-Client-Id": theirs}).json()
    # Whoever asks (the owner, another client, someone with no id at all) never learns the submitter's id.
    for headers in ({"X-Client-Id": mine}, {"X-Client-Id": theirs}, {}):
        seen = idle.get(f"/api/jobs/{job['id']}", headers=headers).json()
        assert "client" not in seen and theirs not in json.dumps(seen)
    assert theirs not in json.dumps(job) and "client" not in job
    assert theirs not in idle.get("/api/jobs", headers={"X-Client-Id": theirs}).text
    assert idle.get("/api/jobs", headers={"X-Client-Id": mine}).json() == []
    # Only the secret's holder can cancel.
    for headers in ({"X-Client-Id": mine}, {}):
        refused = idle.delete(f"/api/jobs/{job['id']}", headers=headers)
        assert refused.status_code == 403 and "another client" in refused.json()["detail"]
    assert idle.delete(f"/api/jobs/{job['id']}", headers={"X-Client-Id": theirs}).json()["status"] == "cancelled"


def test_a_caller_cannot_claim_the_names_the_server_gives_itself(idle):
    # The A1111 API's jobs run as `a1111:<address>`, scripts without an id as `api:<address>`.
    for name in ("a1111:testclient", "api:testclient"):
        answer = idle.get("/api/jobs", headers={"X-Client-Id": name})
        assert answer.status_code == 400 and answer.json()["field"] == "X-Client-Id" and "POST /api/clients" in answer.json()["detail"]
        assert "POST /api/clients" in closed_with_policy_violation(idle, f"/api/events?client={name}")


# --- 2. Host and Origin ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost:7860", "127.0.0.1:1234", "[::1]:7860", "LOCALHOST", "127.0.0.1"])
def test_the_names_of_this_machine_are_answered(bare, host):
    assert bare.get("/api/status", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7860", "localhost.evil.example", "127.0.0.1.nip.io:7860", ""])
def test_other_host_names_are_refused_without_a_token(bare, host):
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 sends its own name as Host."""
    for path in ("/api/status", "/", "/sdapi/v1/options", "/openapi.json"):
        answer = bare.get(path, headers={"Host": host})
        assert answer.status_code == 403, (path, host)
        assert "allowed_hosts" in answer.json()["detail"] and answer.json()["field"] is None
    assert bare.post("/api/models/rescan", headers={"Host": host}).status_code == 403
    assert "not one this server answers to" in closed_with_policy_violation(bare, "/api/events", headers={"Host": host})


def test_allowed_hosts_adds_names(tmp_path):
    app = studio_app(Home(tmp_path / "home").ensure(), allowed_hosts=["studio.lan", "pi.lan:8080"])
    with TestClient(app) as c:
        assert c.get("/api/status", headers={"Host": "studio.lan:7860"}).status_code == 200
        assert c.get("/api/status", headers={"Host": "pi.lan:8080"}).status_code == 200
        assert c.get("/api/status", headers={"Host": "pi.lan:7860"}).status_code == 403
        assert c.post("/api/models/rescan", headers={"Host": "localhost:7860", "Origin": "http://studio.lan"}).status_code == 200


def test_with_a_token_any_host_name_is_answered(tmp_path):
    with TestClient(studio_app(Home(tmp_path / "home").ensure(), token="a-long-enough-token")) as c:
        headers = {"Host": "studio.example.org", "Authorization": "Bearer a-long-enough-token"}
        assert c.get("/api/status", headers=headers).status_code == 200
        refused = c.post("/api/models/rescan", headers={**headers, "Origin": EVIL})
        assert refused.status_code == 403, "a page of another origin is refused in every mode"


def png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pages_of_other_origins_cannot_change_anything(bare):
    file = {"file": ("a.png", png_bytes(), "image/png")}
    for origin in (EVIL, "http://localhost:9999", "null"):
        headers = {"Origin": origin, "Host": "localhost:7860"}
        for method, path, kwargs in [("POST", "/api/uploads", {"files": file}), ("POST", "/api/pnginfo", {"files": file}),
                                     ("POST", "/sdapi/v1/interrupt", {}), ("POST", "/api/models/rescan", {}),
                                     ("POST", "/sdapi/v1/refresh-checkpoints", {}), ("DELETE", "/api/jobs/1", {})]:
            answer = bare.request(method, path, headers=headers, **kwargs)
            assert answer.status_code == 403, (origin, path)
            assert answer.json()["detail"].startswith(f"A page from {origin}")
        assert "A page from" in closed_with_policy_violation(bare, "/api/events", headers=headers)
    # Browsers that send no Origin but say where the request came from.
    assert bare.post("/api/models/rescan", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    # The studio's own pages, scripts without an Origin, and reading (which a browser keeps from other origins) pass.
    own = {"Origin": "http://localhost:7860", "Host": "localhost:7860", "Sec-Fetch-Site": "same-origin"}
    assert bare.post("/api/uploads", files=file, headers=own).status_code == 201
    assert bare.post("/api/uploads", files=file).status_code == 201
    assert bare.get("/api/status", headers={"Origin": EVIL}).status_code == 200
    with bare.websocket_connect("/api/events", headers=own) as ws:
        ws.close()


# --- 3. the access token: the address wins, wrong ones are throttled, the socket closes with 1008 --


def test_a_token_in_the_address_replaces_a_stale_cookie(tmp_path):
    app = studio_app(Home(tmp_path / "home").ensure(), token="the-new-token-after-restart")
    with TestClient(app, cookies={"ld_token": "the-old-token-before-restart"}) as browser:
        assert browser.get("/api/status").status_code == 401
        opened = browser.get("/?token=the-new-token-after-restart", follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"].endswith("/")
        assert "ld_token=the-new-token-after-restart" in opened.headers["set-cookie"]
        browser.cookies.set("ld_token", "the-new-token-after-restart")
        assert browser.get("/api/status").status_code == 200


def test_a_socket_without_the_token_is_closed_with_1008(tmp_path):
    with TestClient(studio_app(Home(tmp_path / "home").ensure(), token="a-long-enough-token")) as c:
        assert "access token" in closed_with_policy_violation(c, "/api/events")
        with c.websocket_connect("/api/events", headers={"Authorization": "Bearer a-long-enough-token"}) as ws:
            ws.close()


def test_wrong_tokens_are_throttled_per_address(tmp_path):
    app = studio_app(Home(tmp_path / "home").ensure(), token="a-long-enough-token")
    with TestClient(app) as c:
        for _ in range(20):  # one stale cookie sent again and again is not someone guessing
            assert c.get("/api/status", headers={"Authorization": "Bearer stale"}).status_code == 401
        for guess in range(9):
            assert c.get("/api/status", headers={"Authorization": f"Bearer guess-{guess}"}).status_code == 401
        throttled = c.get("/api/status", headers={"Authorization": "Bearer a-long-enough-token"})
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
        assert re.search(r"try again in \d+ seconds", throttled.json()["detail"])
        assert "try again" in closed_with_policy_violation(c, "/api/events")


def test_the_throttle_forgets_after_its_window():
    now = [0.0]
    throttle = FailureThrottle(limit=3, window=60, clock=lambda: now[0])
    for token in ("a", "b", "c"):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1", token)
        now[0] += 10
    assert throttle.wait("10.0.0.1") == 30 and throttle.wait("10.0.0.2") == 0  # until the first one is a minute old
    now[0] = 61
    assert throttle.wait("10.0.0.1") == 0


def test_a_non_ascii_token_is_refused_not_an_error(tmp_path):
    with TestClient(studio_app(Home(tmp_path / "home").ensure(), token="a-long-enough-token")) as c:
        basic = "Basic " + base64.b64encode("ld:tökén".encode()).decode()
        assert c.get("/api/status", headers={"Authorization": basic}).status_code == 401


# --- 4. the body limit counts what arrives ----------------------------------------------------------


def test_a_chunked_body_above_the_limit_is_refused(tmp_path):
    app = studio_app(Home(tmp_path / "home").ensure(), max_upload_mb=1)  # a body limit of 2.5 MiB
    chunks = (b"x" * 2**20 for _ in range(4))  # no Content-Length: sent chunked
    with TestClient(app) as c:
        answer = c.post("/sdapi/v1/png-info", content=chunks, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "above the limit of 2 MiB" in answer.json()["detail"]


def test_the_body_limit_stops_reading_at_the_limit():
    pulled, sent = [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": len(pulled) < 100}

    async def send(message):
        sent.append(message)

    async def reads_everything(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the whole body was read")

    limited = BodyLimitMiddleware(reads_everything, limit=5000)
    asyncio.run(limited({"type": "http", "method": "POST", "path": "/", "headers": []}, receive, send))
    assert len(pulled) == 6 and sent[0]["status"] == 413


# --- 5 and 6. the schema, the docs and the headers ----------------------------------------------------


def test_the_schema_describes_every_error_answer(bare):
    schema = bare.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/Error"}
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) > 50
    for path, method, operation in operations:
        for status in ("400", "404", "413", "422"):
            assert operation["responses"][status]["content"]["application/json"]["schema"] == error, (path, method, status)
    cancel = schema["paths"]["/api/jobs/{job_id}"]["delete"]["responses"]["409"]
    assert cancel["content"]["application/json"]["schema"] == error and "finished" in cancel["description"]
    assert set(schema["components"]["schemas"]["Error"]["properties"]) == {"detail", "field", "errors", "code", "values"}
    assert "HTTPValidationError" not in json.dumps(schema)
    # The schema matches what a validation error really answers.
    answer = bare.post("/api/jobs", json={"steps": "many"})
    assert answer.status_code == 422 and set(answer.json()) <= {"detail", "field", "errors", "code", "values"}
    assert {"detail", "field", "errors"} <= set(answer.json())


def test_the_schema_declares_binary_answers_with_their_media_types(bare):
    schema = bare.get("/openapi.json").json()
    export = schema["paths"]["/api/comics/{project_id}/export/{fmt}"]["get"]["responses"]["200"]["content"]
    assert {"application/pdf", "application/vnd.comicbook+zip", "image/png"} <= set(export)
    image = schema["paths"]["/api/images/{image_id}/file"]["get"]["responses"]["200"]["content"]
    assert image == {"image/png": {"schema": {"type": "string", "format": "binary"}}}
    # Every route that returns a file or raw bytes is named, so that none is left declared as JSON.
    routers = [api.router, control.router, comic.router, explain.router, finish.router, wall.router, *a1111_routers()]
    files = {route.path_format for router in routers for route in router.routes if isinstance(route, APIRoute) and answers_bytes(route)}
    assert files and files <= set(binary_answers()), files - set(binary_answers())


def a1111_routers():
    from localdiffusion.server.a1111 import controlnet, routes

    return [routes.router, controlnet.router]


def test_the_docs_page_loads_nothing_from_elsewhere(bare):
    pytest.importorskip("swagger_ui_bundle", reason="the docs page needs swagger-ui-bundle-v2")
    page = bare.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text), "the docs page loads code from another server"
    for asset in re.findall(r"(?:src|href)=\"(/docs/[^\"]+)\"", page.text):
        assert bare.get(asset).status_code == 200, asset
    assert bare.get("/redoc").status_code == 404  # ReDoc has no offline package; it is not offered


@pytest.mark.parametrize("path", ["/", "/api/status", "/api/images/999", "/docs", "/openapi.json"])
def test_every_answer_carries_the_security_headers(bare, path):
    headers = bare.get(path).headers
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_the_web_ui_has_no_inline_script():
    from localdiffusion.server.app import WEB_DIR

    html = (WEB_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and "<style" not in html and " style=" not in html
