"""The one exception tree of Framefork.

Domain code raises these; only the HTTP edge (functions/http.py) turns them into status codes,
always with the same JSON shape: {"error": {"code", "message", "status", "details"}}.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FrameforkError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}
        """HTTP headers the answer must carry (Allow on a 405, say)."""

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "status": self.status,
                "details": self.details,
            }
        }


class BadRequest(FrameforkError):
    """The request cannot be read at all: malformed JSON, a bad cursor, a missing part."""

    status = 400
    code = "bad_request"


class Unauthenticated(FrameforkError):
    status = 401
    code = "unauthenticated"


class NotFound(FrameforkError):
    """Unknown ids and other owners' resources alike: we never confirm that something exists."""

    status = 404
    code = "not_found"


class MethodNotAllowed(FrameforkError):
    status = 405
    code = "method_not_allowed"


class Conflict(FrameforkError):
    status = 409
    code = "conflict"


class PayloadTooLarge(FrameforkError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(FrameforkError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(FrameforkError):
    """Readable input that breaks the rules: wrong types, unknown fields, values out of range."""

    status = 422
    code = "validation_failed"


class UploadRejected(ValidationFailed):
    """An uploaded file is not an image we accept (type, size, pixel count, corrupt data)."""

    code = "upload_rejected"


class ServiceUnavailable(FrameforkError):
    """A dependency did not answer; the client may retry."""

    status = 503
    code = "unavailable"


class ContentionRetriesExhausted(ServiceUnavailable):
    """Optimistic writes kept colliding with concurrent writers; the client may retry."""

    code = "contention"
