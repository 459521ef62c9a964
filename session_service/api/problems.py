"""One error type mapped to RFC 9457 problem+json; never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from session_service.domain.errors import Locked, ServiceError
from session_service.domain.models import BAD_REQUEST, MAX_JSON_DEPTH

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://tab-organizer.dev/problems/"
PROBLEM_JSON = b"application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def accepts_problem_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether ``Accept`` names ``application/problem+json`` (with a q above 0): error
    bodies are ``application/json`` otherwise, the one type the platform's gateway takes."""
    for name, value in headers:
        if name != b"accept":
            continue
        for item in value.split(b","):
            media, *params = item.split(b";")
            if media.strip().lower() != PROBLEM_JSON:
                continue
            q = [p.strip()[2:] for p in params if p.strip().lower().startswith(b"q=")]
            try:
                if not q or float(q[0]) > 0:
                    return True
            except ValueError:
                return True
    return False


def problem(
    status: int,
    detail: str,
    *,
    type_suffix: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + (type_suffix or str(status)),
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)] or ["body"]
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def validation_detail(errors: list[dict[str, Any]]) -> str:
    msgs = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            msgs.append("the body is not valid JSON: " + str(err.get("ctx", {}).get("error", "")))
            continue
        msgs.append(f"{_location(tuple(err.get('loc', ())))}: {err.get('msg')}")
    if len(errors) > 5:
        msgs.append(f"and {len(errors) - 5} more")
    return "; ".join(msgs)


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """FastAPI answers 400 "error parsing the body" for JSON that ``json`` could not take
    apart for reasons other than syntax: say which, as the validation error it is."""
    if exc.status_code != 400:
        return None
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        return f"the body nests JSON too deep: at most {MAX_JSON_DEPTH} levels are allowed"
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not valid JSON: it must be UTF-8 text"
    if isinstance(cause, ValueError):
        return "the body is not valid JSON: a number has too many digits"
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        extra: dict[str, Any] = {}
        if isinstance(exc, Locked):
            extra["operation_id"] = exc.operation_id
        return problem(exc.status, exc.detail, type_suffix=exc.type_suffix, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        status = 400 if errors and all(e["type"] == BAD_REQUEST for e in errors) else 422
        return problem(
            status, validation_detail(list(exc.errors())), type_suffix="validation", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        unparsable = _unparsable_body(exc)
        if unparsable is not None:
            return problem(422, unparsable, type_suffix="validation")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        response = problem(
            500, "internal error; the service log has the details", type_suffix="internal"
        )
        if not accepts_problem_json(request.scope["headers"]):  # answered outside middleware
            response.headers["content-type"] = "application/json"
        return response
