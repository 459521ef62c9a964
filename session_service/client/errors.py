"""Typed errors of the client: one class per status a caller handles differently.

Every error answer of the service is a problem object (API.md section F); its
fields are kept on the exception so a caller can branch on ``type`` or show
``detail`` without parsing anything.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class SessionServiceError(Exception):
    """Anything the client raises: an error answer, or no answer at all."""


class ConnectionFailed(SessionServiceError):
    """The service could not be reached (refused, reset, timed out), after the retries."""


class ApiError(SessionServiceError):
    """A 4xx/5xx answer; ``problem`` is its problem+json body, its fields are attributes."""

    def __init__(
        self, status: int, problem: dict[str, Any], *, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type") or "about:blank")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or problem.get("title") or "")
        self.retry_after = retry_after
        super().__init__(f"{status}: {self.detail}" if self.detail else str(status))


class BadRequest(ApiError):
    """400: the first service's bad requests (fewer than two sessions to merge, ...)."""


class Unauthorized(ApiError):
    """401: a missing or unknown API key."""


class Forbidden(ApiError):
    """403: the caller can read the session but not change it."""


class NotFound(ApiError):
    """404: unknown, or not visible to the caller."""


class Conflict(ApiError):
    """409: a state conflict, e.g. a session held by another operation."""


class PreconditionFailed(ApiError):
    """412: ``If-Match`` named a version that is no longer current."""


class PayloadTooLarge(ApiError):
    """413: an upload over the service's limit."""


class UnsupportedMediaType(ApiError):
    """415: an upload of a type the service does not read."""


class Unprocessable(ApiError):
    """422: a body or parameter that does not validate."""


class TooManyRequests(ApiError):
    """429: slow down (``retry_after`` says how long)."""


class ServerError(ApiError):
    """5xx: the service or one of its dependencies failed."""


class ServiceUnavailable(ServerError):
    """503: a dependency does not answer; ``retry_after`` says when to try again."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for(response: httpx.Response) -> ApiError:
    """The typed exception of an error answer (its body must have been read)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {"detail": response.text or None}
    status = response.status_code
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(
        status, problem, retry_after=retry_after_seconds(response.headers.get("Retry-After"))
    )
