"""The size cap (or the TTL) deleting a file while it is served or inlined: a real server, the
file removed and put back in a loop (eviction, then a re-fetch from R2) while clients download it
and name it in chats. Every answer is the whole image or a clean "no copy" (410); never a 500,
never a download cut short (the second red team: 35 cut downloads and 12 chat 500s in 60 s).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from picgate.library.records import ImageOrigin, StoredImage
from tests.conftest import Gateway
from tests.support.images import make_image
from tests.support.upstream import StubUpstream

ROUNDS = 150


@contextmanager
def evicting(path: Path) -> Iterator[Counter[str]]:
    """Unlink ``path`` and put the same bytes back (a new inode, as a re-fetch writes one), over
    and over, until the block ends; counts the cycles."""
    spare = path.with_name(path.name + ".spare")
    os.link(path, spare)
    stop = threading.Event()
    cycles: Counter[str] = Counter()

    def churn() -> None:
        while not stop.is_set():
            os.unlink(path)
            stop.wait(0.0005)
            os.link(spare, path)
            cycles["evictions"] += 1
            stop.wait(0.0005)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        yield cycles
    finally:
        stop.set()
        worker.join(10)
        if not path.exists():
            os.link(spare, path)


@pytest.mark.parametrize("size", [100_000, 3_000_000], ids=["whole-read", "streamed"])
def test_eviction_race_downloads_are_whole_or_410(gateway: Gateway, size: int) -> None:
    data = make_image("PNG", size, seed=5)
    image: StoredImage = gateway.services.library.save_sync(data, origin=ImageOrigin("test", "p"))
    digest = hashlib.sha256(data).hexdigest()
    path = gateway.services.cache.path(image.id, image.ext)
    outcomes: Counter[str] = Counter()
    with httpx.Client(base_url=gateway.url, timeout=30) as client, evicting(path) as cycles:
        for i in range(ROUNDS):
            headers = {"Range": "bytes=10-"} if i % 3 == 2 else {}
            try:
                answer = client.get(f"/images/{image.id}.{image.ext}", headers=headers)
            except httpx.HTTPError as exc:  # a body cut short after its headers
                outcomes[f"cut: {type(exc).__name__}"] += 1
                continue
            if answer.status_code == 410:
                outcomes["410"] += 1
            elif answer.status_code in (200, 206):
                whole = data if answer.status_code == 200 else data[:10] + answer.content
                ok = answer.content and hashlib.sha256(whole).hexdigest() == digest
                outcomes["whole" if ok else f"wrong bytes {answer.status_code}"] += 1
            else:
                outcomes[f"HTTP {answer.status_code}"] += 1
    assert cycles["evictions"] > 10  # the race really ran
    assert set(outcomes) <= {"whole", "410"}, outcomes
    assert outcomes["whole"] > 0


def test_eviction_race_chat_inlining_is_never_a_500(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    data = make_image("PNG", 3_000_000, seed=6)
    image = gateway.services.library.save_sync(data, origin=ImageOrigin("test", "p"))
    path = gateway.services.cache.path(image.id, image.ext)
    url = f"{gateway.url}/images/{image.id}.{image.ext}"
    body = {
        "model": "picgate",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        ],
    }
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=gateway.url, timeout=60) as client, evicting(path):
        for _ in range(60):
            answer = client.post("/v1/chat/completions", json=body, headers=gateway.headers)
            statuses[answer.status_code] += 1
    assert set(statuses) <= {200, 410}, statuses
    assert statuses[200] > 0
