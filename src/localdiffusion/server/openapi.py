"""The OpenAPI schema as the server really answers, and the interactive docs served from this machine.

FastAPI's own schema says every 422 is its `HTTPValidationError` and that every answer is JSON. This
server's errors are all `{"detail", "field", "errors"?, "code"?, "values"?}` (server/app.py), and its pictures, PDFs and
archives are bytes of their own media type; `describe_answers` rewrites the schema to say so, for
every router, so that generated clients parse what comes back.

`/docs` is Swagger UI from the `swagger-ui-bundle-v2` package: no CDN, so it works offline and runs
no third-party code from elsewhere.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

ERROR = "Error"
ERROR_ANSWERS = {
    "400": "A value the server cannot use; `field` names it.",
    "401": "The access token is missing or wrong (only when the server has one).",
    "403": "Refused: another client's job, a page of another origin, or a name the server does not answer to.",
    "404": "No such thing, or not yours; the sentence lists what exists where that helps.",
    "413": "The request body or upload is above the limit (`max_upload_mb` in settings.json).",
    "422": "A field that does not validate; `field` names it and `errors` lists every one.",
    "429": "Too many wrong access tokens from this address; `Retry-After` says when to try again.",
}
ERROR_SCHEMAS = {
    ERROR: {
        "title": ERROR, "type": "object", "required": ["detail", "field"],
        "description": "Every error answer: one sentence for a person, and the request field it is about.",
        "properties": {
            "detail": {"type": "string", "description": "What is wrong and what would be allowed, in one sentence."},
            "field": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "The field the error is about, or null."},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"},
                       "description": "Every invalid field (validation errors, 422, only)."},
            "code": {"type": "string", "description": "A stable name of the error (validation errors: invalid_field), "
                                                      "for a client that shows it in its own language."},
            "values": {"type": "object", "description": "The values the sentence names, for the same purpose."},
        },
    },
    "FieldError": {
        "title": "FieldError", "type": "object", "required": ["field", "message"],
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
    },
}
FASTAPI_ERRORS = ("HTTPValidationError", "ValidationError")
BYTES = {"type": "string", "format": "binary"}


def binary_answers() -> dict[str, tuple[str, ...]]:
    """Path to media types for every route that answers with bytes rather than JSON.

    The media types come from the modules that serve them; tests/test_security.py walks the routers
    and checks that every route returning a file or raw bytes is named here."""
    from localdiffusion.server import comic, explain

    explain_files = tuple(dict.fromkeys(explain.MEDIA_TYPES.values()))
    return {
        "/api/images/{image_id}/file": ("image/png",),
        "/api/images/{image_id}/thumb": ("image/webp",),
        "/api/inputs/{name}": ("image/png",),
        "/api/masks/{op}": ("image/png",),
        "/api/parameters/{name}/illustration.svg": ("image/svg+xml",),
        "/api/images/{image_id}/explanation/files/{name}": explain_files,
        "/api/jobs/{job_id}/files/{name}": explain_files,
        "/api/comics/{project_id}/assets/{name}": ("image/png",),
        "/api/comics/{project_id}/export/{fmt}": tuple(dict.fromkeys(comic.MEDIA.values())),
        "/api/me/work.zip": ("application/zip",),
        "/api/me/export": ("application/zip",),
        "/api/class/export": ("application/zip",),
        "/api/class/join/qr.svg": ("image/svg+xml",),
        "/api/wall/{share_id}/file": ("image/png",),
        "/api/wall/{share_id}/thumb": ("image/webp",),
    }


def answers_bytes(route: APIRoute) -> bool:
    """Whether a route returns a file or raw bytes (its return annotation is a Response other than JSON)."""
    returned = inspect.signature(route.endpoint).return_annotation
    if isinstance(returned, str):  # postponed annotations: the name is enough here
        return returned.endswith("Response") and "JSON" not in returned
    return inspect.isclass(returned) and issubclass(returned, Response) and not issubclass(returned, JSONResponse)


def describe_answers(schema: dict[str, Any], binary: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The schema with the `Error` model for every error answer and binary answers under their media types."""
    error = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            for status, description in ERROR_ANSWERS.items():
                answers[status] = {"description": description, **error}
            for status, answer in answers.items():  # the errors a route declares itself (409, ...) too
                if status.startswith("4"):
                    answer.update(error)
            if path in binary:
                for status, answer in answers.items():
                    if status.startswith("2"):
                        answer["content"] = {media: {"schema": BYTES} for media in binary[path]}
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(ERROR_SCHEMAS)
    text = repr(schema["paths"])
    for name in FASTAPI_ERRORS:
        if f"#/components/schemas/{name}'" not in text:
            schemas.pop(name, None)
    return schema


def use_described_schema(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json) answer the described schema, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = describe_answers(schema, binary_answers())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}: API docs</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""
# A file rather than an inline script, so that the page keeps the studio's Content-Security-Policy.
DOCS_INIT = """SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"});
"""
MISSING_DOCS = ("The API docs page needs the package swagger-ui-bundle-v2 (pip install swagger-ui-bundle-v2); "
                "the schema itself is at /openapi.json.")


def swagger_ui_folder() -> Any | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return swagger_ui_path


def add_docs(app: FastAPI) -> None:
    """`/docs`: Swagger UI from the installed package, reading /openapi.json."""
    folder = swagger_ui_folder()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if folder is None:
            raise HTTPException(404, MISSING_DOCS)
        return HTMLResponse(DOCS_PAGE.format(title=app.title))

    @app.get("/docs/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")

    if folder is not None:
        app.mount("/docs/assets", StaticFiles(directory=str(folder)), name="docs-assets")

