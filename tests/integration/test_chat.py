"""Chat completions through PicGate on a real socket, against the stub upstream.

The client is the official openai SDK (or raw httpx where the wire matters); the upstream is
the stub, with ``handlers["/v1/chat/completions"]`` replaced by crafted SSE streams.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from picgate.errors import StorageUnavailable
from picgate.library.records import ImageOrigin, StoredImage
from tests import orm
from tests.conftest import UPSTREAM_KEY, Gateway
from tests.orm import LogEntry
from tests.support.fixtures import load_json, load_sse
from tests.support.images import ONE_PIXEL_PNG_B64, b64, data_url, make_image
from tests.support.upstream import StubUpstream

CHAT = "/v1/chat/completions"
ONE_PIXEL = base64.b64decode(ONE_PIXEL_PNG_B64)
LINK = re.compile(r"!\[[^\]\n]*\]\((http://127\.0\.0\.1:\d+/images/[A-Za-z0-9_-]+\.(\w+))\)")
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "draw a fox"}]
META = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": "up"}


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)


def event(delta: dict[str, Any] | None = None, *, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {**META, **extra}
    if delta is not None:
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return f"data: {json.dumps(body)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def sse(chunks: Iterable[bytes] | AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream")


def serve(upstream: StubUpstream, make: Callable[[], Any]) -> None:
    async def handler(request: Request) -> Response:
        result: Response = make()
        return result

    upstream.handlers[CHAT] = handler


async def wait_for(flag: threading.Event, timeout: float) -> bool:
    """Poll a thread event without blocking the stub's loop (and stay cancellable)."""
    for _ in range(int(timeout / 0.01)):
        if flag.is_set():
            return True
        await asyncio.sleep(0.01)
    return flag.is_set()


def served(url: str) -> bytes:
    resp = httpx.get(url)
    assert resp.status_code == 200, url
    return resp.content


def links(text: str) -> list[str]:
    return [m.group(1) for m in LINK.finditer(text)]


def stream_text(gateway: Gateway, **kwargs: Any) -> str:
    stream = sdk(gateway).chat.completions.create(
        model="picgate", messages=MESSAGES, stream=True, **kwargs
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def raw_stream(gateway: Gateway, body: dict[str, Any] | None = None) -> bytes:
    body = body or {"model": "picgate", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gateway.url + CHAT, json=body, headers=gateway.headers) as resp:
        assert resp.status_code == 200, resp.read()
        return resp.read()


def data_payloads(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


def log_lines(gateway: Gateway, *wanted: str) -> list[str]:
    """The log, once it holds a line starting with each of ``wanted`` (the background flush
    may be writing a batch while we look, so look again until it lands)."""
    lines: list[str] = []
    for _ in range(100):
        gateway.services.events.flush()
        lines = list(
            orm.read(gateway.services.db, lambda s: s.scalars(select(LogEntry.message)).all())
        )
        if all(any(line.startswith(w) for line in lines) for w in wanted):
            break
        time.sleep(0.05)
    return lines


# -- the captured upstream shapes ------------------------------------------------------------


def test_chat_openrouter_message_images_become_links(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    result = sdk(gateway).chat.completions.create(model="picgate", messages=MESSAGES)
    message = result.choices[0].message
    [url] = links(message.content or "")
    assert message.content == f"Here is a sunset over mountains.\n\n![image]({url})"
    assert "images" not in (message.model_extra or {})
    assert served(url) == ONE_PIXEL
    assert result.usage is not None and result.usage.total_tokens == 1297
    assert upstream.last(CHAT).json["model"] == "gpt-image-1"
    saved = f"✅ 对话图片已保存: {url.rsplit('/', 1)[1][:8]}..."
    lines = log_lines(gateway, "📤", "📥", saved)
    assert "📤 发起对话请求: 1 条消息" in lines
    assert "📥 上游对话返回成功" in lines
    assert saved in lines


def test_chat_openrouter_stream_delta_images_become_links(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    text = stream_text(gateway)
    [url] = links(text)
    assert text == f"Here is your image.\n\n![image]({url})"
    assert served(url) == ONE_PIXEL


def test_chat_stream_headers_and_comments_forwarded(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    body = {"model": "picgate", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gateway.url + CHAT, json=body, headers=gateway.headers) as resp:
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        raw = resp.read()
    assert raw.startswith(b": OPENROUTER PROCESSING\n\n")
    assert raw.endswith(DONE)
    assert b"base64" not in raw
    sent = upstream.last(CHAT)
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_chat_newapi_markdown_message_becomes_link(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    serve(upstream, lambda: JSONResponse(load_json("newapi_markdown_image.json")))
    result = sdk(gateway).chat.completions.create(model="picgate", messages=MESSAGES)
    content = result.choices[0].message.content or ""
    [url] = links(content)
    assert content == f"Here is your image.\n![image]({url})"
    assert served(url) == ONE_PIXEL


def test_chat_newapi_markdown_stream_becomes_link(gateway: Gateway, upstream: StubUpstream) -> None:
    serve(upstream, lambda: sse([load_sse("newapi_markdown_stream_chunks.txt")]))
    text = stream_text(gateway)
    [url] = links(text)
    assert text == f"Here is your image![image]({url})"
    assert served(url) == ONE_PIXEL


def test_chat_openwebui_request_reaches_upstream_unchanged_but_model(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    fixture = load_json("openwebui_chat_request.json")
    body = {k: v for k, v in fixture.items() if not k.startswith("_")}
    raw_stream(gateway, body)
    assert upstream.last(CHAT).json == {**body, "model": "gpt-image-1"}


def test_chat_no_upstream_model_passes_client_model(start_gateway, upstream: StubUpstream) -> None:
    gateway = start_gateway(upstream_model_name=None)
    sdk(gateway).chat.completions.create(model="nano-banana", messages=MESSAGES)
    assert upstream.last(CHAT).json["model"] == "nano-banana"


@pytest.mark.parametrize("stream", [False, True])
def test_gateway_model_name_without_upstream_model_is_400_naming_the_setting(
    start_gateway, upstream: StubUpstream, stream: bool
) -> None:
    """Open WebUI picks the model /v1/models lists (the gateway's own name): with no
    UPSTREAM_MODEL_NAME that name went upstream and failed there. Now a clear 400, and nothing
    is sent upstream (the Images API's twins are in test_images_api.py)."""
    gateway = start_gateway(upstream_model_name=None, gateway_model_name="picgate")
    calls = len(upstream.requests)
    chat = {"model": "picgate", "messages": MESSAGES, "stream": stream}
    resp = httpx.post(gateway.url + CHAT, headers=gateway.headers, json=chat)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "upstream_model_not_set" and error["param"] == "model"
    assert "UPSTREAM_MODEL_NAME" in error["message"]
    assert len(upstream.requests) == calls


# -- streams crafted to stress the relay -------------------------------------------------------


def test_chat_stream_2mb_image_in_1b_to_64kb_pieces_served_exactly(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    image = make_image("PNG", 2_000_000, seed=7)
    text = f"Look: ![image]({data_url(image)}) done."
    rnd = random.Random(3)
    pieces: list[str] = []
    i = 0
    while i < len(text):
        size = rnd.choice([1, 2, 3, 7, 100, 1000, 4096, 65536, rnd.randint(1, 65536)])
        pieces.append(text[i : i + size])
        i += size
    assert len(pieces) > 50
    serve(
        upstream,
        lambda: sse([*(event({"content": p}) for p in pieces), event({}, finish="stop"), DONE]),
    )
    got = stream_text(gateway)
    [url] = links(got)
    assert got == f"Look: ![image]({url}) done."
    assert url.endswith(".png")
    assert served(url) == image


def test_chat_stream_text_arrives_before_upstream_pause_ends(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    text_seen = threading.Event()
    outcome: dict[str, bool] = {}

    async def body() -> AsyncIterator[bytes]:
        yield event({"role": "assistant", "content": "Painting it now..."})
        # the long pause: it ends early only if the client already has the text
        outcome["seen_during_pause"] = await wait_for(text_seen, 2.0)
        yield event({"content": f"![image]({data_url(ONE_PIXEL)})"})
        yield event({}, finish="stop")
        yield DONE

    serve(upstream, lambda: sse(body()))
    stream = sdk(gateway).chat.completions.create(model="picgate", messages=MESSAGES, stream=True)
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if "Painting it now..." in received:
            text_seen.set()
    assert outcome == {"seen_during_pause": True}
    [url] = links(received)
    assert received == f"Painting it now...![image]({url})"


def test_chat_stream_silence_sends_keepalive_comments(
    start_gateway, upstream: StubUpstream
) -> None:
    gateway = start_gateway(stream_keepalive_seconds=0.05)
    two_keepalives = threading.Event()

    async def body() -> AsyncIterator[bytes]:
        yield event({"content": "hi"})
        await wait_for(two_keepalives, 5.0)
        yield event({"content": "!"}, finish="stop")
        yield DONE

    serve(upstream, lambda: sse(body()))
    request = {"model": "picgate", "messages": MESSAGES, "stream": True}
    seen: list[str] = []
    with httpx.stream("POST", gateway.url + CHAT, json=request, headers=gateway.headers) as resp:
        for line in resp.iter_lines():
            seen.append(line)
            if seen.count(": keep-alive") >= 2:
                two_keepalives.set()
    assert seen.count(": keep-alive") >= 2
    first_keepalive = seen.index(": keep-alive")
    assert '"hi"' in "".join(seen[:first_keepalive])
    assert '"!"' in "".join(seen[first_keepalive:])
    assert seen[-2:] == ["data: [DONE]", ""] or seen[-1] == "data: [DONE]"


def test_chat_stream_image_in_reasoning_content_becomes_link(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    reasoning = f"Draft: ![sketch]({data_url(ONE_PIXEL)}) ok"
    serve(
        upstream,
        lambda: sse([event({"reasoning_content": reasoning}), event({"content": "done"}), DONE]),
    )
    raw = raw_stream(gateway)
    chunks = [json.loads(p) for p in data_payloads(raw) if p != "[DONE]"]
    got = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    [url] = links(got)
    assert got == f"Draft: ![sketch]({url}) ok"
    assert served(url) == ONE_PIXEL


def test_chat_stream_two_images_in_one_delta_both_linked(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    png, jpeg = make_image("PNG", 30_000, seed=1), make_image("JPEG", 30_000, seed=2)
    images = [
        {"type": "image_url", "image_url": {"url": data_url(png)}},
        {"type": "image_url", "image_url": {"url": data_url(jpeg, "image/jpeg")}},
    ]
    serve(upstream, lambda: sse([event({"content": "Two:", "images": images}), DONE]))
    text = stream_text(gateway)
    first, second = links(text)
    assert text == f"Two:\n\n![image]({first})\n\n![image]({second})"
    assert (served(first), served(second)) == (png, jpeg)
    assert second.endswith(".jpg")


def test_chat_stream_burst_image_in_one_long_line_then_text_stored_in_order(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    # one event far over the parser's lifting threshold, sent at once with the text after it
    png = make_image("PNG", 600_000, seed=21)
    head = event({"content": f"Here: ![cat]({data_url(png)}) and "})
    tail = [event({"content": f"tok{i} "}) for i in range(20)]
    serve(upstream, lambda: sse([head, *tail, DONE]))
    text = stream_text(gateway)
    [url] = links(text)
    assert text == f"Here: ![cat]({url}) and " + "".join(f"tok{i} " for i in range(20))
    assert served(url) == png


def test_chat_stream_upstream_error_chunk_passes_through(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    error_chunk = load_sse("openai_stream_error_chunk.txt")
    serve(upstream, lambda: sse([event({"content": "Hel"}), error_chunk]))
    raw = raw_stream(gateway)
    assert raw.endswith(error_chunk)
    with pytest.raises(openai.APIError, match="Upstream image provider timed out"):
        stream_text(gateway)


class DroppedStream(Response):
    """Sends the start of a stream, then ends the connection without finishing the body."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream")]  # chunked: no Content-Length
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


def test_chat_stream_upstream_drop_becomes_error_event(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    serve(upstream, lambda: DroppedStream([event({"content": "Hello"}), b'data: {"id']))
    payloads = data_payloads(raw_stream(gateway))
    assert json.loads(payloads[0])["choices"][0]["delta"]["content"] == "Hello"
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])
    assert set(error) == {"error"}
    assert error["error"]["code"] == "upstream_interrupted"
    assert error["error"]["message"].startswith("the upstream stream was interrupted")
    assert any(line.startswith("❌ 对话流中断") for line in log_lines(gateway, "❌ 对话流中断"))
    with pytest.raises(openai.APIError, match="interrupted"):
        stream_text(gateway)


def test_chat_stream_client_hangup_closes_upstream(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    closed = threading.Event()
    ended_by: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        try:
            yield event({"content": "Hello"})
            await asyncio.sleep(60)
            yield DONE
        except BaseException as exc:
            ended_by.append(type(exc).__name__)
            raise
        finally:
            closed.set()

    serve(upstream, lambda: sse(body()))
    request = {"model": "picgate", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gateway.url + CHAT, json=request, headers=gateway.headers) as resp:
        for line in resp.iter_lines():
            if "Hello" in line:
                break
    assert closed.wait(10), "the upstream request stayed open after the client left"
    assert ended_by and ended_by[0] in ("CancelledError", "GeneratorExit")


@pytest.mark.parametrize("stream", [True, False])
def test_chat_upstream_4xx_before_stream_sdk_raises_status(
    gateway: Gateway, upstream: StubUpstream, stream: bool
) -> None:
    serve(upstream, lambda: JSONResponse(load_json("openrouter_error.json"), status_code=402))
    with pytest.raises(openai.APIStatusError) as caught:
        result = sdk(gateway).chat.completions.create(
            model="picgate", messages=MESSAGES, stream=stream
        )
        if stream:
            list(result)
    assert caught.value.status_code == 402
    assert "Insufficient credits" in caught.value.message


@pytest.mark.parametrize("stream", [True, False])
def test_chat_storage_failure_keeps_data_url_inline(
    gateway: Gateway, upstream: StubUpstream, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def remote_down(payload: str, *, origin: ImageOrigin) -> StoredImage:
        raise StorageUnavailable("R2 is unreachable")

    monkeypatch.setattr(gateway.services.library, "save_encoded", remote_down)
    original = f"![image](data:image/png;base64,{ONE_PIXEL_PNG_B64})"
    if stream:
        text = stream_text(gateway)
    else:
        result = sdk(gateway).chat.completions.create(model="picgate", messages=MESSAGES)
        text = result.choices[0].message.content or ""
    assert text.endswith(original)
    assert any(
        line.startswith("❌ 对话图片保存失败") for line in log_lines(gateway, "❌ 对话图片保存失败")
    )


def test_chat_not_an_image_stays_text(gateway: Gateway, upstream: StubUpstream) -> None:
    svg = "data:image/png;base64," + b64(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    answer = {**load_json("newapi_markdown_image.json")}
    answer["choices"] = [{"index": 0, "message": {"role": "assistant", "content": svg}}]
    serve(upstream, lambda: JSONResponse(answer))
    result = sdk(gateway).chat.completions.create(model="picgate", messages=MESSAGES)
    assert result.choices[0].message.content == svg


# -- the request side ------------------------------------------------------------------------


def test_chat_history_own_images_inlined_for_upstream(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    first = sdk(gateway).chat.completions.create(model="picgate", messages=MESSAGES)
    reply = first.choices[0].message.content or ""
    [url] = links(reply)
    image_id = url.rsplit("/", 1)[1].split(".")[0]
    other_host = f"http://picgate.internal:5643/images/{image_id}"
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "make it blue"},
                {"type": "image_url", "image_url": {"url": other_host}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
    ]
    sdk(gateway).chat.completions.create(model="picgate", messages=messages)  # type: ignore[arg-type]
    sent = upstream.last(CHAT).json["messages"]
    inline = f"data:image/png;base64,{ONE_PIXEL_PNG_B64}"
    # the assistant's image leaves its text for an image part of the last user message
    assert sent[1] == {
        "role": "assistant",
        "content": reply.replace(f"![image]({url})", "[image 1]"),
    }
    assert sent[2]["content"][:2] == [
        {"type": "text", "text": "[image 1]"},
        {"type": "image_url", "image_url": {"url": inline}},
    ]
    assert sent[2]["content"][3]["image_url"]["url"] == inline
    # external URLs pass through while ALLOW_EXTERNAL_IMAGE_FETCH is off
    assert sent[2]["content"][4] == messages[2]["content"][2]  # type: ignore[index]
    assert "🖼️ 历史图片已内联: 2 张" in log_lines(gateway, "🖼️")


def test_chat_external_image_fetch_refused_is_400(start_gateway, upstream: StubUpstream) -> None:
    gateway = start_gateway(allow_external_image_fetch=True)
    upstream.files["cat.png"] = (make_image("PNG", 5_000), "image/png")
    loopback_url = f"{upstream.origin}/files/cat.png"
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": loopback_url}}]}
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway).chat.completions.create(model="picgate", messages=messages)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert loopback_url in caught.value.message
    assert "forbidden address" in caught.value.message
    assert caught.value.body["param"] == "messages[0].content[0].image_url.url"  # type: ignore[index]
    assert not any(r.path == CHAT for r in upstream.requests)
    assert not any(r.path == "/files/cat.png" for r in upstream.requests)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"model": "picgate"}', "missing_required_parameter"),
        (b'{"model": "picgate", "messages": "hi"}', "invalid_type"),
    ],
)
def test_chat_bad_request_body_is_400(gateway: Gateway, raw: bytes, code: str) -> None:
    headers = {**gateway.headers, "Content-Type": "application/json"}
    resp = httpx.post(gateway.url + CHAT, content=raw, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code
    assert set(resp.json()["error"]) >= {"message", "type", "param", "code"}


def test_chat_without_key_is_401(gateway: Gateway) -> None:
    resp = httpx.post(gateway.url + CHAT, json={"messages": MESSAGES})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "missing_api_key"


def test_chat_stream_text_chunks_read_together_merged_others_kept(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    one_write = b"".join(
        [
            event({"role": "assistant", "content": "a"}),
            event({"role": "assistant", "content": "b"}),
            event({"role": "assistant", "content": "c"}, finish="stop"),
            event({"content": "x"}, system_fingerprint="fp"),
            event(None, choices=[], usage={"total_tokens": 3}),
            DONE,
        ]
    )
    serve(upstream, lambda: sse([one_write]))
    chunks = [json.loads(p) for p in data_payloads(raw_stream(gateway)) if p != "[DONE]"]
    assert [c["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": "ab"}, "finish_reason": None}],
        [{"index": 0, "delta": {"role": "assistant", "content": "c"}, "finish_reason": "stop"}],
        [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
        [],
    ]
    assert chunks[-1]["usage"] == {"total_tokens": 3}
    assert all(c["id"] == "chatcmpl-t" for c in chunks)


def test_chat_stream_not_boolean_is_400(start_gateway) -> None:  # type: ignore[no-untyped-def]
    gw = start_gateway()
    resp = httpx.post(
        gw.url + "/v1/chat/completions",
        headers=gw.headers,
        json={"model": "picgate", "stream": "yes", "messages": [{"role": "user", "content": "x"}]},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "stream"


# -- an upstream that ignores ``stream: true`` -------------------------------------------------


def test_chat_stream_json_answer_becomes_stream_with_links(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    answer = load_json("openrouter_chat_images.json")
    answer["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    serve(upstream, lambda: JSONResponse(answer))
    raw = raw_stream(gateway)
    assert b"base64" not in raw
    payloads = data_payloads(raw)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == answer["id"] for c in chunks)
    delta = chunks[0]["choices"][0]["delta"]
    [url] = links(delta["content"])
    assert delta["content"] == f"Here is a sunset over mountains.\n\n![image]({url})"
    assert "images" not in delta
    assert delta["tool_calls"][0]["index"] == 0 and delta["tool_calls"][0]["id"] == "call_1"
    assert chunks[-1]["choices"][0]["finish_reason"] == answer["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == answer["usage"]
    assert served(url) == ONE_PIXEL
    assert "⚠️ 上游未按流式返回，已转换为流式输出" in log_lines(gateway, "⚠️ 上游未按流式返回")
    # the openai SDK reads it as any other stream
    assert stream_text(gateway).startswith("Here is a sunset over mountains.\n\n![image](")


def test_chat_stream_json_answer_slow_upstream_gets_keepalives(
    start_gateway, upstream: StubUpstream
) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(STREAM_KEEPALIVE_SECONDS="0.2")
    answer = load_json("openai_chat_completion.json")

    async def slow_json() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.7)
        yield json.dumps(answer).encode()

    serve(upstream, lambda: StreamingResponse(slow_json(), media_type="application/json"))
    raw = raw_stream(gateway)
    assert raw.startswith(b": keep-alive\n\n")
    payloads = data_payloads(raw)
    content = json.loads(payloads[0])["choices"][0]["delta"]["content"]
    assert content == answer["choices"][0]["message"]["content"]
    assert payloads[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"error": {"message": "quota exceeded", "type": "insufficient_quota"}}', None),
        (b"<html>bad gateway</html>", "bad_upstream_response"),
        (b'{"object": "list"}', "bad_upstream_response"),
    ],
)
def test_chat_stream_json_error_or_junk_becomes_error_event(
    gateway: Gateway, upstream: StubUpstream, body: bytes, code: str | None
) -> None:
    serve(upstream, lambda: Response(body, media_type="application/json"))
    payloads = data_payloads(raw_stream(gateway))
    assert payloads[-1] == "[DONE]" and len(payloads) == 2
    error = json.loads(payloads[0])
    assert set(error) == {"error"}
    if code is None:
        assert error["error"]["message"] == "quota exceeded"
        assert error["error"]["type"] == "insufficient_quota"
    else:
        assert error["error"]["code"] == code


# -- an upstream that sends no headers for a long time ----------------------------------------


def test_chat_stream_upstream_slow_to_answer_gets_keepalives_first(
    start_gateway, upstream: StubUpstream
) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(STREAM_KEEPALIVE_SECONDS="0.2")

    async def slow_headers(request: Request) -> Response:
        await asyncio.sleep(0.8)  # no status line, no headers: a model still working
        return sse([event({"role": "assistant", "content": "late"}), DONE])

    upstream.handlers[CHAT] = slow_headers
    raw = raw_stream(gateway)
    assert raw.startswith(b": keep-alive\n\n")
    payloads = data_payloads(raw)
    assert json.loads(payloads[0])["choices"][0]["delta"]["content"] == "late"
    assert payloads[-1] == "[DONE]"
    assert stream_text(gateway) == "late"  # the openai SDK skips the comments


def test_chat_stream_upstream_refusing_late_becomes_error_event(
    start_gateway, upstream: StubUpstream
) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(STREAM_KEEPALIVE_SECONDS="0.2")

    async def slow_refusal(request: Request) -> Response:
        await asyncio.sleep(0.8)
        return JSONResponse(load_json("openrouter_error.json"), status_code=402)

    upstream.handlers[CHAT] = slow_refusal
    raw = raw_stream(gateway)  # asserts the 200: the status line left with the first comment
    assert raw.startswith(b": keep-alive\n\n")
    payloads = data_payloads(raw)
    assert payloads[-1] == "[DONE]" and len(payloads) == 2
    error = json.loads(payloads[0])
    assert set(error) == {"error"} and "Insufficient credits" in error["error"]["message"]
    assert any(line.startswith("❌ 上游返回错误: HTTP 402") for line in log_lines(gateway, "❌"))


def test_chat_stream_client_gone_while_upstream_slow_closes_upstream(
    start_gateway, upstream: StubUpstream
) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(STREAM_KEEPALIVE_SECONDS="0.2")
    started, ended = threading.Event(), threading.Event()

    async def never_answers(request: Request) -> Response:
        started.set()
        for _ in range(600):  # up to 30 s, until PicGate drops the request
            if await request.is_disconnected():
                ended.set()
                break
            await asyncio.sleep(0.05)
        return sse([DONE])

    upstream.handlers[CHAT] = never_answers
    body = {"model": "picgate", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gateway.url + CHAT, json=body, headers=gateway.headers) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_raw():
            assert chunk.startswith(b": keep-alive")
            break  # the client leaves while the upstream is still silent
    assert started.wait(5)
    assert ended.wait(10), "the upstream request stayed open after the client left"


VARIANT_LINK = re.compile(
    r"!\[image\]\((http://127\.0\.0\.1:\d+/images/[A-Za-z0-9_-]+\.png)\?([^)]*)\)"
)


def test_chat_image_variant_added_to_links_and_history_sends_original(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    picture = make_image("PNG", 60_000, seed=12)
    answer = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"![image]({data_url(picture)})"},
                "finish_reason": "stop",
            }
        ],
    }
    serve(upstream, lambda: JSONResponse(answer))
    gateway = start_gateway(chat_image_variant="w=128&format=webp")
    reply = sdk(gateway).chat.completions.create(model="picgate", messages=MESSAGES)
    content = reply.choices[0].message.content or ""
    match = VARIANT_LINK.search(content)
    assert match is not None, content
    original, query = match.groups()
    assert query == "w=128&format=webp"
    light = httpx.get(f"{original}?{query}")
    assert light.headers["content-type"] == "image/webp" and len(light.content) < len(picture)
    assert served(original) == picture  # the same URL without the query: the full image

    history = [*MESSAGES, {"role": "assistant", "content": content}]
    sdk(gateway).chat.completions.create(model="picgate", messages=history)  # type: ignore[arg-type]
    sent = upstream.last(CHAT).json["messages"]
    assert sent[1]["content"] == "[image 1]"
    # the original, whole, in the user part the image moved to; no query left
    assert sent[2]["content"] == [
        {"type": "text", "text": "[image 1]"},
        {"type": "image_url", "image_url": {"url": data_url(picture)}},
    ]


def test_chat_image_variant_in_streams(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(chat_image_variant="w=512")
    [url] = re.findall(r"\((http://[^)]+)\)", stream_text(gateway))
    assert url.endswith(".png?w=512")


def test_chat_image_variant_setting_refuses_other_text(
    make_settings: Callable[..., Any],
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="chat_image_variant"):
        make_settings(chat_image_variant="w=1024&size=big")
