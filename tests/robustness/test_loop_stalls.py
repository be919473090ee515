"""A hostile but valid image must not stop the server while PicGate looks at it.

A 45 MB PNG of millions of empty chunks, uploaded to ``/v1/images/edits``: sniffing it walked
every chunk on the event loop (1.3 s in which nothing else was answered). Now the walk is
bounded and large payloads are sniffed in a worker thread. The test holds the sniff of the big
upload until a ``/health`` request has been answered: with the sniff on the loop that answer
cannot come (the loop is the one waiting), so the order of events proves the loop kept going.
No clock is read; the waits only have caps so that a stalled loop fails instead of hanging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from picgate.storage import codec
from tests.conftest import Gateway
from tests.support.images import png_with_empty_chunks
from tests.support.upstream import StubUpstream

BIG = 40 * 2**20


def test_loop_stalls_45mb_png_of_empty_chunks_health_answered_during_sniff(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = start_gateway()
    hostile = png_with_empty_chunks(3_750_000)
    assert len(hostile) > 45_000_000
    real_sniff = codec.sniff
    sniffing = threading.Event()
    health_answered = threading.Event()
    answered_while_sniffing: list[bool] = []

    def held_sniff(data: bytes) -> codec.ImageType:
        if len(data) > BIG and not sniffing.is_set():
            sniffing.set()
            answered_while_sniffing.append(health_answered.wait(30))
        return real_sniff(data)

    monkeypatch.setattr(codec, "sniff", held_sniff)

    def edit() -> httpx.Response:
        return httpx.post(
            gateway.url + "/v1/images/edits",
            headers=gateway.headers,
            data={"prompt": "keep it"},
            files={"image": ("big.png", hostile, "image/png")},
            timeout=180,
        )

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(edit)
        assert sniffing.wait(120), "the upload was never sniffed"
        health = httpx.get(gateway.url + "/health", timeout=60)
        health_answered.set()
        result = answer.result()
    assert health.status_code == 200
    assert answered_while_sniffing == [True]  # /health came back while the sniff was held
    assert result.status_code == 200, result.text[:300]
    sent = upstream.last("/v1/images/edits").form["image"][0]
    assert sent[1] == hostile  # a valid image: forwarded whole
