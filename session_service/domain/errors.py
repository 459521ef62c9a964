"""Domain errors. Stores and services raise these; the API maps each to problem+json."""

from __future__ import annotations


class StartupError(Exception):
    """A store the process needs can't be reached as configured. The message names the
    setting to change; the CLI prints it as one line and exits 1."""


class ServiceError(Exception):
    status = 500
    title = "Internal Server Error"
    type_suffix = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status = 404
    title = "Not Found"
    type_suffix = "not-found"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"
    type_suffix = "conflict"


class Locked(Conflict):
    """The session is held by an unfinished operation (DESIGN.md saga rule 4)."""

    type_suffix = "locked"

    def __init__(self, session_id: str, operation_id: str) -> None:
        super().__init__(
            f"session {session_id} is held by unfinished operation {operation_id}; "
            "wait for it or cancel it"
        )
        self.operation_id = operation_id


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"
    type_suffix = "forbidden"


class BadRequest(ServiceError):
    status = 400
    title = "Bad Request"
    type_suffix = "bad-request"


class Unprocessable(ServiceError):
    status = 422
    title = "Unprocessable Content"
    type_suffix = "validation"


class ContentTooLarge(ServiceError):
    status = 413
    title = "Content Too Large"
    type_suffix = "content-too-large"


class PreconditionFailed(ServiceError):
    status = 412
    title = "Precondition Failed"
    type_suffix = "precondition-failed"


class Unavailable(ServiceError):
    status = 503
    title = "Service Unavailable"
    type_suffix = "unavailable"


class UnsupportedMediaType(ServiceError):
    status = 415
    title = "Unsupported Media Type"
    type_suffix = "unsupported-media-type"


class Offloaded(Conflict):
    """The request needs the points of an offloaded session (API.md section G): the API
    reloads the session first and asks again; 409 only if nothing did."""

    type_suffix = "offloaded"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id} is offloaded; its points come back with a reload "
            f"(POST /sessions/{session_id}/reload)"
        )
        self.session_id = session_id
