"""Memory held for requests is bounded per server, and the images kept from one answer are
capped: on a real socket against the stub upstream.

- ``MAX_BUFFERED_MB``: sixteen chat requests at once, each inlining a stored image, never make
  the upstream hold more inlined bytes at once than the budget (measured at the upstream, which
  holds every request a while), and the budget's own high-water mark stays under it.
- An Images API answer with 5000 images for ``n`` = 2 stores 2; a chat answer with 40 images
  keeps ``MAX_IMAGES_PER_ANSWER``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests import orm
from tests.conftest import Gateway
from tests.integration.test_images_streaming import temp_files_after_settling
from tests.orm import LogEntry
from tests.support.images import b64, data_url, make_image
from tests.support.upstream import StubUpstream

CHAT = "/v1/chat/completions"
GENERATIONS = "/v1/images/generations"
IMAGE = make_image("PNG", 500_000, seed=5)  # ~0.67 MB as a data URL
PARALLEL = 16


def stored_count(gateway: Gateway) -> int:
    return orm.read(
        gateway.services.db,
        lambda s: int(s.execute(sqlalchemy.text("select count(*) from images")).scalar() or 0),
    )


def log_lines(gateway: Gateway) -> list[str]:
    events = gateway.services.events
    events.flush()
    return list(orm.read(events.db, lambda s: [e.message for e in s.scalars(select(LogEntry))]))


def image_files(gateway: Gateway) -> list[Path]:
    root = gateway.services.settings.resolved_images_dir
    return [p for p in root.rglob("*") if p.is_file()]


class InFlight:
    """The bytes of the chat requests the upstream is handling at once, at most."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.sizes: list[int] = []

    async def handler(self, request: Request) -> Response:
        size = len(await request.body())
        self.sizes.append(size)
        self.now += size
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.3)  # a slow upstream: requests pile up unless PicGate waits
        finally:
            self.now -= size
        return JSONResponse(
            {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "ok"}}]}
        )


def test_buffer_budget_16_parallel_inlining_chats_stay_under_max_buffered_mb(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    budget_mb = 4
    gateway = start_gateway(max_buffered_mb=budget_mb, max_inline_images_mb=budget_mb)
    upstream.image = IMAGE
    made = httpx.post(gateway.url + GENERATIONS, headers=gateway.headers, json={"prompt": "p"})
    url = made.json()["data"][0]["url"]
    seen = InFlight()
    upstream.handlers[CHAT] = seen.handler
    body = {
        "model": "picgate",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": url}]}],
    }

    def one(_: int) -> httpx.Response:
        return httpx.post(gateway.url + CHAT, json=body, headers=gateway.headers, timeout=60)

    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = list(pool.map(one, range(PARALLEL)))

    ok = [a for a in answers if a.status_code == 200]
    busy = [a for a in answers if a.status_code == 503]
    assert len(ok) + len(busy) == PARALLEL, [a.text[:200] for a in answers]
    assert len(ok) >= 2
    for answer in busy:
        assert answer.json()["error"]["code"] == "server_busy"
        assert int(answer.headers["retry-after"]) > 0
    assert min(seen.sizes) > len(data_url(IMAGE))  # each request did carry the image inline
    # measured twice: independently by what reached the upstream, and by the budget itself
    assert seen.peak <= budget_mb * 2**20, f"{seen.peak / 2**20:.1f} MB in flight at once"
    budget = gateway.services.buffers
    assert 0 < budget.peak <= budget_mb * 2**20
    assert budget.held == 0  # every request gave its share back


def test_buffer_budget_non_stream_answer_over_budget_is_503_server_busy(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(max_buffered_mb=1, max_inline_images_mb=1)
    big = {"data": [{"b64_json": b64(make_image("PNG", 1_500_000, seed=2))}]}

    async def answer(request: Request) -> Response:
        return JSONResponse(big)

    upstream.handlers[GENERATIONS] = answer
    resp = httpx.post(
        gateway.url + GENERATIONS, headers=gateway.headers, json={"prompt": "p"}, timeout=60
    )
    assert resp.status_code == 503, resp.text[:300]
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "server_busy"
    assert "MAX_BUFFERED_MB" in error["message"]
    assert resp.headers["retry-after"]
    assert gateway.services.buffers.held == 0
    assert stored_count(gateway) == 0


def images_answer(count: int, image: bytes) -> dict[str, Any]:
    return {"created": 1, "data": [{"b64_json": b64(image)} for _ in range(count)]}


def test_images_api_upstream_sending_5000_images_stores_only_n(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    answer = images_answer(5000, make_image("PNG", 300, seed=3))

    async def flood(request: Request) -> Response:
        return JSONResponse(answer)

    upstream.handlers[GENERATIONS] = flood
    resp = httpx.post(
        gateway.url + GENERATIONS,
        headers=gateway.headers,
        json={"prompt": "p", "n": 2},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text[:300]
    assert len(resp.json()["data"]) == 2
    assert stored_count(gateway) == 2
    assert len(image_files(gateway)) == 2
    lines = log_lines(gateway)
    assert any("5000" in line and "n=2" in line for line in lines), lines


@pytest.mark.parametrize("count", [5, 12])  # written as they arrive, then dropped; parsed whole
def test_images_api_large_images_past_n_leave_no_files(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, count: int
) -> None:
    """Images large enough to be written while the answer arrives: the extras leave no file."""
    gateway = start_gateway()
    answer = images_answer(count, make_image("PNG", 120_000, seed=4))

    async def many(request: Request) -> Response:
        return JSONResponse(answer)

    upstream.handlers[GENERATIONS] = many
    resp = httpx.post(
        gateway.url + GENERATIONS, headers=gateway.headers, json={"prompt": "p"}, timeout=60
    )
    assert resp.status_code == 200, resp.text[:300]
    assert len(resp.json()["data"]) == 1  # n absent: one image, as OpenAI's default
    assert stored_count(gateway) == 1
    assert temp_files_after_settling(gateway) == []
    assert len(image_files(gateway)) == 1


def test_chat_answer_with_40_images_keeps_max_images_per_answer(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(max_images_per_answer=16)
    images = [
        {"type": "image_url", "image_url": {"url": data_url(make_image("PNG", 300, seed=i))}}
        for i in range(40)
    ]
    answer = {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "", "images": images}}
        ],
    }

    async def chatty(request: Request) -> Response:
        return JSONResponse(answer)

    upstream.handlers[CHAT] = chatty
    resp = httpx.post(
        gateway.url + CHAT,
        headers=gateway.headers,
        json={"model": "picgate", "messages": [{"role": "user", "content": "draw"}]},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:300]
    content = resp.json()["choices"][0]["message"]["content"]
    assert content.count("![image](") == 16
    assert "base64" not in json.dumps(resp.json())
    assert stored_count(gateway) == 16
    lines = log_lines(gateway)
    assert any("MAX_IMAGES_PER_ANSWER=16" in line for line in lines), lines


def test_buffer_budget_streaming_chat_gives_its_share_back_when_the_stream_ends(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    upstream.image = IMAGE
    made = httpx.post(gateway.url + GENERATIONS, headers=gateway.headers, json={"prompt": "p"})
    url = made.json()["data"][0]["url"]
    body = {
        "model": "picgate",
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": url}]}],
    }
    with httpx.stream(
        "POST", gateway.url + CHAT, json=body, headers=gateway.headers, timeout=60
    ) as resp:
        assert resp.status_code == 200
        assert b"[DONE]" in resp.read()
    budget = gateway.services.buffers
    assert budget.peak > len(data_url(IMAGE))  # the inlined image was held while it streamed
    for _ in range(200):  # the share goes back as the response closes, just after its last byte
        if budget.held == 0:
            break
        threading.Event().wait(0.01)
    assert budget.held == 0
