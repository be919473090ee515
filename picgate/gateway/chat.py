"""Chat completions: the upstream call, the image sink, and the SSE relay of a stream.

The pure parts live elsewhere (``sse.py`` parses, ``rewrite.py`` finds images, ``history.py``
shapes the request); this module wires them to the services. Routes call ``complete`` (one JSON
answer) or ``open_stream`` and then iterate ``ChatStream.events()``.

Stream contract (``relay``): comment lines are forwarded at once; every ``data`` payload goes
through ``StreamRewriter`` and out as soon as it comes back (nothing waits for more upstream
data); ``[DONE]`` ends the relay. Plain text chunks that arrived in the same network read are
merged first (``coalesce``): same text, fewer chunks. While the upstream is silent for
``keepalive`` seconds a ``: keep-alive`` comment goes out. A failure after the first byte (the upstream connection drops,
a read times out, storing fails unexpectedly) becomes ``data: {"error": {...}}`` (no ``choices``,
the shape OpenWebUI and the openai SDK surface) followed by ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

import anyio
import httpx

from picgate.config import Settings
from picgate.errors import (
    BadRequest,
    Gone,
    NotFound,
    PicGateError,
    StorageUnavailable,
    UpstreamError,
)
from picgate.gateway.fetch import fetch_image_bytes
from picgate.gateway.history import HistoryImages, last_user_text, messages_of, upstream_body
from picgate.gateway.images_api import upstream_model
from picgate.gateway.inline import InlineBudget
from picgate.gateway.rewrite import ImageSink, StreamRewriter, rewrite_completion
from picgate.gateway.sse import SSEEvent, SSEParser, encode_comment, encode_event
from picgate.gateway.upstream import map_transport_error
from picgate.services import Services

__all__ = [
    "DONE",
    "KEEPALIVE",
    "ChatStream",
    "ChunkReader",
    "coalesce",
    "complete",
    "error_event",
    "guarded",
    "history_images",
    "image_sink",
    "open_stream",
    "relay",
]

log = logging.getLogger("picgate")

KEEPALIVE = encode_comment("keep-alive")
DONE = encode_event("[DONE]")
_CHOICE_ENDS = ("finish_reason", "native_finish_reason", "logprobs")
EXTERNAL_FETCH_TIMEOUT = 30.0


def image_sink(services: Services, *, base_url: str, prompt: str | None) -> ImageSink:
    """Store one image of a chat answer; its public URL, or None to leave the text as it was.

    None when the payload is not an image (bad base64, not a raster type, too large) or when
    storing fails (disk, the ``after_store`` hook's remote store): the client then keeps the
    original data URL instead of losing the image.
    """

    async def sink(payload: str) -> str | None:
        try:
            stored = await services.images.save_encoded(payload, source="chat", prompt=prompt)
            stored = await services.after_store(stored)
        except BadRequest as exc:  # also UnsupportedMediaType and PayloadTooLarge
            services.events.warning(f"⚠️ 对话中的图片数据无效，保留原文: {exc.message}")
            return None
        except (StorageUnavailable, OSError) as exc:
            services.events.error(f"❌ 对话图片保存失败，已保留原始数据: {exc}")
            return None
        services.events.info(f"✅ 对话图片已保存: {stored.id[:8]}...")
        return base_url + stored.path

    return sink


def history_images(
    services: Services, settings: Settings, own_bases: Sequence[str]
) -> HistoryImages:
    """``HistoryImages`` backed by the image store and, when allowed, the SSRF-guarded fetch."""

    async def load_own(image_id: str) -> bytes | None:
        try:
            return await services.serving.read_bytes(image_id)
        except (NotFound, Gone):
            return None

    async def fetch(url: str) -> bytes:
        return await fetch_image_bytes(
            services.http,
            url,
            max_bytes=settings.max_image_mb * 2**20,
            timeout=EXTERNAL_FETCH_TIMEOUT,
        )

    return HistoryImages(
        own_bases=own_bases,
        load_own=load_own,
        fetch=fetch if settings.allow_external_image_fetch else None,
        budget=InlineBudget.from_mb(settings.max_inline_images_mb),
    )


async def _prepare(
    services: Services, settings: Settings, body: dict[str, Any], own_bases: Sequence[str]
) -> tuple[dict[str, Any], str | None]:
    """The upstream body and the prompt to record with stored images; logs the request."""
    messages = messages_of(body)
    images = history_images(services, settings, own_bases)
    out = await upstream_body(
        body, upstream_model=upstream_model(settings, body.get("model")), images=images
    )
    if images.inlined:
        services.events.info(f"🖼️ 历史图片已内联: {images.inlined} 张")
    services.events.info(f"📤 发起对话请求: {len(messages)} 条消息")
    return out, last_user_text(messages)


async def complete(
    services: Services,
    settings: Settings,
    body: dict[str, Any],
    *,
    base_url: str,
    own_bases: Sequence[str],
) -> dict[str, Any]:
    """A non-streaming chat completion with its images stored and linked."""
    request, prompt = await _prepare(services, settings, body, own_bases)
    answer = await services.upstream.post_json(settings, "chat/completions", request)
    if not isinstance(answer, dict):
        raise UpstreamError(
            "the upstream chat answer is not a JSON object", code="bad_upstream_response"
        )
    services.events.info("📥 上游对话返回成功")
    sink = image_sink(services, base_url=base_url, prompt=prompt)
    return await rewrite_completion(answer, sink)


def error_event(error: PicGateError) -> bytes:
    """An error inside a stream (OpenAI's shape, no ``choices``), then ``[DONE]``."""
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


# (the string, the index after its closing quote) from the index after its opening quote; C-fast
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_Plain = tuple[dict[str, Any], dict[str, Any], str]  # (chunk, its shape, the text)
_Run = list[tuple[SSEEvent, dict[str, Any], dict[str, Any], str, "_Template | None"]]
_CONTENT_VALUE = re.compile(r'"content"[ \t\r\n]*:[ \t\r\n]*"')
_PROBE = "picgate\0probe"
_PROBE_JSON = json.dumps(_PROBE)[1:]  # the literal after its opening quote, closing quote kept
_TEMPLATES_MAX = 4  # distinct chunk shapes remembered per network read
_TEMPLATE_TRIES = 8  # template builds attempted per network read (each parses twice)


def _plain_chunk(chunk: Any) -> _Plain | None:
    """(chunk, its shape with the text blanked, the text) for a chunk that only adds content.

    Only such chunks are merged: one choice, no finish reason or logprobs, a delta holding
    ``content`` (and maybe ``role``); the event must also have no ``event``/``id``/comments
    (``_mergeable``).
    """
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    delta = choice.get("delta")
    if (
        not isinstance(delta, dict)
        or not isinstance(delta.get("content"), str)
        or not set(delta) <= {"content", "role"}
        or any(choice.get(key) is not None for key in _CHOICE_ENDS)
    ):
        return None
    shape = {**chunk, "choices": [{**choice, "delta": {**delta, "content": ""}}]}
    return chunk, shape, delta["content"]


def _mergeable(event: SSEEvent) -> str | None:
    """The JSON payload of an event that may be a plain text chunk (no event/id/comments)."""
    data = event.data
    if data is None or event.comments or event.event is not None or event.id is not None:
        return None
    return data if '"content"' in data else None


@dataclass(frozen=True, slots=True)
class _Template:
    """The JSON text of a plain text chunk around its ``content`` string literal.

    Chunks of one stream differ only in that literal. A payload that starts with ``prefix``
    (which ends with the literal's opening quote) and ends with ``suffix`` (right after its
    closing quote), with one well-formed string literal between, has the same tokens as the
    chunk the template came from but that one string, so it parses to ``chunk`` with another
    ``content``: decoding the literal alone is enough. ``build`` checks with a probe value that
    the literal is the ``content`` that counts (not a key, not a duplicated key, not another
    field).
    """

    prefix: str
    suffix: str
    chunk: dict[str, Any]
    shape: dict[str, Any]

    @classmethod
    def build(cls, data: str, plain: _Plain) -> _Template | None:
        chunk, shape, text = plain
        for match in itertools.islice(_CONTENT_VALUE.finditer(data), 2):
            try:
                value, end = _scanstring(data, match.end())
            except ValueError:
                continue
            if value != text:
                continue
            prefix, suffix = data[: match.end()], data[end:]
            try:
                probe = _plain_chunk(json.loads(prefix + _PROBE_JSON + suffix))
            except ValueError:
                continue
            if probe is not None and probe[2] == _PROBE and probe[1] == shape:
                return cls(prefix, suffix, chunk, shape)
        return None

    def payload(self, payloads: list[str], texts: list[str]) -> str:
        """This chunk with ``"".join(texts)`` as ``content``, in the upstream's own formatting.

        ``payloads`` are the JSON texts ``texts`` came from (this template matched each). A
        literal without escapes is its text verbatim (same length; an escape always decodes
        shorter), so when no literal had one the joined text is the joined literal. Otherwise
        the text is encoded again: joining escaped literals could pair a surrogate split over
        two chunks into one character.
        """
        text = "".join(texts)
        around = len(self.prefix) + 1 + len(self.suffix)
        if sum(len(payload) - around for payload in payloads) == len(text):
            return self.prefix + text + '"' + self.suffix
        return self.prefix[:-1] + encode_basestring(text) + self.suffix

    def text(self, data: str) -> str | None:
        """The ``content`` of ``data`` when it is this chunk but for that text, else None."""
        start, end = len(self.prefix), len(data) - len(self.suffix)
        if end <= start or not data.startswith(self.prefix) or not data.endswith(self.suffix):
            return None
        try:
            value, stop = _scanstring(data, start)
        except ValueError:
            return None
        return value if stop == end else None


class _PlainTexts:
    """``_plain_chunk`` of the events of one network read, reusing learnt ``_Template``s."""

    def __init__(self) -> None:
        self._templates: list[_Template] = []
        self._tries = _TEMPLATE_TRIES

    def __call__(self, event: SSEEvent) -> tuple[_Plain, _Template | None] | None:
        """The plain text chunk of ``event`` (or None) and the template its text matched."""
        data = _mergeable(event)
        if data is None:
            return None
        for template in self._templates:
            text = template.text(data)
            if text is not None:
                return (template.chunk, template.shape, text), template
        try:
            plain = _plain_chunk(json.loads(data))
        except ValueError:
            return None
        if plain is None or not self._tries or len(self._templates) >= _TEMPLATES_MAX:
            return None if plain is None else (plain, None)
        self._tries -= 1
        built = _Template.build(data, plain)
        if built is None:
            return plain, None
        self._templates.append(built)
        return (built.chunk, built.shape, plain[2]), built


def coalesce(events: list[SSEEvent]) -> list[SSEEvent]:
    """Merge runs of plain text chunks that arrived together into one chunk each.

    The upstream sent them in the same network read, so nothing waits: the client gets the same
    text, in fewer chunks. It keeps the relay linear and cheap when an image comes as thousands
    of small chunks (each one would otherwise be parsed, rewritten and sent on its own): after
    the first chunk of a shape, the next ones are recognised by their JSON text around the
    ``content`` string (``_Template``) without parsing them whole.
    """
    if len(events) < 2:
        return events
    out: list[SSEEvent] = []
    run: _Run = []
    plain_text = _PlainTexts()

    def close_run() -> None:
        template = run[0][4] if run else None
        if len(run) == 1:
            out.append(run[0][0])
        elif template is not None and all(entry[4] is template for entry in run):
            payloads = [entry[0].data or "" for entry in run]
            out.append(SSEEvent(data=template.payload(payloads, [entry[3] for entry in run])))
        elif run:
            chunk, texts = run[0][1], [entry[3] for entry in run]
            choice = chunk["choices"][0]
            merged = {**chunk, "choices": [{**choice, "delta": {**choice["delta"]}}]}
            merged["choices"][0]["delta"]["content"] = "".join(texts)
            out.append(SSEEvent(data=json.dumps(merged, ensure_ascii=False, separators=(",", ":"))))
        run.clear()

    for event in events:
        found = plain_text(event)
        if found is None:
            close_run()
            out.append(event)
            continue
        plain, template = found
        if run and run[0][2] is not plain[1] and run[0][2] != plain[1]:
            close_run()
        run.append((event, *plain, template))
    close_run()
    return out


async def _forward(event: SSEEvent, rewriter: StreamRewriter) -> bytes:
    out = bytearray()
    if event.comments:
        out += encode_comment("\n".join(event.comments))
    if event.data is None:
        return bytes(out)
    payloads = await rewriter.feed(event.data)
    for i, payload in enumerate(payloads):
        if i == len(payloads) - 1:
            # the event name and id belong to the upstream's own payload, the last one
            if event.event is not None:
                out += f"event: {event.event}\n".encode()
            if event.id is not None:
                out += f"id: {event.id}\n".encode()
        out += encode_event(payload)
    return bytes(out)


def relay(
    chunks: AsyncIterator[bytes],
    rewriter: StreamRewriter,
    *,
    keepalive: float,
    services: Services | None = None,
) -> AsyncIterator[bytes]:
    """The client's side of an upstream SSE stream (see the module doc for the contract)."""
    reader = ChunkReader(chunks)
    return guarded(_relayed(reader, rewriter, keepalive), reader, services)


async def _relayed(
    reader: ChunkReader, rewriter: StreamRewriter, keepalive: float
) -> AsyncGenerator[bytes, None]:
    parser = SSEParser()
    while True:
        if not await reader.ready(keepalive):
            yield KEEPALIVE
            continue
        chunk = reader.take()
        events = parser.feed(chunk) if chunk is not None else parser.close()
        for event in coalesce(events):
            out = await _forward(event, rewriter)
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
    source: AsyncGenerator[bytes, None], reader: ChunkReader, services: Services | None
) -> AsyncIterator[bytes]:
    """``source``'s bytes; a failure after the first byte becomes the stream's error event (and
    a log line), and ``reader`` is closed however the stream ends, a client leaving included."""
    try:
        async with contextlib.aclosing(source):
            async for out in source:
                yield out
    except (httpx.HTTPError, PicGateError) as exc:
        yield failure_event(services, exc)
    except Exception as exc:  # the client must learn the stream failed; the log has the cause
        log.exception("chat stream failed")
        error = PicGateError("PicGate failed while relaying the stream.", code="internal_error")
        log_stream_error(services, error, detail=type(exc).__name__)
        yield error_event(error)
    finally:
        with anyio.CancelScope(shield=True):
            await reader.aclose()


def failure_event(services: Services | None, exc: httpx.HTTPError | PicGateError) -> bytes:
    """The error event for a stream that failed after its first byte; the failure is logged."""
    if isinstance(exc, httpx.HTTPError):
        broken = map_transport_error(exc)
        broken.message = f"the upstream stream broke off: {broken.message}"
        exc = broken
    log_stream_error(services, exc)
    return error_event(exc)


def log_stream_error(
    services: Services | None, error: PicGateError, *, detail: str | None = None
) -> None:
    if services is not None:
        services.events.error(f"❌ 对话流中断: {detail or error.message}")


class ChatStream:
    """An upstream stream that answered 2xx, ready to relay; ``aclose`` releases it."""

    def __init__(
        self,
        *,
        services: Services,
        response: httpx.Response,
        sink: ImageSink,
        keepalive: float,
        stack: AsyncExitStack,
    ) -> None:
        self.services = services
        self.response = response
        self.sink = sink
        self.keepalive = keepalive
        self._stack = stack

    async def events(self) -> AsyncIterator[bytes]:
        """The bytes to send to the client, as they become ready."""
        from picgate.gateway import unstreamed

        chunks = self.response.aiter_bytes()
        if unstreamed.is_json_answer(self.response):  # the upstream ignored ``stream: true``
            self.services.events.warning("⚠️ 上游未按流式返回，已转换为流式输出")
            source = unstreamed.events(
                chunks, self.sink, keepalive=self.keepalive, services=self.services
            )
        else:
            source = relay(
                chunks, StreamRewriter(self.sink), keepalive=self.keepalive, services=self.services
            )
        async for piece in source:
            yield piece

    async def aclose(self) -> None:
        """Close the upstream response (the upstream sees the request end). Idempotent."""
        await self._stack.aclose()


async def open_stream(
    services: Services,
    settings: Settings,
    body: dict[str, Any],
    *,
    base_url: str,
    own_bases: Sequence[str],
) -> ChatStream:
    """Send a streaming chat request; UpstreamError when the upstream refuses it up front."""
    request, prompt = await _prepare(services, settings, body, own_bases)
    stack = AsyncExitStack()
    try:
        response = await stack.enter_async_context(
            services.upstream.stream(
                settings, "chat/completions", request, accept="text/event-stream"
            )
        )
    except BaseException:
        await stack.aclose()
        raise
    services.events.info("📥 上游对话返回成功")
    sink = image_sink(services, base_url=base_url, prompt=prompt)
    return ChatStream(
        services=services,
        response=response,
        sink=sink,
        keepalive=settings.stream_keepalive_seconds,
        stack=stack,
    )
