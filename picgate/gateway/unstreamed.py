"""An upstream that answers a streaming chat request with one JSON completion.

Some relays and image models ignore ``stream: true`` and send ``application/json``. The client
asked for a stream and would show nothing, so the completion is read (keep-alives go out while
it is awaited), its images are stored and linked as in a non-streaming answer, and it leaves as
the stream it would have been: one chunk with each choice's message as its delta, one with the
finish reasons (and usage), then ``[DONE]``. An error object, or a body that is not a JSON
completion, becomes the stream's error event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from picgate.errors import UpstreamError
from picgate.eventlog import EventLog
from picgate.gateway.buffers import BufferHold
from picgate.gateway.relay import DONE, KEEPALIVE, ChunkReader, guarded
from picgate.gateway.rewrite import ImageSink, rewrite_completion
from picgate.gateway.sse import encode_event
from picgate.gateway.upstream import Upstream, error_from_upstream, too_large

if TYPE_CHECKING:
    import httpx

_ENVELOPE = ("id", "created", "model", "system_fingerprint", "provider")


def is_json_answer(response: httpx.Response) -> bool:
    ctype = str(response.headers.get("content-type", "")).split(";", 1)[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


def completion_chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects a stream of ``answer`` would have carried."""
    envelope = {k: answer[k] for k in _ENVELOPE if k in answer}
    envelope["object"] = "chat.completion.chunk"
    deltas: list[dict[str, Any]] = []
    ends: list[dict[str, Any]] = []
    for position, choice in enumerate(answer.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", position)
        message = choice.get("message")
        delta = dict(message) if isinstance(message, dict) else {}
        if isinstance(delta.get("tool_calls"), list):  # stream tool calls carry their index
            delta["tool_calls"] = [
                {"index": i, **call} if isinstance(call, dict) else call
                for i, call in enumerate(delta["tool_calls"])
            ]
        deltas.append({"index": index, "delta": delta, "finish_reason": None})
        end = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        if "logprobs" in choice:
            end["logprobs"] = choice["logprobs"]
        ends.append(end)
    last = {**envelope, "choices": ends}
    if "usage" in answer:
        last["usage"] = answer["usage"]
    return [{**envelope, "choices": deltas}, last]


def events(
    chunks: AsyncIterator[bytes],
    sink: ImageSink,
    *,
    keepalive: float,
    events: EventLog,
    max_body: int | None = None,
    hold: BufferHold | None = None,
) -> AsyncIterator[bytes]:
    """The client's stream for a JSON answer read from ``chunks`` (at most ``max_body`` bytes:
    past it the stream ends with ``upstream_response_too_large``). The answer's bytes are taken
    from ``hold`` as they arrive (no room: the stream ends with ``server_busy``)."""
    reader = ChunkReader(chunks)
    return guarded(_converted(reader, sink, keepalive, max_body, events, hold), reader, events)


async def _converted(
    reader: ChunkReader,
    sink: ImageSink,
    keepalive: float,
    max_body: int | None,
    events: EventLog | None,
    hold: BufferHold | None,
) -> AsyncGenerator[bytes, None]:
    body = bytearray()
    while True:
        if not await reader.ready(keepalive):
            yield KEEPALIVE
            continue
        chunk = reader.take()
        if chunk is None:
            break
        body += chunk
        if max_body is not None and len(body) > max_body:
            raise too_large("an answer", max_body)
        if hold is not None:
            await hold.cover(len(body))
    answer = _completion(bytes(body))
    rewritten = await rewrite_completion(answer, sink)
    if events is not None:  # an upstream may echo a key in a successful answer too
        rewritten = events.redactor.value(rewritten)
    yield b"".join(encode_event(_dumps(chunk)) for chunk in completion_chunks(rewritten))
    yield DONE


def _completion(body: bytes) -> dict[str, Any]:
    answer = Upstream.parse_answer(body)
    if isinstance(answer, dict) and "error" in answer:
        raise error_from_upstream(502, body)
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise UpstreamError(
            "the upstream chat answer is not a chat completion", code="bad_upstream_response"
        )
    return answer


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
