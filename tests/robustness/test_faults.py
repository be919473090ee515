"""Faults on real sockets and disks: an S3 outage mid-burst, upstream resets mid-answer, a full
disk under the image folder, and ``picgate serve`` SIGKILLed during a burst of writes."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import itertools
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from picgate.db.engine import Database
from picgate.db.models import R2_UPLOADED
from picgate.library.records import utcnow
from picgate.storage.codec import sniff
from picgate.storage.local import TMP_PREFIX, LocalCache
from tests import orm
from tests.conftest import GATEWAY_KEY, Gateway
from tests.orm import Image, LogEntry
from tests.robustness.faults import KillableProxy, ResettingUpstream, serve_process
from tests.s3_fixtures import S3_TEST_BUCKET
from tests.s3server import S3Server
from tests.support.images import make_image
from tests.support.upstream import StubUpstream

CHUNK = "data: " + json.dumps(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hello"}}],
    }
)


def unique_images(upstream: StubUpstream) -> list[bytes]:
    """Make the stub answer every generation with a new image; returns the list it fills."""
    sent: list[bytes] = []
    counter = itertools.count(1)
    lock = threading.Lock()

    async def generations(request: Request) -> Response:
        with lock:
            data = make_image("PNG", 3_000, seed=next(counter) + 1000)
            sent.append(data)
        b64 = base64.b64encode(data).decode()
        return JSONResponse({"created": 1, "data": [{"b64_json": b64}]})

    upstream.handlers["/v1/images/generations"] = generations
    return sent


def generate(url: str, key: str = GATEWAY_KEY, **body: Any) -> httpx.Response:
    return httpx.post(
        url + "/v1/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "fault", **body},
        timeout=30,
    )


def log_messages(db: Database) -> list[str]:
    return list(orm.read(db, lambda s: s.scalars(select(LogEntry.message)).all()))


# -- (a) S3 unreachable mid-burst -------------------------------------------------------------


def test_faults_s3_killed_and_revived_mid_burst_zero_images_lost(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    s3_server: S3Server,
    s3_store: Any,
) -> None:

    sent = unique_images(upstream)
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy = KillableProxy((host, int(port)))
    gateway = start_gateway(
        r2_endpoint_url=proxy.url,
        r2_access_key_id="testing",
        r2_secret_access_key="testing",
        r2_bucket_name=S3_TEST_BUCKET,
    )
    answered: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        if i == 6:
            proxy.kill()  # uploads in flight are reset, and so is every new connection
        if i == 18:
            proxy.revive()
        answer = generate(gateway.url)
        assert answer.status_code == 200, answer.text
        with lock:
            answered.append(answer.json()["data"][0]["url"])

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(24)))
        ids = [url.rsplit("/", 1)[1].split(".")[0] for url in answered]

        def all_uploaded() -> bool:
            gateway.services.library.uploads.upload_due(
                now=utcnow() + timedelta(days=1), include_failed=True
            )
            rows = orm.write(
                gateway.services.db,
                lambda s: [r.r2_state for r in s.scalars(select(Image).where(Image.id.in_(ids)))],
            )
            return len(rows) == len(ids) and set(rows) == {R2_UPLOADED}

        deadline = time.monotonic() + 60
        while not all_uploaded():
            assert time.monotonic() < deadline, "uploads did not drain after the outage"
            time.sleep(0.2)
    finally:
        proxy.close()
    client = s3_server.client()
    for url, image_id in zip(answered, ids, strict=True):
        served = httpx.get(url).content
        assert served in sent
        stored = client.get_object(Bucket=S3_TEST_BUCKET, Key=f"images/{image_id}.png")
        assert stored["Body"].read() == served


# -- (b) the upstream resets the connection -------------------------------------------------


@pytest.fixture
def resetting() -> Iterator[ResettingUpstream]:
    server = ResettingUpstream()
    yield server
    server.close()


IMAGES_PREFIX = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    b'{"created": 1, "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAA'
)


@pytest.mark.parametrize("prefix", [b"", IMAGES_PREFIX], ids=["before-headers", "mid-body"])
def test_faults_upstream_reset_images_502_no_hang(
    start_gateway: Callable[..., Gateway], resetting: ResettingUpstream, prefix: bytes
) -> None:
    resetting.prefix = prefix
    gateway = start_gateway(upstream_api_base=resetting.base_url)
    answers = [
        generate(gateway.url),
        httpx.post(
            gateway.url + "/v1/images/edits",
            headers=gateway.headers,
            data={"prompt": "p"},
            files={"image": ("a.png", make_image("PNG", 2_000, seed=1), "image/png")},
            timeout=30,
        ),
    ]
    for answer in answers:
        assert answer.status_code == 502, answer.text
        assert answer.json()["error"]["type"] == "upstream_error"
    assert resetting.requests == 2


def sse_chunk(text: str) -> bytes:
    data = text.encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_PREFIX = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + sse_chunk(CHUNK + "\n\n")
    + sse_chunk(CHUNK.replace("hello", "![i](data:image/png;base64,iVBORw0KGgoAAAANSU"))
)


def chat(gateway: Gateway, *, stream: bool) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=gateway.headers,
        json={"model": "picgate", "stream": stream, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )


def test_faults_upstream_reset_mid_stream_error_event_then_end(
    start_gateway: Callable[..., Gateway], resetting: ResettingUpstream
) -> None:
    resetting.prefix = STREAM_PREFIX
    gateway = start_gateway(upstream_api_base=resetting.base_url)
    answer = chat(gateway, stream=True)
    assert answer.status_code == 200
    events = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "hello"
    error = json.loads(events[-2])
    assert "choices" not in error and error["error"]["message"]
    assert events[-1] == "[DONE]"
    assert "base64" not in answer.text  # the half image was not passed on


@pytest.mark.parametrize(
    "prefix", [b"", IMAGES_PREFIX, STREAM_PREFIX], ids=["before-headers", "mid-json", "mid-sse"]
)
def test_faults_upstream_reset_chat_before_first_byte_502(
    start_gateway: Callable[..., Gateway], resetting: ResettingUpstream, prefix: bytes
) -> None:
    resetting.prefix = prefix
    gateway = start_gateway(upstream_api_base=resetting.base_url)
    answer = chat(gateway, stream=False)
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"]["message"]
    if not prefix:
        streamed = chat(gateway, stream=True)  # nothing sent yet: a plain error, not a stream
        assert streamed.status_code == 502
        assert streamed.json()["error"]["type"] == "upstream_error"


# -- (c) disk full ----------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[LocalCache], None]]]:
    """A 64 KiB tmpfs for the image folder when this process may mount one; otherwise the same
    fault injected at the storage layer (``os.write`` failing with ENOSPC half way)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        == 0
    )

    def fill(cache: LocalCache) -> None:
        if mounted:
            fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                size = 0
                with contextlib.suppress(OSError):
                    while True:
                        size += os.write(fd, b"\0" * 4096)
                os.ftruncate(fd, max(0, size - 12 * 1024))  # 12 KiB left: a write starts
            finally:
                os.close(fd)
        else:
            real = cache.write

            def full(image_id: str, ext: str, data: bytes) -> Path:
                # a half-written temp file first, as a real ENOSPC would leave it
                tmp = cache.path(image_id, ext).parent / f"{TMP_PREFIX}injected"
                tmp.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data[: len(data) // 2])
                tmp.unlink()
                raise OSError(errno.ENOSPC, "No space left on device")

            cache.write = full  # type: ignore[method-assign]
            cache._real_write = real  # type: ignore[attr-defined]

    try:
        yield mount, fill
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def test_faults_disk_full_image_returned_inline_and_nothing_half_written(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    tiny_disk: tuple[Path, Callable[[LocalCache], None]],
) -> None:
    mount, fill = tiny_disk
    gateway = start_gateway(images_dir=mount / "images")
    fill(gateway.services.cache)
    answer = generate(gateway.url)
    assert answer.status_code == 200, answer.text
    item = answer.json()["data"][0]
    assert "url" not in item
    assert base64.b64decode(item["b64_json"]) == upstream.image
    gateway.services.events.flush()
    assert any("图片保存失败" in m for m in log_messages(gateway.services.db))
    assert orm.write(gateway.services.db, lambda s: s.scalars(select(Image)).all()) == []
    leftovers = [p.name for p in (mount / "images").rglob("*") if p.is_file()]
    assert leftovers == []


# -- (d) SIGKILL during a burst of writes -----------------------------------------------------


@pytest.mark.slow
def test_faults_sigkill_mid_burst_then_cleanup_every_answered_url_intact(
    tmp_path: Path, upstream: StubUpstream
) -> None:
    sent = unique_images(upstream)
    server = serve_process(tmp_path, upstream.base_url).start()
    data_dir = tmp_path / "data"
    answered: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer() -> None:
        while not stop.is_set():
            try:
                answer = generate(server.url)
            except httpx.HTTPError:
                return  # the server died under us
            if answer.status_code == 200:
                with lock:
                    answered.append(answer.json()["data"][0]["url"])

    threads = [threading.Thread(target=writer) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(answered) < 16 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.sigkill()  # mid-burst: requests in flight, files being written
        stop.set()
        for thread in threads:
            thread.join(30)
        assert len(answered) >= 8
        # what a crash between write and rename leaves: a half file under a temp name
        half = data_dir / "images" / "ab" / f"{TMP_PREFIX}0123456789abcdef"
        half.parent.mkdir(parents=True, exist_ok=True)
        half.write_bytes(sent[0][: len(sent[0]) // 2])

        cleanup = server.cli("cleanup")
        assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
        server.start()
        images_dir = data_dir / "images"
        tmp_files = list(images_dir.rglob(f"{TMP_PREFIX}*"))
        assert half in tmp_files  # younger than the repair's grace period: kept, never served
        assert not any(f.path == half for f in LocalCache(images_dir).scan())
        for tmp in tmp_files:  # a crash may leave temp files: never reachable
            assert httpx.get(f"{server.url}/images/{tmp.name}").status_code == 404
        for url in answered:
            served = httpx.get(url)
            assert served.status_code == 200, url
            assert served.content in sent
        db = Database(server.env["DATABASE_URL"])
        try:
            rows = orm.read(
                db, lambda s: s.scalars(select(Image).where(Image.local.is_(True))).all()
            )
        finally:
            db.dispose()
        cache = LocalCache(images_dir)
        for row in rows:  # no row points at a missing or half file after the repair
            data = cache.read(row.id, row.ext)
            assert data is not None, row.id
            assert hashlib.sha256(data).hexdigest() == row.sha256
            assert sniff(data).ext == row.ext
        assert len(rows) >= len(answered)
    finally:
        stop.set()
        server.stop()


# -- (e) an idle keep-alive connection ---------------------------------------------------------


def _exchange(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: picgate\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


@pytest.mark.slow
def test_faults_serve_keeps_an_idle_connection_past_uvicorns_default(
    tmp_path: Path, upstream: StubUpstream
) -> None:
    """Clients reuse idle connections for 15 s (aiohttp, OpenWebUI) to 60 s (nginx, AWS load
    balancers); uvicorn's own 5 s would close them under those clients."""
    server = serve_process(tmp_path, upstream.base_url).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert _exchange(sock).startswith(b"HTTP/1.1 200")
            time.sleep(6.5)  # past uvicorn's default keep-alive of 5 s
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):  # b"" here: the server has closed it
                sock.recv(1, socket.MSG_PEEK)
            sock.setblocking(True)
            assert _exchange(sock).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()
