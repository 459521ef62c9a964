"""Answering a long-running request: 200 with the final body, or 202 with the operation.

RFC 7240 ``Prefer: respond-async`` answers 202 at once; ``Prefer: wait=N`` waits
up to N seconds instead of ``SYNC_WAIT_SECONDS``.
"""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse

from session_service.api.problems import problem
from session_service.services.operations import OperationFailed, OperationService, Started
from session_service.settings import Settings
from session_service.temporal.contracts import ERROR_STATUS, ErrorType

MAX_WAIT = 300.0
_WAIT = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_prefer(header: str | None, default_wait: float) -> tuple[float, str | None]:
    """(seconds to wait, the preference applied) from a ``Prefer`` header.

    ``wait`` may be fractional (``wait=2.5``); ``Preference-Applied`` names the wait
    actually used, capped at ``MAX_WAIT``. A wait that is no number is ignored."""
    if not header:
        return default_wait, None
    wait, applied = default_wait, None
    for token in header.split(","):
        name, _, value = token.strip().partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            return 0.0, "respond-async"
        if name == "wait" and _WAIT.fullmatch(value.strip()):
            wait = min(float(value.strip()), MAX_WAIT)
            applied = f"wait={int(wait) if wait.is_integer() else wait}"
    return wait, applied


def _status_for(failure: OperationFailed) -> int:
    if failure.error.type == "Cancelled":
        return 409
    try:
        return ERROR_STATUS[ErrorType(failure.error.type)]
    except ValueError:
        return 500


async def respond(
    ops: OperationService, started: Started, settings: Settings, prefer: str | None
) -> JSONResponse:
    wait, applied = parse_prefer(prefer, settings.sync_wait_seconds)
    headers = {"Operation-Id": started.operation_id}
    if applied:
        headers["Preference-Applied"] = applied
    try:
        final = await ops.wait(started, wait)
    except OperationFailed as failure:
        return problem(
            _status_for(failure),
            f"operation {failure.operation_id} {failure.status.value}: {failure.error.message}",
            type_suffix=failure.error.type.lower(),
            headers=headers,
            operation_id=failure.operation_id,
        )
    if final is not None:
        return JSONResponse(final, status_code=200, headers=headers)
    op = await ops.get(started.operation_id)
    headers["Location"] = f"/operations/{started.operation_id}"
    return JSONResponse(op.model_dump(mode="json"), status_code=202, headers=headers)


async def awaited(
    ops: OperationService, started: Started, wait: float, applied: str | None
) -> JSONResponse | None:
    """Wait up to ``wait`` for an operation the request depends on (a reload on first
    use, API.md section G): None once it succeeded (the request goes on), else what to
    answer: 202 with the operation, or the problem its failure deserves."""
    headers = {"Operation-Id": started.operation_id}
    if applied:
        headers["Preference-Applied"] = applied
    try:
        if await ops.wait(started, max(wait, 0.0)) is not None:
            return None
    except OperationFailed as failure:
        return problem(
            _status_for(failure),
            f"operation {failure.operation_id} {failure.status.value}: {failure.error.message}",
            type_suffix=failure.error.type.lower(),
            headers=headers,
            operation_id=failure.operation_id,
        )
    op = await ops.get(started.operation_id)
    headers["Location"] = f"/operations/{started.operation_id}"
    return JSONResponse(op.model_dump(mode="json"), status_code=202, headers=headers)
