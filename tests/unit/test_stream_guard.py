"""``relay.guarded``: the end of both chat stream paths (SSE relay, JSON answer converted).

A failure after the first byte becomes one error event then ``[DONE]``; the upstream reader is
closed however the stream ends, also when the client leaves while a read is pending.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from picgate.gateway import relay, unstreamed
from picgate.gateway.rewrite import StreamRewriter


class Chunks:
    """An upstream body: ``parts`` in order, then ``fail`` raised (or the end), or a hang."""

    def __init__(self, parts: list[bytes], fail: BaseException | None = None, hang: bool = False):
        self.parts = list(parts)
        self.fail = fail
        self.hang = hang
        self.cancelled = False

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self.parts:
            return self.parts.pop(0)
        if self.fail is not None:
            raise self.fail
        if self.hang:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        raise StopAsyncIteration


async def no_images(reference: str) -> str | None:
    """The image sink of a text-only answer: being asked to store anything is a failure."""
    raise AssertionError(f"no image expected, got {reference[:40]!r}")


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in stream]


def error_of(pieces: list[bytes]) -> dict[str, object]:
    text = b"".join(pieces).decode()
    payloads = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert isinstance(error, dict)
    return error


def converted(chunks: Chunks) -> AsyncIterator[bytes]:
    return unstreamed.events(chunks, no_images, keepalive=5, events=None)  # type: ignore[arg-type]


def relayed(chunks: Chunks) -> AsyncIterator[bytes]:
    return relay.relay(chunks, StreamRewriter(no_images), keepalive=5)


@pytest.mark.parametrize("make", [converted, relayed], ids=["json-answer", "sse"])
def test_unexpected_failure_becomes_internal_error_event(make) -> None:  # type: ignore[no-untyped-def]
    pieces = asyncio.run(collect(make(Chunks([b'{"choices"'], fail=RuntimeError("bug")))))
    assert error_of(pieces)["code"] == "internal_error"


@pytest.mark.parametrize("make", [converted, relayed], ids=["json-answer", "sse"])
def test_broken_upstream_becomes_upstream_error_event(make) -> None:  # type: ignore[no-untyped-def]
    broken = httpx.RemoteProtocolError("peer closed connection")
    pieces = asyncio.run(collect(make(Chunks([b'{"choices"'], fail=broken))))
    error = error_of(pieces)
    assert error["code"] == "upstream_interrupted"
    assert "interrupted" in str(error["message"])


@pytest.mark.parametrize("make", [converted, relayed], ids=["json-answer", "sse"])
def test_client_leaving_cancels_the_pending_upstream_read(make) -> None:  # type: ignore[no-untyped-def]
    chunks = Chunks([], hang=True)

    async def leave() -> None:
        stream = make(chunks)
        task = asyncio.create_task(collect(stream))
        await asyncio.sleep(0.05)  # the read is pending
        task.cancel()  # the client went away: Starlette cancels the response task
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)

    asyncio.run(leave())
    assert chunks.cancelled


def test_json_answer_converted_to_chunks_and_done() -> None:
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
    }
    body = json.dumps(answer).encode()
    pieces = asyncio.run(collect(converted(Chunks([body[:7], body[7:]]))))
    text = b"".join(pieces).decode()
    payloads = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    first = json.loads(payloads[0])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "hi"}
