"""Typed client of the session service, sync and async, for the platform's services
and the operator CLI.

``SessionClient`` (async, httpx.AsyncClient) and ``SyncSessionClient`` (httpx.Client)
have the same methods over the whole API (API.md sections A to G). Both build their
requests and read the answers with ``calls.py``, so they can't drift apart:

- long-running requests follow the operation contract (200 with the final body, or
  202 with an operation: ``Outcome``; ``wait()`` polls to the end with a progress
  callback), and every POST that starts something carries an ``Idempotency-Key``;
- an error answer raises the exception of its status (``NotFound``, ``Conflict``,
  ``PreconditionFailed``, ...; all ``ApiError``) with the problem's fields; no answer
  at all raises ``ConnectionFailed``;
- calls that are safe to repeat are retried with jittered exponential backoff that
  honours ``Retry-After`` (``RetryPolicy``, on tenacity);
- uploads (``import_file``) stream from the file and downloads (``download_export``,
  ``export_document``) stream into one, whatever their size;
- ``list_sessions``/``iter_sessions``, ``iter_operations`` and ``iter_exports`` walk
  every page (``Link: rel="next"``).
"""

from session_service.client.aio import SessionClient
from session_service.client.calls import Outcome, Page
from session_service.client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServerError,
    ServiceUnavailable,
    SessionServiceError,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from session_service.client.retry import RETRY_STATUSES, RetryPolicy
from session_service.client.sync import SyncSessionClient

__all__ = [
    "RETRY_STATUSES",
    "ApiError",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "NotFound",
    "Outcome",
    "Page",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "SessionClient",
    "SessionServiceError",
    "SyncSessionClient",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
]
