"""A two-turn image chat as Open WebUI runs and stores it: directly against an image model that
streams base64, and through PicGate.

A stub upstream (this module, ``--stub PORT``) streams each answer the way an image model behind
a chat API does: a line of text, then the image as a markdown data URL cut into content deltas
(``--chunk-kb`` each). Turn 1 asks for an image; turn 2 ("make it blue") sends the whole history
back, as Open WebUI does. The client plays the browser's side of Open WebUI: it reads the stream
and keeps each assistant message the way Open WebUI stores a chat (the message in
``chat.history.messages`` and again in ``chat.messages``), so the printed "stored chat" is the
JSON Open WebUI would write to its database for that chat.

Printed, direct and through PicGate, with the ratio from the same run: the stored chat's bytes,
the bytes streamed to the browser per turn, and the time from sending a turn until the image can
be shown (direct: the whole data URL has arrived; PicGate: the event carrying the image's URL).
``--link-mbps`` caps the browser's download rate (the client reads no faster), as a browser on a
real network would; 0 (the default) reads as fast as loopback allows.

    .venv/bin/python -m bench.openwebui_chat [--image-bytes 1099576] [--rounds 3] [--link-mbps 0]

The default image is 1,099,576 bytes: 1,466,104 base64 characters, the size of the image a real
Open WebUI 0.12.4 run inlined in its turn-2 request (the issue's figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.procs import free_port, picgate, process

KEY = "pg-bench-key-0123456789"
META = {"id": "chatcmpl-owui", "object": "chat.completion.chunk", "created": 1, "model": "m"}
TURNS = ("draw a red fox in the snow", "make it blue")


# -- the stub upstream (runs in its own process) -------------------------------------------------


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {**META, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def stub_app(image_bytes: int, chunk: int) -> Any:
    import base64

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from tests.support.images import make_image

    image = "data:image/png;base64," + base64.b64encode(
        make_image("PNG", image_bytes, seed=1)
    ).decode("ascii")

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(request: Request) -> StreamingResponse:
        await request.body()  # the whole history, read as a real upstream would

        def events() -> Iterator[bytes]:
            yield _event({"role": "assistant", "content": "Here is your image:\n\n"})
            text = f"![image]({image})"
            for start in range(0, len(text), chunk):
                yield _event({"content": text[start : start + chunk]})
            yield _event({}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


# -- the browser's side of Open WebUI ------------------------------------------------------------


@dataclass
class Turn:
    streamed: int  # bytes of the SSE body
    to_image: float  # seconds from sending until the image can be shown
    content: str


@dataclass
class StoredChat:
    """A chat as Open WebUI keeps it: each message in ``history.messages`` and in ``messages``."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    def add(self, role: str, content: str) -> None:
        parent = self.messages[-1]["id"] if self.messages else None
        message = {
            "id": str(uuid.uuid4()),
            "parentId": parent,
            "childrenIds": [],
            "role": role,
            "content": content,
            "timestamp": 1764240000,
            "models": ["picgate"],
        }
        if role == "assistant":
            message.update(model="picgate", modelName="picgate", done=True)
        if self.messages:
            self.messages[-1]["childrenIds"].append(message["id"])
        self.messages.append(message)

    def as_json(self) -> bytes:
        chat = {
            "id": "",
            "title": "Red fox in the snow",
            "models": ["picgate"],
            "params": {},
            "history": {
                "messages": {m["id"]: m for m in self.messages},
                "currentId": self.messages[-1]["id"] if self.messages else None,
            },
            "messages": self.messages,
            "tags": [],
            "timestamp": 1764240000,
            "files": [],
        }
        return json.dumps(chat).encode()

    def request_messages(self) -> list[dict[str, str]]:
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]


def shown(content: str) -> bool:
    """Whether ``content`` holds a whole markdown image the browser can show."""
    start = content.find("](")
    return start >= 0 and content.find(")", start + 2) >= 0


def run_turn(
    client: httpx.Client, url: str, headers: dict[str, str], body: dict[str, Any], mbps: float
) -> Turn:
    started = time.perf_counter()
    to_image = 0.0
    streamed = 0
    content = ""
    pending = b""
    with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for piece in response.iter_raw(64 * 1024):
            streamed += len(piece)
            if mbps > 0:  # the browser's link: this many bytes take this long to arrive
                due = started + streamed * 8 / (mbps * 1e6)
                time.sleep(max(0.0, due - time.perf_counter()))
            pending += piece
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.startswith(b"data: {"):
                    continue
                for choice in json.loads(line[6:]).get("choices", []):
                    content += choice.get("delta", {}).get("content") or ""
            if not to_image and shown(content):
                to_image = time.perf_counter() - started
    return Turn(streamed, to_image or time.perf_counter() - started, content)


def run_chat(base: str, headers: dict[str, str], model: str, mbps: float) -> tuple[int, list[Turn]]:
    chat = StoredChat()
    turns = []
    with httpx.Client(timeout=300) as client:
        for prompt in TURNS:
            chat.add("user", prompt)
            body = {"model": model, "stream": True, "messages": chat.request_messages()}
            turn = run_turn(client, base + "/chat/completions", headers, body, mbps)
            chat.add("assistant", turn.content)
            turns.append(turn)
    return len(chat.as_json()), turns


def _size(n: float) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-bytes", type=int, default=1_099_576)
    parser.add_argument("--chunk-kb", type=int, default=16, help="base64 per upstream delta")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--link-mbps", type=float, default=0.0)
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        import uvicorn

        app = stub_app(args.image_bytes, args.chunk_kb * 1024)
        uvicorn.run(app, host="127.0.0.1", port=args.stub, log_level="warning")
        return

    port = free_port()
    stub_args = [sys.executable, "-m", "bench.openwebui_chat", "--stub", str(port)]
    stub_args += ["--image-bytes", str(args.image_bytes), "--chunk-kb", str(args.chunk_kb)]
    upstream = f"http://127.0.0.1:{port}/v1"
    with (
        process(stub_args, {}, upstream + "/models"),
        picgate(upstream, False, GATEWAY_MODEL_NAME="picgate") as gateway,
    ):
        runs: dict[str, list[tuple[int, list[Turn]]]] = {"direct": [], "picgate": []}
        for _ in range(args.rounds):  # interleaved: both see the same machine
            runs["direct"].append(run_chat(upstream, {}, "m", args.link_mbps))
            auth = {"Authorization": f"Bearer {KEY}"}
            runs["picgate"].append(run_chat(gateway + "/v1", auth, "picgate", args.link_mbps))

    link = f"{args.link_mbps:g} Mbit/s" if args.link_mbps else "loopback"
    print(
        f"two-turn image chat, image {args.image_bytes:,} bytes "
        f"({(args.image_bytes + 2) // 3 * 4:,} base64 chars), {args.rounds} rounds, "
        f"browser link: {link}"
    )
    figures: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        stored = results[-1][0]
        streamed = statistics.median(sum(t.streamed for t in turns) for _, turns in results)
        first = statistics.median(turns[0].to_image for _, turns in results)
        second = statistics.median(turns[1].to_image for _, turns in results)
        figures[name] = {"stored": stored, "streamed": streamed, "t1": first, "t2": second}
        print(
            f"  {name:8} stored chat {_size(stored):>9}   streamed to the browser "
            f"{_size(streamed):>9}   image shown after: turn 1 {first * 1000:7.1f} ms, "
            f"turn 2 {second * 1000:7.1f} ms"
        )
    d, p = figures["direct"], figures["picgate"]
    print(
        f"  direct / picgate: stored chat {d['stored'] / p['stored']:.0f}x, streamed "
        f"{d['streamed'] / p['streamed']:.0f}x, time to image turn 1 "
        f"{d['t1'] / p['t1']:.2f}x, turn 2 {d['t2'] / p['t2']:.2f}x"
    )


if __name__ == "__main__":
    main()
