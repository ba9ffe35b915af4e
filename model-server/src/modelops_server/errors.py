"""The server's error vocabulary: one exception type per HTTP status, one JSON shape.

Every error body is ``{"error": message, "kind": kind}`` plus optional ``"details"`` (a list of
``{"field", "problem"}``). ``error`` is the Open Inference Protocol's error field, so OIP clients
read it too.
"""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """Base: an error with an HTTP status, a machine-readable kind and a message for humans."""

    status_code = 500
    kind = "internal_error"

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra HTTP response headers this error carries (Allow, Retry-After)."""
        return []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "kind": self.kind}
        if self.details:
            body["details"] = self.details
        return body


class MalformedJSON(ServerError):
    status_code = 400
    kind = "malformed_json"


class InvalidRequest(ServerError):
    status_code = 422
    kind = "invalid_request"


class NotFound(ServerError):
    status_code = 404
    kind = "not_found"


class UnknownPrediction(NotFound):
    """Feedback names a prediction id this server process never issued."""

    kind = "unknown_prediction"


class FeedbackDuplicate(ServerError):
    status_code = 409
    kind = "feedback_duplicate"


class PredictionExpired(ServerError):
    """Feedback for an id issued here but no longer pending (evicted or too old)."""

    status_code = 410
    kind = "prediction_expired"


class MethodNotAllowed(ServerError):
    status_code = 405
    kind = "method_not_allowed"

    def __init__(self, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.allow.encode())] if self.allow else []


class RequestTimeout(ServerError):
    status_code = 408
    kind = "request_timeout"


class PayloadTooLarge(ServerError):
    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaType(ServerError):
    status_code = 415
    kind = "unsupported_media_type"


class NotReady(ServerError):
    status_code = 503
    kind = "not_ready"


class Overloaded(ServerError):
    """More requests in flight than MAX_CONCURRENCY: refused at once, to be retried."""

    status_code = 503
    kind = "overloaded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode())]


class ModelLoadError(Exception):
    """The artifact cannot be served; the message says what is wrong and what to do."""
