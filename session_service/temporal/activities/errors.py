"""Domain errors become non-retryable ``ApplicationError``s with a type the API maps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.exceptions import ApplicationError

from session_service.domain.errors import Conflict, Locked, NotFound, Unprocessable
from session_service.temporal.contracts import ErrorType


@contextmanager
def business_errors() -> Iterator[None]:
    """Refusals are final (retrying won't help); anything else is retried by policy."""
    try:
        yield
    except Locked as exc:
        raise ApplicationError(
            exc.detail, exc.operation_id, type=ErrorType.locked.value, non_retryable=True
        ) from exc
    except NotFound as exc:
        raise ApplicationError(
            exc.detail, type=ErrorType.not_found.value, non_retryable=True
        ) from exc
    except Conflict as exc:
        raise ApplicationError(
            exc.detail, type=ErrorType.conflict.value, non_retryable=True
        ) from exc
    except Unprocessable as exc:
        raise ApplicationError(
            exc.detail, type=ErrorType.invalid.value, non_retryable=True
        ) from exc
