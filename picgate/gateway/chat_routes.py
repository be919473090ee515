"""``POST /v1/chat/completions``: parse, hand the work to ``chat``, shape the answer.

A streaming request waits up to one keep-alive interval (``STREAM_KEEPALIVE_SECONDS``) for the
upstream to answer, so an upstream that refuses the request (4xx/5xx) gives the client a normal
OpenAI error with that status. An upstream still silent after that gets the client its
``text/event-stream`` at once, with keep-alive comments while it works (``PendingStream``).
From then on errors travel inside the stream.

The chat machinery (``chat``, ``image_chat``, ``relay``, ``tasks`` and the history, inline and
SSE modules under them) is imported by the first chat request, not with this module: a Lambda
cold start that serves ``GET /v1/models``, an image or a generation skips ~35 ms of CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from picgate.deps import GatewayAuth, GatewayDep, public_base_url
from picgate.errors import BadRequest, PicGateError
from picgate.eventlog import EventLog
from picgate.gateway import image_models
from picgate.gateway.routes import read_json_object, routed

if TYPE_CHECKING:
    from picgate.gateway import chat, image_chat

    # a chat model's upstream stream, or an image model's drawn answer
    OpenedStream = chat.ChatStream | image_chat.ImageChatStream

router = APIRouter(prefix="/v1", dependencies=[GatewayAuth])

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class EventStreamResponse(StreamingResponse):
    """A streamed SSE answer that always releases the upstream when it ends.

    However the response ends (finished, client gone, cancelled, never started), the body
    iterator is closed and ``on_close`` runs, shielded from cancellation, so the upstream
    request is closed too.
    """

    def __init__(
        self, content: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(content, headers=SSE_HEADERS)
        self._content = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._content, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self._on_close()


class PendingStream:
    """A stream whose upstream has not answered within one keep-alive interval.

    Some upstreams send no headers until the model is done. The client gets its
    ``text/event-stream`` at once, with keep-alive comments, so proxies and clients do not
    time out. When the upstream answers, its stream follows; a refusal then travels as the
    stream's error event, since the status line has left.
    """

    def __init__(
        self, opening: asyncio.Future[OpenedStream], *, events: EventLog, keepalive: float
    ) -> None:
        self._opening = opening
        self._events = events
        self._keepalive = keepalive

    async def events(self) -> AsyncIterator[bytes]:
        from picgate.gateway import relay

        while True:
            done, _ = await asyncio.wait({self._opening}, timeout=self._keepalive)
            if done:
                break
            yield relay.KEEPALIVE
        try:
            stream = self._opening.result()
        except PicGateError as exc:  # logged as the error answer would have been
            self._events.api_error(exc)
            yield relay.error_event(exc, self._events)
            return
        async for piece in stream.events():
            yield piece

    async def aclose(self) -> None:
        if not self._opening.done():
            drop(self._opening)  # the client left first
            return
        if not self._opening.cancelled() and self._opening.exception() is None:
            await self._opening.result().aclose()


def drop(opening: asyncio.Future[OpenedStream]) -> None:
    """Give up on a stream being opened: cancel it, and close it should it open regardless."""

    def close_if_open(future: asyncio.Future[OpenedStream]) -> None:
        if not future.cancelled() and future.exception() is None:
            closing = asyncio.ensure_future(future.result().aclose())
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)

    opening.cancel()
    opening.add_done_callback(close_if_open)


_closing: set[asyncio.Future[None]] = set()  # keeps those closes alive until they finish


@router.post("/chat/completions")
async def chat_completions(request: Request, gateway: GatewayDep) -> Response:
    from picgate.gateway import chat, image_chat, tasks

    parts = gateway.parts
    body = await read_json_object(request)
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be a boolean", param="stream", code="invalid_type")
    route = routed(request, gateway, body.get("model"))
    settings = route.settings
    parts.events.count("requests")
    # Open WebUI's steps apply to image models (image_models.is_image_model): GATEWAY_MODEL_NAME,
    # or the models file's `api: images` entries; route.name is the file's default model too
    body, dropped = image_models.without_tools(settings, body, gateway.models, model=route.name)
    if dropped:
        parts.events.info(f"🧰 已去掉发给图片模型的 {', '.join(dropped)}")
    task = tasks.recognise(settings, body, gateway.models, model=route.name)
    if task is not None:
        parts.events.count("tasks")
        if not settings.task_model:
            parts.events.info(f"🧩 Open WebUI 后台任务 ({task}): 本地回答，未调用图片模型")
            if body.get("stream") is True:
                return Response(tasks.local_events(task, body), headers=SSE_HEADERS)
            return JSONResponse(tasks.local_completion(task, body))
        parts.events.info(f"🧩 Open WebUI 后台任务 ({task}): 转给任务模型 {settings.task_model}")
        # a text model answers it: a chat call, never a drawing; at the same upstream, or, when
        # the models file lists TASK_MODEL, at that model's own upstream as its upstream model
        body = {**body, "model": settings.task_model}
        if gateway.models is not None and gateway.models.entry(settings.task_model) is not None:
            route = routed(request, gateway, settings.task_model)
            settings = route.settings.model_copy(update={"task_model": None})
    if task is None and (gateway.models is None or route.api == "images"):
        # an image call: the single upstream is an image upstream, or the model draws; a task
        # or an `api: chat` model of a models file is not held to the daily image limits
        await gateway.check_image_limits()
    base_url = public_base_url(request, gateway.settings, parts.events)
    who = gateway.who.with_body(body)
    own_bases = list(dict.fromkeys([base_url, str(request.base_url).rstrip("/")]))
    # an image-only model: the turn is an Images API call
    drawn = route.api == "images" and task is None
    if not drawn and task is None:
        body = route.with_params(body)
    if body.get("stream") is True:
        opening: asyncio.Future[OpenedStream] = asyncio.ensure_future(
            image_chat.open_stream(
                parts, route, body, base_url=base_url, own_bases=own_bases, who=who
            )
            if drawn
            else chat.open_stream(
                parts, settings, body, base_url=base_url, own_bases=own_bases, who=who
            )
        )
        try:
            await asyncio.wait({opening}, timeout=settings.stream_keepalive_seconds)
        except BaseException:  # the client left while the upstream was being asked
            drop(opening)
            raise
        if opening.done():  # the usual case: a refusal keeps its status (4xx/5xx)
            stream = opening.result()
            return EventStreamResponse(stream.events(), on_close=stream.aclose)
        pending = PendingStream(
            opening, events=parts.events, keepalive=settings.stream_keepalive_seconds
        )
        return EventStreamResponse(pending.events(), on_close=pending.aclose)
    if drawn:
        answer = await image_chat.complete(
            parts, route, body, base_url=base_url, own_bases=own_bases, who=who
        )
    else:
        answer = await chat.complete(
            parts, settings, body, base_url=base_url, own_bases=own_bases, who=who
        )
    # an upstream may echo a key in a successful answer too (a relay quoting its request)
    return JSONResponse(parts.events.redactor.value(answer))
