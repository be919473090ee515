"""Chat completions: the upstream call and the image sink.

The pure parts live elsewhere (``sse.py`` parses, ``rewrite.py`` finds images, ``history.py``
shapes the request, ``coalesce.py`` merges text chunks) and ``relay.py`` relays a stream; this
module wires them to the library, the event log and the upstream client. Routes call ``complete`` (one JSON answer) or ``open_stream``
and then iterate ``ChatStream.events()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from picgate.attribution import Attribution
from picgate.config import Settings
from picgate.errors import BadRequest, Gone, NotFound, StorageUnavailable, UpstreamError
from picgate.gateway import relay, unstreamed
from picgate.gateway.buffers import BufferHold
from picgate.gateway.fetch import fetch_image_bytes
from picgate.gateway.history import (
    MAX_LOOKUPS,
    HistoryImages,
    last_user_text,
    messages_of,
    upstream_body,
)
from picgate.gateway.inline import InlineBudget
from picgate.gateway.parts import GatewayParts
from picgate.gateway.rewrite import LEFT_OUT, StreamRewriter, rewrite_completion
from picgate.gateway.tasks import upstream_chat_model
from picgate.gateway.upstream import base64_chars, event_limit, image_limit, response_limit
from picgate.library.records import ImageOrigin, StoredImage

if TYPE_CHECKING:
    import httpx

__all__ = ["ChatImages", "ChatStream", "complete", "history_images", "image_sink", "open_stream"]

EXTERNAL_FETCH_TIMEOUT = 30.0


class ChatImages:
    """Stores the images of one chat answer (recording who asked); ``__call__`` is the
    ``ImageSink`` for base64 text, ``decoded`` the ``DecodedSink`` for bytes already decoded.

    Both return the image's public URL, or None to leave the text as it was: when the payload
    is not an image (bad base64, not a raster type, too large) or storing fails (disk;
    serverless: the archive), the client keeps the original data URL instead of losing it.
    ``variant`` (``CHAT_IMAGE_VARIANT``, a checked variant query) is added to the URL: chats
    then load the lighter variant, and the same URL without it is the full image.

    Past ``max_images`` images in this answer (``MAX_IMAGES_PER_ANSWER``; one upstream answer
    carried 3000) an image is neither decoded nor stored and is left out of the answer
    (``LEFT_OUT``), with one log line per answer.
    """

    def __init__(
        self,
        parts: GatewayParts,
        *,
        base_url: str,
        origin: ImageOrigin,
        variant: str,
        max_images: int,
    ) -> None:
        self._parts = parts
        self._base_url = base_url
        self._origin = origin
        self._suffix = f"?{variant}" if variant else ""
        self._max_images = max_images
        self._seen = 0

    async def __call__(self, payload: str) -> str | None:
        if self._past_cap():
            return LEFT_OUT
        return await self._stored(self._parts.library.save_encoded(payload, origin=self._origin))

    async def decoded(self, data: bytes) -> str | None:
        if self._past_cap():
            return LEFT_OUT
        return await self._stored(self._parts.library.save(data, origin=self._origin))

    def _past_cap(self) -> bool:
        """Count one more image; True once there are more than ``max_images`` (logged once)."""
        self._seen += 1
        if self._seen == self._max_images + 1:
            self._parts.events.warning(
                f"⚠️ 对话应答中的图片超过 MAX_IMAGES_PER_ANSWER={self._max_images}，"
                "其余图片未保存，已从应答中略去"
            )
        return self._seen > self._max_images

    async def _stored(self, saving: Awaitable[StoredImage]) -> str | None:
        events = self._parts.events
        try:
            stored = await saving
        except BadRequest as exc:  # also UnsupportedMediaType and PayloadTooLarge
            events.warning(f"⚠️ 对话中的图片数据无效，保留原文: {exc.message}")
            return None
        except (StorageUnavailable, OSError) as exc:
            events.error(f"❌ 对话图片保存失败，已保留原始数据: {exc}")
            return None
        events.info(f"✅ 对话图片已保存: {stored.id[:8]}...")
        await self._parts.count_images(1)
        return self._base_url + stored.path + self._suffix


def image_sink(
    parts: GatewayParts,
    *,
    base_url: str,
    prompt: str | None,
    who: Attribution,
    max_images: int,
    variant: str = "",
) -> ChatImages:
    """The store for the images of a chat answer (see ``ChatImages``)."""
    origin = who.origin("chat", prompt)
    return ChatImages(
        parts, base_url=base_url, origin=origin, variant=variant, max_images=max_images
    )


def history_images(
    parts: GatewayParts, settings: Settings, own_bases: Sequence[str], hold: BufferHold
) -> HistoryImages:
    """``HistoryImages`` backed by the image store (one size lookup per request) and, when
    allowed, the SSRF-guarded fetch; what it inlines is taken from ``hold``."""

    async def load_own(image_id: str) -> bytes | None:
        try:
            return await parts.library.serving.read_bytes(image_id)
        except (NotFound, Gone):
            return None

    async def fetch(url: str) -> bytes:
        return await fetch_image_bytes(
            parts.http,
            url,
            max_bytes=settings.max_image_mb * 2**20,
            timeout=EXTERNAL_FETCH_TIMEOUT,
        )

    return HistoryImages(
        own_bases=own_bases,
        load_own=load_own,
        fetch=fetch if settings.allow_external_image_fetch else None,
        budget=InlineBudget.from_mb(settings.max_inline_images_mb),
        keep_full=settings.inline_full_images,
        lookup=parts.library.sizes,
        hold=hold,
    )


async def _prepare(
    parts: GatewayParts,
    settings: Settings,
    body: dict[str, Any],
    own_bases: Sequence[str],
    hold: BufferHold,
) -> tuple[dict[str, Any], str | None]:
    """The upstream body and the prompt to record with stored images; logs the request."""
    messages = messages_of(body)
    images = history_images(parts, settings, own_bases, hold)
    out = await upstream_body(
        body, upstream_model=upstream_chat_model(settings, body.get("model")), images=images
    )
    if images.inlined:
        parts.events.info(f"🖼️ 历史图片已内联: {images.inlined} 张")
    if images.trim.downscaled or images.trim.omitted:
        parts.events.info(
            f"🗜️ 历史图片超过 MAX_INLINE_IMAGES_MB: {images.trim.full} 张原图, "
            f"{images.trim.downscaled} 张缩小, {images.trim.omitted} 张省略"
        )
    if images.unlooked:
        parts.events.warning(
            f"⚠️ 请求引用的图片过多，只查找前 {MAX_LOOKUPS} 个，"
            f"{images.unlooked} 个图片链接未查找、按原文发送"
        )
    parts.events.info(f"📤 发起对话请求: {len(messages)} 条消息")
    return out, last_user_text(messages)


async def complete(
    parts: GatewayParts,
    settings: Settings,
    body: dict[str, Any],
    *,
    base_url: str,
    own_bases: Sequence[str],
    who: Attribution,
) -> dict[str, Any]:
    """A non-streaming chat completion with its images stored and linked; the inlined history
    and the buffered answer are held in the server-wide budget until it is built."""
    async with parts.buffers.hold() as hold:
        request, prompt = await _prepare(parts, settings, body, own_bases, hold)
        answer = await parts.upstream.post_json(settings, "chat/completions", request, hold=hold)
        del request  # the inlined images are not needed past the upstream call
        if not isinstance(answer, dict):
            raise UpstreamError(
                "the upstream chat answer is not a JSON object", code="bad_upstream_response"
            )
        parts.events.info("📥 上游对话返回成功")
        sink = image_sink(
            parts,
            base_url=base_url,
            prompt=prompt,
            who=who,
            max_images=settings.max_images_per_answer,
            variant=settings.chat_image_variant,
        )
        return await rewrite_completion(answer, sink)


class ChatStream:
    """An upstream stream that answered 2xx, ready to relay; ``aclose`` releases it."""

    def __init__(
        self,
        *,
        parts: GatewayParts,
        response: httpx.Response,
        sink: ChatImages,
        keepalive: float,
        stack: AsyncExitStack,
        settings: Settings,
        hold: BufferHold,
    ) -> None:
        self.parts = parts
        self.response = response
        self.sink = sink
        self.keepalive = keepalive
        self._stack = stack
        self.settings = settings
        self.hold = hold  # released by ``aclose`` (on the stack)

    async def events(self) -> AsyncIterator[bytes]:
        """The bytes to send to the client, as they become ready."""
        chunks = self.response.aiter_bytes()
        if unstreamed.is_json_answer(self.response):  # the upstream ignored ``stream: true``
            self.parts.events.warning("⚠️ 上游未按流式返回，已转换为流式输出")
            source = unstreamed.events(
                chunks,
                self.sink,
                keepalive=self.keepalive,
                events=self.parts.events,
                max_body=response_limit(self.settings),
                hold=self.hold,
            )
        else:
            max_image = base64_chars(image_limit(self.settings))
            source = relay.relay(
                chunks,
                StreamRewriter(self.sink, max_image=max_image, decoded=self.sink.decoded),
                keepalive=self.keepalive,
                events=self.parts.events,
                max_event=event_limit(self.settings),
            )
        async for piece in source:
            yield piece

    async def aclose(self) -> None:
        """Close the upstream response (the upstream sees the request end). Idempotent."""
        await self._stack.aclose()


async def open_stream(
    parts: GatewayParts,
    settings: Settings,
    body: dict[str, Any],
    *,
    base_url: str,
    own_bases: Sequence[str],
    who: Attribution,
) -> ChatStream:
    """Send a streaming chat request; UpstreamError when the upstream refuses it up front.

    The request's share of the buffer budget (its inlined history, a JSON answer to buffer)
    lasts until the stream is closed: the upstream request keeps its body until then."""
    stack = AsyncExitStack()
    hold = parts.buffers.hold()
    stack.callback(hold.release)
    try:
        request, prompt = await _prepare(parts, settings, body, own_bases, hold)
        response = await stack.enter_async_context(
            parts.upstream.stream(settings, "chat/completions", request, accept="text/event-stream")
        )
    except BaseException:
        await stack.aclose()
        raise
    parts.events.info("📥 上游对话返回成功")
    sink = image_sink(
        parts,
        base_url=base_url,
        prompt=prompt,
        who=who,
        max_images=settings.max_images_per_answer,
        variant=settings.chat_image_variant,
    )
    return ChatStream(
        parts=parts,
        response=response,
        sink=sink,
        keepalive=settings.stream_keepalive_seconds,
        stack=stack,
        settings=settings,
        hold=hold,
    )
