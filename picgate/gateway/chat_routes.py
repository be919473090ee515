"""``POST /v1/chat/completions``: parse, hand the work to ``chat``, shape the answer.

A streaming request opens the upstream stream before answering, so an upstream that refuses
the request (4xx/5xx) gives the client a normal OpenAI error with that status; afterwards the
answer is ``text/event-stream`` and errors travel inside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from picgate.deps import GatewayAuth, GatewayDep, public_base_url
from picgate.errors import BadRequest
from picgate.gateway import chat
from picgate.gateway.routes import read_json_object

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


@router.post("/chat/completions")
async def chat_completions(request: Request, gateway: GatewayDep) -> Response:
    services, settings = gateway.services, gateway.settings
    body = await read_json_object(request)
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be a boolean", param="stream", code="invalid_type")
    services.events.count("requests")
    base_url = public_base_url(request, settings)
    own_bases = list(dict.fromkeys([base_url, str(request.base_url).rstrip("/")]))
    if body.get("stream") is True:
        stream = await chat.open_stream(
            services, settings, body, base_url=base_url, own_bases=own_bases
        )
        return EventStreamResponse(stream.events(), on_close=stream.aclose)
    answer = await chat.complete(services, settings, body, base_url=base_url, own_bases=own_bases)
    return JSONResponse(answer)
