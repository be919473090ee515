"""Relaying an upstream chat stream to the client: chunk reading, the SSE relay loop, and the
guard that turns a failure after the first byte into the stream's error event.

Stream contract (``relay``): comment lines are forwarded at once; every ``data`` payload goes
through ``StreamRewriter`` (with the images the parser lifted out of a long line) and out as soon as it comes back (nothing waits for more upstream
data); ``[DONE]`` ends the relay. Plain text chunks that arrived in the same network read are
merged first (``coalesce``): same text, fewer chunks. While the upstream is silent for
``keepalive`` seconds a ``: keep-alive`` comment goes out. A failure after the first byte (the
upstream connection drops, a read times out, storing fails unexpectedly) becomes
``data: {"error": {...}}`` (no ``choices``, the shape OpenWebUI and the openai SDK surface)
followed by ``data: [DONE]``. ``unstreamed`` uses the same reader and guard for an upstream
that answers a stream request with one JSON completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

import anyio

from picgate.errors import PicGateError
from picgate.eventlog import EventLog
from picgate.gateway.coalesce import coalesce
from picgate.gateway.lifted import ImageLifter
from picgate.gateway.rewrite import StreamRewriter
from picgate.gateway.sse import EventTooLarge, SSEEvent, SSEParser, encode_comment, encode_event
from picgate.gateway.upstream import interrupted, map_transport_error, too_large
from picgate.redaction import Redactor

if TYPE_CHECKING:
    import httpx

__all__ = ["DONE", "KEEPALIVE", "ChunkReader", "error_event", "failure_event", "guarded", "relay"]

log = logging.getLogger("picgate")

KEEPALIVE = encode_comment("keep-alive")
DONE = encode_event("[DONE]")


def error_event(error: PicGateError, events: EventLog | None = None) -> bytes:
    """An error inside a stream (OpenAI's shape, no ``choices``), then ``[DONE]``; the
    configured secrets are removed from it first."""
    if events is not None:
        error = events.redactor.error(error)
    return encode_event(json.dumps(error.to_dict(), ensure_ascii=False)) + DONE


class ChunkReader:
    """Reads the next chunk in a task of its own, so a caller can wait with a timeout.

    A read that outlives the timeout is not cancelled (cancelling an httpx read half-way would
    break the connection); the next ``ready`` waits for that same read.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._task: asyncio.Task[bytes | None] | None = None

    async def _read(self) -> bytes | None:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None

    async def ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when ``take`` has an answer."""
        if self._task is None:
            self._task = asyncio.create_task(self._read())
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done)

    def take(self) -> bytes | None:
        """The chunk ``ready`` saw arrive (None: the end); raises what the read raised."""
        assert self._task is not None and self._task.done()
        task, self._task = self._task, None
        return task.result()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _forward(event: SSEEvent, rewriter: StreamRewriter, redactor: Redactor | None) -> bytes:
    out = bytearray()
    if event.comments:
        out += encode_comment("\n".join(event.comments))
    if event.data is None:
        return bytes(out)
    payloads = await rewriter.feed(event.data, event.lifted)
    for i, payload in enumerate(payloads):
        if i == len(payloads) - 1:
            # the event name and id belong to the upstream's own payload, the last one
            if event.event is not None:
                out += f"event: {event.event}\n".encode()
            if event.id is not None:
                out += f"id: {event.id}\n".encode()
        # an upstream error chunk may quote the key it was sent
        out += encode_event(redactor.text(payload) if redactor else payload)
    return bytes(out)


def relay(
    chunks: AsyncIterator[bytes],
    rewriter: StreamRewriter,
    *,
    keepalive: float,
    events: EventLog | None = None,
    max_event: int | None = None,
) -> AsyncIterator[bytes]:
    """The client's side of an upstream SSE stream (see the module doc for the contract).

    ``max_event`` caps one SSE line or event (bytes); past it the stream ends with
    ``upstream_response_too_large``.
    """
    reader = ChunkReader(chunks)
    redactor = events.redactor if events is not None else None
    # a long data line's images skip the text path (see picgate.gateway.lifted)
    parser = SSEParser(max_event=max_event, lifter=ImageLifter(max_run=rewriter.max_image))
    source = _relayed(reader, rewriter, keepalive, parser, redactor)
    return guarded(source, reader, events)


async def _relayed(
    reader: ChunkReader,
    rewriter: StreamRewriter,
    keepalive: float,
    parser: SSEParser,
    redactor: Redactor | None,
) -> AsyncGenerator[bytes, None]:
    while True:
        if not await reader.ready(keepalive):
            yield KEEPALIVE
            continue
        chunk = reader.take()
        try:
            events = parser.feed(chunk) if chunk is not None else parser.close()
        except EventTooLarge as exc:
            raise too_large("an event stream line", parser.max_event or 0) from exc
        for event in coalesce(events):
            out = await _forward(event, rewriter, redactor)
            if out:
                yield out
            if event.is_done:
                return
        if chunk is None:
            tail = b"".join(encode_event(p) for p in await rewriter.finish())
            if tail:
                yield tail
            return


async def guarded(
    source: AsyncGenerator[bytes, None], reader: ChunkReader, events: EventLog | None
) -> AsyncIterator[bytes]:
    """``source``'s bytes; a failure after the first byte becomes the stream's error event (and
    a log line), and ``reader`` is closed however the stream ends, a client leaving included."""
    import httpx  # not at module level: requests that never go upstream skip it (cold start)

    try:
        async with contextlib.aclosing(source):
            async for out in source:
                yield out
    except (httpx.HTTPError, PicGateError) as exc:
        yield failure_event(events, exc)
    except Exception as exc:  # the client must learn the stream failed; the log has the cause
        log.exception("chat stream failed")
        error = PicGateError("PicGate failed while relaying the stream.", code="internal_error")
        if events is not None:  # the log names the failure, the client gets no internals
            detail = PicGateError(type(exc).__name__, code="internal_error")
            events.api_error(detail, in_stream=True)
        yield error_event(error, events)
    finally:
        with anyio.CancelScope(shield=True):
            await reader.aclose()


def failure_event(events: EventLog | None, exc: httpx.HTTPError | PicGateError) -> bytes:
    """The error event for a stream that failed after its first byte; the failure is recorded
    (``EventLog.api_error``). A connection lost mid-answer is ``upstream_interrupted``."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        stalled = map_transport_error(exc)
        stalled.message = f"the upstream stream broke off: {stalled.message}"
        exc = stalled
    elif isinstance(exc, httpx.HTTPError):
        exc = interrupted(exc)
    if events is not None:
        events.api_error(events.redactor.error(exc), in_stream=True)
    return error_event(exc, events)
