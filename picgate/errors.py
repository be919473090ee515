"""One exception tree for PicGate, turned into OpenAI's error shape at the edge.

    PicGateError                    500 server_error (never raised bare for bad input)
    ├── BadRequest                  400 invalid_request_error
    │   ├── PayloadTooLarge         413
    │   ├── RequestTimeout          408 (a client too slow to send its request body)
    │   ├── UnsupportedMediaType    415 (not a raster image, wrong content type)
    │   └── Unprocessable           422 (well-formed but invalid fields)
    ├── AuthenticationFailed        401 (missing/wrong gateway key, no key configured)
    ├── RateLimited                 429 rate_limit_exceeded (USER_DAILY_IMAGE_LIMIT reached)
    │   └── KeyGuessingThrottled    429 (too many wrong gateway keys from one address)
    ├── NotFound                    404
    ├── OnlyCopy                    409 (deleting the only copy of an image not yet in R2)
    ├── Gone                        410 (image expired with no copy anywhere)
    ├── NotConfigured               503 (upstream settings missing)
    ├── StorageUnavailable          503 (R2 down and no local copy; disk full)
    ├── ServerBusy                  503 server_busy (MAX_BUFFERED_MB taken; Retry-After)
    └── UpstreamError               upstream status kept, or 502 (unreachable / junk) / 504 (timeout)

Every error leaves as ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any


class PicGateError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        body.update(self.extra)
        return {"error": body}


class BadRequest(PicGateError):
    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLarge(BadRequest):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(BadRequest):
    status_code = 408
    code = "request_timeout"


class UnsupportedMediaType(BadRequest):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(BadRequest):
    status_code = 422
    code = "invalid_value"


class AuthenticationFailed(PicGateError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class RateLimited(PicGateError):
    """A limit is reached (a daily image limit; wrong gateway keys from one address); the
    message says when it resets, and so does ``Retry-After``."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class KeyGuessingThrottled(RateLimited):
    """Too many wrong gateway keys from one address: refused before the key is compared."""


class NotFound(PicGateError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class OnlyCopy(PicGateError):
    """A deletion that would destroy the last copy of an image; sent again with ``force``."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "only_local_copy"


class Gone(PicGateError):
    status_code = 410
    error_type = "invalid_request_error"
    code = "image_expired"


class NotConfigured(PicGateError):
    status_code = 503
    error_type = "server_error"
    code = "not_configured"


class StorageUnavailable(PicGateError):
    status_code = 503
    error_type = "server_error"
    code = "storage_unavailable"


class ServerBusy(PicGateError):
    """The server-wide memory budget for images held by requests is taken (Retry-After)."""

    status_code = 503
    error_type = "server_error"
    code = "server_busy"


class UpstreamError(PicGateError):
    """The upstream failed; ``status_code`` is the upstream's own status or 502/504."""

    status_code = 502
    error_type = "upstream_error"
    code = "bad_gateway"


def error_body(
    message: str, *, error_type: str = "server_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
