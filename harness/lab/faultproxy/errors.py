"""API errors of the fault proxy: Toxiproxy's messages and HTTP status codes, one HarnessError."""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError


class ApiError(HarnessError):
    """An API request failed; `status` is the HTTP status and the body Toxiproxy would send."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        """The JSON error body, as Toxiproxy writes it: `{"error": ..., "status": ...}`."""
        return {"error": self.message, "status": self.status}

    def joined(self, detail: str) -> ApiError:
        """This error with a detail appended (Toxiproxy's `joinError`): `"<message>: <detail>"`."""
        return ApiError(f"{self.message}: {detail}", self.status)


BAD_REQUEST_BODY = ApiError("bad request body", 400)
MISSING_FIELD = ApiError("missing required field", 400)
PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_ALREADY_EXISTS = ApiError("proxy already exists", 409)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
INVALID_TOXIC_TYPE = ApiError("invalid toxic type", 400)
TOXIC_ALREADY_EXISTS = ApiError("toxic already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)


def bad_body(detail: str) -> ApiError:
    """A 400 `bad request body: <detail>` error."""
    return BAD_REQUEST_BODY.joined(detail)
