"""R2 archiving end to end: PicGate on a real socket, moto's S3 server over HTTP as the bucket."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select

from picgate.app import create_app
from picgate.config import Settings
from picgate.db.models import R2_FAILED, R2_NONE, R2_PENDING, R2_UPLOADED
from picgate.errors import PicGateError
from picgate.library.actions import test_r2
from picgate.library.records import StoredImage, utcnow
from picgate.services import Services
from picgate.storage.memory_store import MemoryObjectStore
from picgate.storage.object_store import DEFAULT_CACHE_CONTROL, ObjectStore
from picgate.storage.s3_store import S3ObjectStore
from tests import orm
from tests.conftest import Gateway
from tests.orm import Image, LogEntry
from tests.s3_fixtures import S3_TEST_BUCKET
from tests.s3server import S3Server
from tests.support.images import make_image
from tests.support.servers import ServerThread
from tests.support.upstream import StubUpstream

Start = Callable[..., Gateway]


@pytest.fixture
def start_with_store(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Gateway]]:
    """Like ``start_gateway``, with an object store forced into Services."""
    started: list[Gateway] = []

    def start(objects: ObjectStore, **overrides: Any) -> Gateway:
        services = Services(make_settings(**overrides), objects=objects)
        gateway = Gateway(ServerThread(create_app(services=services)).start(), services)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.server.stop()


def generate(gateway: Gateway, **body: Any) -> dict[str, Any]:
    resp = httpx.post(
        gateway.url + "/v1/images/generations",
        json={"model": "picgate", "prompt": "a lighthouse", **body},
        headers=gateway.headers,
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


def image_id(url: str) -> str:
    return url.rsplit("/", 1)[-1].split(".")[0]


def row(gateway: Gateway, image_id: str) -> Image:
    found = orm.read(gateway.services.db, lambda s: s.get(Image, image_id))
    assert found is not None
    return found


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def wait_uploaded(gateway: Gateway, ids: list[str]) -> None:
    wait_for(lambda: all(row(gateway, i).r2_state == R2_UPLOADED for i in ids))


def bucket_object(s3_server: S3Server, key: str) -> dict[str, Any]:
    obj: dict[str, Any] = s3_server.client().get_object(Bucket=S3_TEST_BUCKET, Key=key)
    obj["data"] = obj["Body"].read()
    return obj


def drop_local(gateway: Gateway, image_id: str, ext: str = "png") -> Path:
    """What the TTL cleanup does to an archived image: the file goes, the row says so."""
    path = gateway.services.cache.path(image_id, ext)
    gateway.services.cache.delete(image_id, ext)
    orm.write(gateway.services.db, lambda s: setattr(s.get(Image, image_id), "local", False))
    return path


def put_requests(s3_server: S3Server, key: str) -> int:
    """PUTs of ``key`` that reached the S3 server, from its request log."""
    pattern = re.compile(rf'"PUT /{S3_TEST_BUCKET}/{re.escape(key)} HTTP/1.1" 200')
    return len(pattern.findall(s3_server.log_path.read_text(errors="replace")))


def log_lines(gateway: Gateway) -> list[str]:
    gateway.services.events.flush()
    db = gateway.services.db
    return list(orm.read(db, lambda s: s.scalars(select(LogEntry.message)).all()))


class BlockingStore(MemoryObjectStore):
    """Uploads block until ``release`` is set: a bucket that is very slow."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def put(self, key: str, data: bytes, **kwargs: Any) -> None:
        self.entered.set()
        self.release.wait(30)
        super().put(key, data, **kwargs)


class CountingStore(ObjectStore):
    """A real store, with its reads counted and slowed so that concurrent misses overlap."""

    def __init__(self, inner: ObjectStore, *, get_delay: float = 0.3) -> None:
        self.inner = inner
        self.gets = 0
        self.get_delay = get_delay
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, **kwargs: Any) -> None:
        self.inner.put(key, data, **kwargs)

    def get(self, key: str) -> bytes:
        with self._lock:
            self.gets += 1
        time.sleep(self.get_delay)
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def presigned_url(self, key: str, *, expires: int = 300) -> str:
        return self.inner.presigned_url(key, expires=expires)

    def check_bucket(self) -> str:
        return self.inner.check_bucket()


# -- server mode: the background worker -------------------------------------------------------


def test_worker_new_image_uploaded_with_identical_bytes(
    start_gateway: Start, r2_settings: dict[str, Any], s3_server: S3Server, upstream: StubUpstream
) -> None:
    gateway = start_gateway(**r2_settings)
    url = generate(gateway)["data"][0]["url"]
    wait_uploaded(gateway, [image_id(url)])
    obj = bucket_object(s3_server, f"images/{image_id(url)}.png")
    assert obj["data"] == upstream.image
    assert obj["ContentType"] == "image/png"
    assert obj["CacheControl"] == DEFAULT_CACHE_CONTROL
    assert any(line.startswith("☁️ 已上传到 R2: ") for line in log_lines(gateway))


def test_worker_slow_bucket_does_not_delay_responses(
    start_with_store: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    store = BlockingStore()
    gateway = start_with_store(store)
    try:
        first = image_id(generate(gateway)["data"][0]["url"])
        assert store.entered.wait(10)  # the worker is now stuck inside an upload
        second = image_id(generate(gateway)["data"][0]["url"])
        assert not store.release.is_set()
        assert httpx.get(f"{gateway.url}/images/{second}.png").content == upstream.image
        assert row(gateway, first).r2_state == R2_PENDING
        assert row(gateway, second).r2_state == R2_PENDING
    finally:
        store.release.set()
    wait_uploaded(gateway, [first, second])
    assert store.put_counts == {f"images/{first}.png": 1, f"images/{second}.png": 1}


def test_outage_burst_served_locally_then_every_image_uploaded_once(
    start_gateway: Start, r2_settings: dict[str, Any], s3_server: S3Server, upstream: StubUpstream
) -> None:
    gateway = start_gateway(**r2_settings)
    s3_server.stop()
    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(lambda _: generate(gateway), range(20)))
    urls = [reply["data"][0]["url"] for reply in replies]
    ids = [image_id(url) for url in urls]
    for url in urls:
        assert httpx.get(url).content == upstream.image
    assert {row(gateway, i).r2_state for i in ids} <= {R2_PENDING, R2_FAILED}

    s3_server.start()
    s3_server.create_bucket(S3_TEST_BUCKET)
    # the worker and this loop drain the queue together; leases keep them off each other's rows
    wait_for(
        lambda: (
            gateway.services.library.uploads.upload_due(
                now=utcnow() + timedelta(days=1), include_failed=True
            )
            is not None
            and all(row(gateway, i).r2_state == R2_UPLOADED for i in ids)
        ),
        timeout=30,
    )
    for i in ids:
        assert bucket_object(s3_server, f"images/{i}.png")["data"] == upstream.image
        assert put_requests(s3_server, f"images/{i}.png") == 1


# -- serving images that have no local copy -----------------------------------------------------


def test_missing_local_copy_served_from_r2_and_recached(
    start_gateway: Start, r2_settings: dict[str, Any], upstream: StubUpstream
) -> None:
    gateway = start_gateway(**r2_settings)
    url = generate(gateway)["data"][0]["url"]
    wait_uploaded(gateway, [image_id(url)])
    path = drop_local(gateway, image_id(url))
    resp = httpx.get(url)
    assert resp.status_code == 200
    assert resp.content == upstream.image
    assert resp.headers["content-type"] == "image/png"
    assert path.read_bytes() == upstream.image
    assert row(gateway, image_id(url)).local is True


def test_concurrent_misses_fetch_from_r2_once(
    start_with_store: Callable[..., Gateway], s3_store: S3ObjectStore, upstream: StubUpstream
) -> None:
    store = CountingStore(s3_store)
    gateway = start_with_store(store)
    url = generate(gateway)["data"][0]["url"]
    wait_uploaded(gateway, [image_id(url)])
    drop_local(gateway, image_id(url))
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: httpx.get(url, timeout=30), range(8)))
    assert [b.status_code for b in bodies] == [200] * 8
    assert all(b.content == upstream.image for b in bodies)
    assert store.gets == 1


def test_r2_down_without_local_copy_is_503_with_retry_after(
    start_gateway: Start, r2_settings: dict[str, Any], s3_server: S3Server
) -> None:
    gateway = start_gateway(**r2_settings)
    url = generate(gateway)["data"][0]["url"]
    wait_uploaded(gateway, [image_id(url)])
    drop_local(gateway, image_id(url))
    s3_server.stop()
    resp = httpx.get(url, timeout=60)
    assert resp.status_code == 503
    assert int(resp.headers["retry-after"]) > 0
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "storage_unavailable"


def test_object_missing_from_r2_is_410(
    start_gateway: Start, r2_settings: dict[str, Any], s3_server: S3Server
) -> None:
    gateway = start_gateway(**r2_settings)
    url = generate(gateway)["data"][0]["url"]
    wait_uploaded(gateway, [image_id(url)])
    drop_local(gateway, image_id(url))
    s3_server.client().delete_object(Bucket=S3_TEST_BUCKET, Key=f"images/{image_id(url)}.png")
    resp = httpx.get(url)
    assert resp.status_code == 410
    assert resp.json()["error"]["code"] == "image_expired"


def test_object_overwritten_in_r2_is_502_never_served_nor_cached(
    start_gateway: Start, r2_settings: dict[str, Any], s3_server: S3Server, upstream: StubUpstream
) -> None:
    gateway = start_gateway(**r2_settings)
    url = generate(gateway)["data"][0]["url"]
    ident = image_id(url)
    wait_uploaded(gateway, [ident])
    drop_local(gateway, ident)
    other = make_image("PNG", 2_000, seed=99)
    assert other != upstream.image
    s3_server.client().put_object(Bucket=S3_TEST_BUCKET, Key=f"images/{ident}.png", Body=other)

    resp = httpx.get(url)

    assert resp.status_code == 502
    assert resp.content != other and other not in resp.content
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "storage_checksum_mismatch"
    assert not gateway.services.cache.exists(ident, "png")
    assert row(gateway, ident).local is False
    record = row(gateway, ident)
    image = StoredImage(record.id, record.ext, record.mime, record.size, record.sha256)
    with pytest.raises(PicGateError) as raised:  # the uncached read (inlining into a request)
        anyio.run(gateway.services.library.serving.fetch_bytes, image)
    assert raised.value.status_code == 502


def test_public_base_url_redirects_302(start_gateway: Start, r2_settings: dict[str, Any]) -> None:
    gateway = start_gateway(r2_public_base_url="https://cdn.example.com/", **r2_settings)
    url = generate(gateway)["data"][0]["url"]
    wait_uploaded(gateway, [image_id(url)])
    drop_local(gateway, image_id(url))
    resp = httpx.get(url, follow_redirects=False)
    assert resp.status_code == 302
    assert resp.headers["location"] == f"https://cdn.example.com/images/{image_id(url)}.png"


# -- serverless mode: upload before the response ----------------------------------------------


@pytest.fixture
def serverless(tmp_path: Path) -> dict[str, Any]:
    return {"runtime_mode": "serverless", "images_dir": tmp_path / "lambda-tmp"}


def test_serverless_object_in_bucket_before_response(
    start_gateway: Start,
    r2_settings: dict[str, Any],
    serverless: dict[str, Any],
    s3_server: S3Server,
    upstream: StubUpstream,
) -> None:
    gateway = start_gateway(**r2_settings, **serverless)
    url = generate(gateway)["data"][0]["url"]
    # no waiting: the object must already be there
    assert bucket_object(s3_server, f"images/{image_id(url)}.png")["data"] == upstream.image
    assert row(gateway, image_id(url)).r2_state == R2_UPLOADED
    assert gateway.services.background == []


def test_serverless_bucket_down_returns_b64_inline_and_logs(
    start_gateway: Start,
    r2_settings: dict[str, Any],
    serverless: dict[str, Any],
    s3_server: S3Server,
    upstream: StubUpstream,
) -> None:
    gateway = start_gateway(**r2_settings, **serverless)
    s3_server.stop()
    item = generate(gateway)["data"][0]
    assert "url" not in item
    assert base64.b64decode(item["b64_json"]) == upstream.image
    (stored,) = orm.read(gateway.services.db, lambda s: s.scalars(select(Image)).all())
    assert stored.r2_state == R2_PENDING and stored.r2_attempts == 1  # the cleanup job retries
    lines = log_lines(gateway)
    assert any(line.startswith("❌ R2 上传失败") for line in lines)


def test_serverless_large_object_redirects_to_presigned_url(
    start_gateway: Start,
    r2_settings: dict[str, Any],
    serverless: dict[str, Any],
    upstream: StubUpstream,
) -> None:
    upstream.image = make_image("PNG", 5_000_000)
    gateway = start_gateway(**r2_settings, **serverless)
    url = generate(gateway)["data"][0]["url"]
    drop_local(gateway, image_id(url))
    resp = httpx.get(url, follow_redirects=False)
    assert resp.status_code == 302
    location = resp.headers["location"]
    assert "X-Amz-Signature=" in location
    assert httpx.get(location).content == upstream.image


async def test_redirect_rule_serverless_large_uploaded_image_even_with_local_copy(
    start_gateway: Start,
    r2_settings: dict[str, Any],
    serverless: dict[str, Any],
    upstream: StubUpstream,
) -> None:
    upstream.image = make_image("PNG", 5_000_000)
    gateway = start_gateway(**r2_settings, **serverless)
    url = generate(gateway)["data"][0]["url"]
    record = gateway.services.library.get(image_id(url))
    assert record is not None and gateway.services.cache.exists(record.id, "png")
    image = StoredImage(record.id, record.ext, record.mime, record.size, record.sha256)
    serving = gateway.services.library.serving
    target = await serving.redirect(image, R2_UPLOADED, local=True)
    assert target is not None
    assert httpx.get(target).content == upstream.image
    small = StoredImage(record.id, record.ext, record.mime, 1000, record.sha256)
    assert await serving.redirect(small, R2_UPLOADED, local=True) is None


async def test_redirect_rule_never_targets_an_object_not_known_uploaded(
    start_gateway: Start,
    r2_settings: dict[str, Any],
    serverless: dict[str, Any],
    upstream: StubUpstream,
) -> None:
    upstream.image = make_image("PNG", 5_000_000)
    gateway = start_gateway(**r2_settings, **serverless, r2_public_base_url="https://cdn.example")
    url = generate(gateway)["data"][0]["url"]
    record = gateway.services.library.get(image_id(url))
    assert record is not None
    image = StoredImage(record.id, record.ext, record.mime, record.size, record.sha256)
    serving = gateway.services.library.serving
    for state in (R2_PENDING, R2_FAILED, R2_NONE):
        for local in (True, False):
            assert await serving.redirect(image, state, local=local) is None
    assert await serving.redirect(image, R2_UPLOADED, local=True) == (
        f"https://cdn.example/images/{record.id}.png"
    )
    # end to end: a pending row with its local copy is served, not sent to the CDN
    orm.write(
        gateway.services.db, lambda s: setattr(s.get(Image, record.id), "r2_state", R2_PENDING)
    )
    gateway.services.library.rows.forget(record.id)
    resp = httpx.get(url, follow_redirects=False)
    assert resp.status_code == 200
    assert resp.content == upstream.image
    orm.write(
        gateway.services.db, lambda s: setattr(s.get(Image, record.id), "r2_state", R2_UPLOADED)
    )
    resp = httpx.get(url, follow_redirects=False)
    assert resp.status_code == 302
    assert resp.headers["location"] == f"https://cdn.example/images/{record.id}.png"


# -- operations against a real bucket ---------------------------------------------------------


def test_test_r2_against_moto_all_steps_pass(
    make_settings: Callable[..., Settings], r2_settings: dict[str, Any]
) -> None:
    checks = test_r2(make_settings(**r2_settings))
    assert [(c.step, c.ok) for c in checks] == [
        ("bucket", True),
        ("put", True),
        ("get", True),
        ("delete", True),
    ]


def test_test_r2_missing_bucket_fails_at_bucket_step(
    make_settings: Callable[..., Settings], r2_settings: dict[str, Any]
) -> None:
    checks = test_r2(make_settings(**(r2_settings | {"r2_bucket_name": "no-such-bucket"})))
    assert [(c.step, c.ok) for c in checks] == [("bucket", False)]


def test_delete_images_remote_removes_object_and_serving_goes_410(
    start_gateway: Start, r2_settings: dict[str, Any], s3_server: S3Server
) -> None:
    gateway = start_gateway(**r2_settings)
    url = generate(gateway)["data"][0]["url"]
    wait_uploaded(gateway, [image_id(url)])
    counts = gateway.services.library.actions.delete_images(
        [image_id(url)],
        local=True,
        remote=True,
        forget=False,
    )
    assert (counts["local"], counts["remote"]) == (1, 1)
    listed = s3_server.client().list_objects_v2(Bucket=S3_TEST_BUCKET).get("Contents", [])
    assert listed == []
    assert httpx.get(url).status_code == 410
