"""BodyLimitMiddleware's deadline as a pure ASGI app: receive timed only until the body ends."""

from __future__ import annotations

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from picgate.errors import RequestTimeout
from picgate.middleware import BodyLimitMiddleware

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}


async def _no_send(message: Message) -> None:
    pass


def test_body_limit_body_that_never_ends_is_request_timeout() -> None:
    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    middleware = BodyLimitMiddleware(app, max_bytes=1000, timeout=0.05)
    with pytest.raises(RequestTimeout) as raised:
        anyio.run(middleware, SCOPE, receive, _no_send)
    assert raised.value.status_code == 408


def test_body_limit_waiting_for_disconnect_after_the_body_is_not_timed() -> None:
    """A streaming response listens for the disconnect as long as it streams."""
    messages: list[Message] = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await anyio.sleep(0.3)  # six times the deadline below
        return {"type": "http.disconnect"}

    got: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        got.append((await receive())["type"])
        got.append((await receive())["type"])

    anyio.run(BodyLimitMiddleware(app, max_bytes=1000, timeout=0.05), SCOPE, receive, _no_send)
    assert got == ["http.request", "http.disconnect"]
