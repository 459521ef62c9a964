"""OpenAPI that tells the truth: offline docs pages, problem responses, security, ids.

FastAPI's defaults describe a different service: every error as its own
``HTTPValidationError`` JSON, no 404/409/412, no security scheme, Swagger UI
and ReDoc loaded from a CDN (blank offline). This module fixes the document
in one pass over whatever routes the app has when it is first asked for, so a
route added later is documented by the same rules:

* every error response (4xx/5xx) carries the ``Problem`` schema under both
  media types the service answers (``application/json`` by default,
  ``application/problem+json`` when ``Accept`` names it; API.md F);
* statuses every route can answer are added by rule: 400 (repeated or NUL
  headers), 422 (NUL in path or query, validation), 401 (``SESSION_API_KEYS``)
  on all but the open paths, 404 on paths with an id, 413 where there is a body;
* the rest (403, 409, 412, 415, 503, a 404 without an id in the path) is what
  the route declares with ``responses=errors(...)``;
* each operation id is the endpoint function's name (unique, snake_case);
* request and response examples come from ``api.examples``, keyed by operation id.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, routing
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from session_service.api.examples import EXAMPLES

PROBLEM_MEDIA_TYPES = ("application/json", "application/problem+json")
PROBLEM_REF = "#/components/schemas/Problem"
SECURITY_SCHEME = "bearerAuth"

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
SWAGGER_JS = f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{STATIC_URL}/swagger-ui/swagger-ui.css"
FAVICON = f"{STATIC_URL}/swagger-ui/favicon-32x32.png"
REDOC_JS = f"{STATIC_URL}/redoc/redoc.standalone.js"
OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
# Readable without an API key: a browser can't send one to load the page and its scripts.
OPEN_PATHS = frozenset(
    {OPENAPI_URL, DOCS_URL, REDOC_URL, SWAGGER_JS, SWAGGER_CSS, FAVICON, REDOC_JS}
)

DESCRIPTIONS = {
    400: "Bad request: a repeated, non-ASCII or NUL-holding header, or a request the "
    "first service refused with 400 (fewer than two sessions, no parts, unknown model_type)",
    401: "SESSION_API_KEYS is set and no valid 'Authorization: Bearer <key>' was sent",
    403: "X-User-Id may read the session but lacks the permission this needs",
    404: "Not found, or not readable by X-User-Id (existence is not disclosed)",
    409: "State conflict: a session held by an unfinished operation (operation_id names it), "
    "a deleted session, fixed vector parameters, or an operation that already ended",
    412: "If-Match names an older version, or is not a strong ETag this service sent",
    413: "The request body is larger than MAX_BODY_BYTES (an upload: MAX_IMPORT_BYTES)",
    415: "A Content-Type this route can't read",
    422: "Validation failed (malformed JSON, wrong types, limits, NUL characters, "
    "non-finite numbers); errors lists each problem",
    503: "A dependency does not answer; retry after Retry-After",
}


class ValidationItem(BaseModel):
    """One refused field of a validation problem."""

    type: str
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem object; ``detail`` is FastAPI's key, kept for old callers."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://tab-organizer.dev/problems/not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "session 6f1c2b9e-0d7a-4c55-9f0e-1b2c3d4e5f60 not found",
                },
                {
                    "type": "https://tab-organizer.dev/problems/locked",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "session 6f1c... is held by unfinished operation merge-3a9e...; "
                    "wait for it or cancel it",
                    "operation_id": "merge-3a9e41d07c2b4f0c",
                },
            ]
        },
    )

    type: str = Field(description="A URI naming the kind of problem")
    title: str = Field(description="The HTTP status' reason phrase")
    status: int = Field(ge=100, le=599)
    detail: str = Field(description="What went wrong, for a person")
    instance: str | None = Field(default=None, description="Not sent by this service yet")
    errors: list[ValidationItem] | None = Field(
        default=None, description="Validation problems: each refused field"
    )
    operation_id: str | None = Field(
        default=None, description="The operation holding the session, or the one that failed"
    )
    failed: list[str] | None = Field(default=None, description="Readiness: checks that failed")
    checks: dict[str, str] | None = Field(default=None, description="Readiness: every check")


def problem_content() -> dict[str, Any]:
    return {media: {"schema": {"$ref": PROBLEM_REF}} for media in PROBLEM_MEDIA_TYPES}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the problem statuses a route answers beyond the rule-made ones."""
    return {s: {"description": DESCRIPTIONS[s], "content": problem_content()} for s in statuses}


def _is_problem_or_default(response: dict[str, Any]) -> bool:
    """An error response to (re)write as a problem: no content, FastAPI's validation error,
    or already a problem; a route's own schema (``/health``'s 503 body) is kept."""
    refs = {
        media.get("schema", {}).get("$ref")
        for media in response.get("content", {}).values()
        if isinstance(media, dict)
    }
    return not refs or refs <= {PROBLEM_REF, "#/components/schemas/HTTPValidationError", None}


def _add(responses: dict[str, Any], status: int) -> None:
    responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})


def _add_examples(operation: dict[str, Any]) -> None:
    example = EXAMPLES.get(operation.get("operationId", ""))
    if example is None:
        return
    if "request" in example:
        body = operation["requestBody"]["content"]["application/json"]
        body["example"] = example["request"]
    if "response" in example:
        response = operation["responses"][example.get("status", "200")]
        media = response.setdefault("content", {}).setdefault("application/json", {})
        media["example"] = example["response"]


def _finish(schema: dict[str, Any], open_paths: frozenset[str]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    defs = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(problem.pop("$defs", {}))
    defs["Problem"] = problem
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "One of SESSION_API_KEYS; checked only when that is set. "
            "/health, /health/live, /health/ready, /metrics and these docs are open.",
        }
    }
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            _add_examples(operation)
            responses = operation.setdefault("responses", {})
            _add(responses, 400)
            _add(responses, 422)
            if "{" in path:
                _add(responses, 404)
            if "requestBody" in operation:
                _add(responses, 413)
            if path not in open_paths:
                _add(responses, 401)
                responses["401"]["headers"] = {
                    "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
                }
                operation["security"] = [{SECURITY_SCHEME: []}]
            for status, response in responses.items():
                if status[0] in "45" and _is_problem_or_default(response):
                    response["content"] = problem_content()
                    if response.get("description") in (None, "", "Validation Error"):
                        response["description"] = DESCRIPTIONS.get(int(status), "Error")
    for unused in ("HTTPValidationError", "ValidationError"):
        defs.pop(unused, None)
    return schema


def _name_operations(app: FastAPI, schema: dict[str, Any]) -> None:
    """Operation ids are the endpoint functions' names (``operation_id=`` wins): stable
    while the code is, unlike FastAPI's default, which spells out path and method."""
    seen: dict[str, tuple[str, str]] = {}
    for context in routing.iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        name = route.operation_id or route.name
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"operation id {name!r} is not snake_case")
        for method in sorted(context.methods or ()):
            where = (str(context.path_format), method.lower())
            if seen.setdefault(name, where) != where:
                raise ValueError(f"operation id {name!r} names {seen[name]} and {where}")
            schema["paths"][where[0]][where[1]]["operationId"] = name


def install(app: FastAPI, open_paths: frozenset[str]) -> None:
    """Serve /openapi.json, /docs and /redoc from the packaged viewers; build the document
    once, on first use, from every route the app then has. ``open_paths`` need no key."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _name_operations(app, schema)  # before _finish: examples are keyed by it
            app.openapi_schema = _finish(schema, open_paths | OPEN_PATHS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=SWAGGER_JS,
            swagger_css_url=SWAGGER_CSS,
            swagger_favicon_url=FAVICON,
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url=REDOC_JS,
            redoc_favicon_url=FAVICON,
            with_google_fonts=False,
        )
