"""What an upstream sends cannot hurt: secrets it echoes are scrubbed, its answers are bounded,
image URLs it hands out go through the SSRF guard (and a refusal is its fault: 502), a stream it
drops says so, and one failure counts once on the dashboard."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tests import orm
from tests.conftest import GATEWAY_KEY, Gateway
from tests.orm import DailyStat, LogEntry
from tests.support.upstream import StubUpstream

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "draw"}]
META = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
# an upstream key in no known format: only the configured value can find it
ODD_KEY = "AIzaSy-upstream-9f8e7d6c5b4a"
R2_ID = "r2-access-id-0123456789abcdef"
R2_SECRET = "r2/secret+access=key0123456789"
SECRETS = (ODD_KEY, R2_ID, R2_SECRET, GATEWAY_KEY)


def text_event(text: str) -> bytes:
    body = {**META, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def chat(gateway: Gateway, *, stream: bool, **extra: Any) -> httpx.Response:
    body = {"model": "picgate", "messages": MESSAGES, "stream": stream, **extra}
    return httpx.post(gateway.url + CHAT, json=body, headers=gateway.headers, timeout=60)


def stream_payloads(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [line[6:] for line in answer.text.split("\n") if line.startswith("data: ")]


def stream_error(answer: httpx.Response) -> dict[str, Any]:
    payloads = stream_payloads(answer)
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])
    assert set(error) == {"error"}
    result: dict[str, Any] = error["error"]
    return result


def log_rows(gateway: Gateway) -> list[str]:
    gateway.services.events.flush()
    return list(orm.read(gateway.services.db, lambda s: s.scalars(select(LogEntry.message)).all()))


def errors_counted(gateway: Gateway) -> int:
    gateway.services.events.flush()
    rows = orm.write(
        gateway.services.db,
        lambda s: s.scalars(select(DailyStat.value).where(DailyStat.name == "errors")).all(),
    )
    return sum(rows)


# -- secrets echoed by the upstream -----------------------------------------------------------


def echoing(kind: str) -> Callable[[Request], Any]:
    """An upstream 401 that quotes what it was sent (and, to prove every secret is caught,
    the other secrets too): as OpenAI's JSON error, as plain text echoing the headers, or as a
    stream whose error chunk quotes them after a first delta."""

    async def handler(request: Request) -> Response:
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        assert sent == ODD_KEY
        quoted = f"{sent} {R2_ID} {R2_SECRET} {GATEWAY_KEY}"
        if kind == "json":
            error = {
                "message": f"Incorrect API key provided: {quoted}.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "metadata": {"headers": dict(request.headers)},
            }
            return JSONResponse({"error": error}, status_code=401)
        if kind == "text":
            headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
            return Response(f"relay refused:\n{headers}\n{quoted}", status_code=401)
        error_chunk = {"error": {"message": f"key {quoted} revoked", "code": 401}}

        async def body() -> AsyncIterator[bytes]:
            yield text_event("Hello")
            yield f"data: {json.dumps(error_chunk)}\n\n".encode()

        return StreamingResponse(body(), media_type="text/event-stream")

    return handler


@pytest.mark.parametrize(
    ("kind", "stream"),
    [("json", False), ("json", True), ("text", False), ("text", True), ("sse", True)],
)
def test_upstream_echoing_secrets_scrubbed_from_answer_log_rows_and_logging(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    stream: bool,
) -> None:
    gateway = start_gateway(
        upstream_api_key=ODD_KEY,
        r2_access_key_id=R2_ID,
        r2_secret_access_key=R2_SECRET,
        r2_bucket_name="bucket",
        r2_endpoint_url="http://127.0.0.1:9",
    )
    upstream.handlers[CHAT] = echoing(kind)
    with caplog.at_level(logging.INFO, logger="picgate"):
        answer = chat(gateway, stream=stream)
        rows = log_rows(gateway)
    if kind == "sse":  # the upstream's own error chunk, passed through
        passed = json.loads(stream_payloads(answer)[-1])
        assert passed["error"]["message"] == "key *** *** *** *** revoked"
    else:
        assert answer.status_code == 401
        assert "***" in answer.json()["error"]["message"]
    assert any("***" in row for row in rows) or kind == "sse"
    for secret in SECRETS:
        assert secret not in answer.text
        assert secret not in str(dict(answer.headers))
        assert not [row for row in rows if secret in row]
        assert secret not in caplog.text


def test_upstream_echoing_secrets_in_images_api_error_scrubbed(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_api_key=ODD_KEY)
    upstream.handlers["/v1/images/generations"] = echoing("json")
    answer = httpx.post(
        gateway.url + "/v1/images/generations",
        json={"prompt": "p"},
        headers=gateway.headers,
        timeout=30,
    )
    assert answer.status_code == 401
    assert ODD_KEY not in answer.text and GATEWAY_KEY not in answer.text
    assert not [row for row in log_rows(gateway) if ODD_KEY in row]


# -- one failure, one count ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/images/generations", CHAT])
def test_upstream_502_counts_one_error_on_the_dashboard(
    gateway: Gateway, upstream: StubUpstream, path: str
) -> None:
    async def bad_gateway(request: Request) -> Response:
        return JSONResponse({"error": {"message": "overloaded"}}, status_code=502)

    upstream.handlers[path] = bad_gateway
    body: dict[str, Any] = {"prompt": "p"} if path != CHAT else {"messages": MESSAGES}
    answer = httpx.post(gateway.url + path, json=body, headers=gateway.headers, timeout=30)
    assert answer.status_code == 502
    assert errors_counted(gateway) == 1
    assert [r for r in log_rows(gateway) if r.startswith("❌")] == [
        "❌ 上游返回错误: HTTP 502: overloaded"
    ]


# -- bounded reads ---------------------------------------------------------------------------


def test_upstream_stream_line_without_newline_over_cap_is_error_event(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(max_image_mb=1)  # event cap: 2 images of 1 MB as base64 + 1 MiB
    sent: list[int] = []

    async def endless_line() -> AsyncIterator[bytes]:
        yield text_event("Hello")
        yield b"data: "
        for _ in range(320):  # 20 MB, no newline, over 3 s: PicGate's cap is hit at ~60
            sent.append(1)
            yield b"x" * 65_536
            await asyncio.sleep(0.01)  # room to notice the disconnect, even on a busy machine

    upstream.handlers[CHAT] = lambda request: _async(
        StreamingResponse(endless_line(), media_type="text/event-stream")
    )
    error = stream_error(chat(gateway, stream=True))
    assert error["code"] == "upstream_response_too_large"
    assert len(sent) < 320  # PicGate stopped reading


def test_upstream_stream_image_over_max_image_mb_in_small_chunks_is_error_event(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(max_image_mb=1)

    async def big_image() -> AsyncIterator[bytes]:
        yield text_event("data:image/png;base64,iVBORw0KGgo")
        for _ in range(400):  # 1.6 MB of base64 in 4 KB deltas: every line is small
            yield text_event("A" * 4096)
        yield b"data: [DONE]\n\n"

    upstream.handlers[CHAT] = lambda request: _async(
        StreamingResponse(big_image(), media_type="text/event-stream")
    )
    answer = chat(gateway, stream=True)
    assert stream_error(answer)["code"] == "upstream_image_too_large"
    assert "AAAA" not in answer.text


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_json_answer_over_cap_is_502_or_error_event(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, stream: bool
) -> None:
    gateway = start_gateway(max_image_mb=1)  # answer cap: 10 images of 1 MB as base64 + 1 MiB

    async def huge() -> AsyncIterator[bytes]:
        yield b'{"choices": [{"message": {"content": "'
        for _ in range(256):  # 16 MB, chunked: no Content-Length to refuse up front
            yield b"x" * 65_536
        yield b'"}}]}'

    upstream.handlers[CHAT] = lambda request: _async(
        StreamingResponse(huge(), media_type="application/json")
    )
    answer = chat(gateway, stream=stream)
    if stream:
        assert stream_error(answer)["code"] == "upstream_response_too_large"
    else:
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "upstream_response_too_large"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_upstream_error_body_over_cap_is_502(
    gateway: Gateway, upstream: StubUpstream, declared: bool
) -> None:
    big = b"e" * (2 * 2**20)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65_536):
            yield big[i : i + 65_536]

    def answer(request: Request) -> Any:
        if declared:
            return _async(Response(big, status_code=500))
        return _async(StreamingResponse(body(), status_code=500))

    upstream.handlers["/v1/images/generations"] = answer
    result = httpx.post(
        gateway.url + "/v1/images/generations",
        json={"prompt": "p"},
        headers=gateway.headers,
        timeout=30,
    )
    assert result.status_code == 502
    assert result.json()["error"]["code"] == "upstream_response_too_large"


async def _async(response: Response) -> Response:
    return response


# -- image URLs the SSRF guard refuses -------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1/x.png", "http://169.254.169.254/latest/meta-data/", "http://[::1]/"]
)
def test_upstream_image_url_refused_by_guard_is_502_not_400(
    gateway: Gateway, upstream: StubUpstream, url: str
) -> None:
    async def url_answer(request: Request) -> Response:
        return JSONResponse({"created": 1, "data": [{"url": url}]})

    upstream.handlers["/v1/images/generations"] = url_answer
    answer = httpx.post(
        gateway.url + "/v1/images/generations",
        json={"prompt": "p"},
        headers=gateway.headers,
        timeout=30,
    )
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["type"] == "upstream_error" and error["code"] == "blocked_url"


# -- a connection dropped mid-answer ---------------------------------------------------------


class Dropped(Response):
    """Sends the start of a chunked body, then closes the connection before its end."""

    def __init__(self, chunks: list[bytes], media_type: str) -> None:
        super().__init__()
        self.chunks = chunks
        self.ctype = media_type.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", self.ctype)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


@pytest.mark.parametrize(
    ("stream", "media_type"),
    [(True, "text/event-stream"), (True, "application/json"), (False, "application/json")],
    ids=["sse", "stream-json-answer", "non-stream"],
)
def test_upstream_dropped_mid_answer_is_upstream_interrupted(
    gateway: Gateway, upstream: StubUpstream, stream: bool, media_type: str
) -> None:
    first = text_event("Hello") if media_type == "text/event-stream" else b'{"choices": [{"me'
    upstream.handlers[CHAT] = lambda request: _async(Dropped([first, b'data: {"id'], media_type))
    answer = chat(gateway, stream=stream)
    if stream:
        error = stream_error(answer)
    else:
        assert answer.status_code == 502
        error = answer.json()["error"]
    assert error["code"] == "upstream_interrupted"
    assert "interrupted" in error["message"] and "unreachable" not in error["message"]
    assert errors_counted(gateway) == 1


def test_upstream_unreachable_still_says_unreachable(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(upstream_api_base="http://127.0.0.1:9/v1")
    answer = chat(gateway, stream=False)
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_unreachable"


def test_upstream_json_answer_over_max_upstream_response_mb_is_502(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    """MAX_UPSTREAM_RESPONSE_MB caps the answer below what MAX_IMAGE_MB alone allows (50 MB
    images: ~668 MB)."""
    gateway = start_gateway(max_upstream_response_mb=1)

    async def two_mb() -> AsyncIterator[bytes]:
        yield b'{"choices": [{"message": {"content": "'
        for _ in range(32):  # 2 MB, chunked
            yield b"x" * 65_536
        yield b'"}}]}'

    upstream.handlers[CHAT] = lambda request: _async(
        StreamingResponse(two_mb(), media_type="application/json")
    )
    answer = chat(gateway, stream=False)
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_response_too_large"
