"""The ObjectStore contract, run against every backend: the in-memory fake and the S3 store on
moto's S3 server over HTTP. Backend-specific behaviour (error messages, headers, presigned URLs,
outages) stays in ``test_s3_store.py``."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from picgate.storage.memory_store import MemoryObjectStore
from picgate.storage.object_store import ObjectNotFound, ObjectStore, object_key
from picgate.storage.s3_store import S3ObjectStore

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def payload(size: int) -> bytes:
    return PNG_HEADER + os.urandom(size - len(PNG_HEADER))


@pytest.fixture(params=["memory", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    if request.param == "memory":
        return MemoryObjectStore()
    s3: S3ObjectStore = request.getfixturevalue("s3_store")
    return s3


def stored_keys(store: ObjectStore) -> list[str]:
    """Every key in the store, read behind the contract's back."""
    if isinstance(store, MemoryObjectStore):
        return sorted(store.objects)
    assert isinstance(store, S3ObjectStore)
    listing = store.client.list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_object_store_put_then_get_1mb_returns_identical_bytes(store: ObjectStore) -> None:
    data = payload(1024 * 1024)
    key = object_key("abc123", "png")

    store.put(key, data, content_type="image/png")

    assert store.get(key) == data


def test_object_store_get_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("images/missing.png")


def test_object_store_delete_twice_is_idempotent(store: ObjectStore) -> None:
    store.put("images/a.png", payload(64), content_type="image/png")

    store.delete("images/a.png")
    store.delete("images/a.png")
    store.delete("images/never-existed.png")

    assert not store.exists("images/a.png")


def test_object_store_exists_reflects_put_and_delete(store: ObjectStore) -> None:
    assert not store.exists("images/a.png")

    store.put("images/a.png", payload(64), content_type="image/png")
    assert store.exists("images/a.png")

    store.delete("images/a.png")
    assert not store.exists("images/a.png")


def test_object_store_concurrent_puts_from_threads_all_land(store: ObjectStore) -> None:
    blobs = {f"images/{i}.png": payload(2048) for i in range(16)}

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(store.put, key, data, content_type="image/png")
            for key, data in blobs.items()
        ]
        for future in futures:
            future.result()

    assert all(store.get(key) == data for key, data in blobs.items())


def test_object_store_test_connection_good_store_all_steps_ok(store: ObjectStore) -> None:
    checks = store.test_connection(prefix="images/")

    assert [c.step for c in checks] == ["bucket", "put", "get", "delete"]
    assert all(c.ok for c in checks), checks
    assert all(c.millis >= 0 for c in checks)
    assert "images/_picgate_probe/" in checks[1].detail
    # the probe cleans up after itself
    assert stored_keys(store) == []
