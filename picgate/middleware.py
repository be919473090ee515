"""Pure ASGI middleware: a request body cap and deadline, and the headers every response has."""

from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from picgate.errors import PayloadTooLarge, RequestTimeout, error_body

# A body may take ``timeout`` seconds plus one more for every this many bytes received (as
# Apache's mod_reqtimeout MinRate): a 50 MB upload at 128 kbit/s still gets through, while a
# client trickling a byte now and then is cut off after about ``timeout`` seconds.
BODY_MIN_BYTES_PER_SECOND = 16 * 1024


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: at once from Content-Length, else while reading.

    408 (``RequestTimeout``, raised from ``receive``) when the body has not arrived by its
    deadline: ``timeout`` seconds after the request head, extended by one second per
    ``BODY_MIN_BYTES_PER_SECOND`` received. Once the body is complete, ``receive`` (which then
    waits for a disconnect) is not timed.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(send)
                return
        seen = 0
        limit = self.max_bytes
        timeout = self.timeout
        started = anyio.current_time()
        body_done = False

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if body_done or timeout is None:
                message = await receive()
            else:
                allowed = started + timeout + seen / BODY_MIN_BYTES_PER_SECOND
                try:
                    with anyio.fail_after(max(allowed - anyio.current_time(), 0)):
                        message = await receive()
                except TimeoutError:
                    raise RequestTimeout(
                        "The request body did not arrive in time.",
                        headers={"Connection": "close"},
                    ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > limit:
                    raise PayloadTooLarge(f"request body is larger than {limit // 2**20} MB")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(
                f"request body is larger than {self.max_bytes // 2**20} MB",
                error_type="invalid_request_error",
                code="payload_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """``nosniff`` everywhere, no framing, no referrer leaks."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
