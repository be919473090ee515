"""A stub upstream: a real HTTP server on 127.0.0.1 replaying the captured OpenAI shapes.

Tests change its behaviour by replacing entries of ``handlers`` (path → async handler) or the
simple knobs (``image``, ``mode``); every request is recorded in ``requests``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.fixtures import load_json, load_sse
from tests.support.images import b64, make_image
from tests.support.servers import ServerThread

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, list[Any]] = field(default_factory=dict)


class StubUpstream:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.handlers: dict[str, Handler] = {}
        self.image: bytes = make_image("PNG", 20_000)
        self.mode = "b64_json"  # or "url"
        self.files: dict[str, tuple[bytes, str]] = {}
        self.app = Starlette(
            routes=[Route("/{path:path}", self._dispatch, methods=["GET", "POST"])]
        )
        self.server = ServerThread(self.app)
        self.reset()

    @property
    def origin(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.url + "/v1"

    def start(self) -> StubUpstream:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        self.requests.clear()
        self.image = make_image("PNG", 20_000)
        self.mode = "b64_json"
        self.files = {}
        self.handlers = {
            "/v1/models": self._models,
            "/v1/images/generations": self._generations,
            "/v1/images/edits": self._edits,
            "/v1/chat/completions": self._chat,
        }

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        recorded = Recorded(request.method, path, dict(request.headers))
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            recorded.json = json.loads(await request.body())
        elif ctype.startswith("multipart/form-data"):
            async with request.form() as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        recorded.form.setdefault(key, []).append(value)
                    else:
                        data = await value.read()
                        recorded.form.setdefault(key, []).append(
                            (value.filename, data, value.content_type)
                        )
        self.requests.append(recorded)
        request.state.recorded = recorded
        if path.startswith("/files/"):
            name = path.removeprefix("/files/")
            if name not in self.files:
                return Response(status_code=404)
            data, mime = self.files[name]
            return Response(data, media_type=mime)
        handler = self.handlers.get(path)
        if handler is None:
            return JSONResponse({"error": {"message": "no such route"}}, status_code=404)
        return await handler(request)

    def last(self, path: str) -> Recorded:
        for rec in reversed(self.requests):
            if rec.path == path:
                return rec
        raise AssertionError(f"upstream saw no request to {path}")

    # -- default behaviour ---------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        return JSONResponse(load_json("openwebui_models_list_expected.json"))

    def images_answer(self, n: int) -> dict[str, Any]:
        answer = load_json("openai_images_b64.json")
        if self.mode == "url":
            answer = copy.deepcopy(load_json("openai_images_url.json"))
            items = []
            for i in range(n):
                name = f"img-{len(self.files)}-{i}.png"
                self.files[name] = (self.image, "image/png")
                items.append({"url": f"{self.origin}/files/{name}", "revised_prompt": "revised"})
            answer["data"] = items
            return answer
        answer["data"] = [{"b64_json": b64(self.image)} for _ in range(n)]
        return answer

    async def _generations(self, request: Request) -> Response:
        body = request.state.recorded.json or {}
        return JSONResponse(self.images_answer(int(body.get("n") or 1)))

    async def _edits(self, request: Request) -> Response:
        form = request.state.recorded.form
        n = int(form.get("n", ["1"])[0])
        return JSONResponse(self.images_answer(n))

    async def _chat(self, request: Request) -> Response:
        body = request.state.recorded.json or {}
        if body.get("stream"):
            data = load_sse("openrouter_stream_chunks.txt")
            return StreamingResponse(iter([data]), media_type="text/event-stream")
        return JSONResponse(load_json("openrouter_chat_images.json"))
