"""What is particular to each object store: S3/R2 on moto's S3 server over HTTP (messages,
headers, presigned URLs, outages, endpoints) and the in-memory fake (put counts, failure mode).

The contract every store keeps is in ``test_object_store_contract.py``."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from picgate.storage.memory_store import MemoryObjectStore
from picgate.storage.object_store import ObjectNotFound, ObjectStoreError, object_key
from picgate.storage.s3_store import S3ObjectStore
from tests.s3server import S3Server

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def payload(size: int) -> bytes:
    return PNG_HEADER + os.urandom(size - len(PNG_HEADER))


def test_s3_store_put_stores_content_type_and_cache_control(
    s3_server: S3Server, s3_store: S3ObjectStore
) -> None:
    s3_store.put("images/a.webp", payload(64), content_type="image/webp")
    s3_store.put("images/b.png", payload(64), content_type="image/png", cache_control="no-store")

    head_a = s3_server.client().head_object(Bucket=s3_store.bucket, Key="images/a.webp")
    head_b = s3_server.client().head_object(Bucket=s3_store.bucket, Key="images/b.png")

    assert head_a["ContentType"] == "image/webp"
    assert head_a["CacheControl"] == "public, max-age=31536000, immutable"
    assert head_a["ContentLength"] == 64
    assert head_b["ContentType"] == "image/png"
    assert head_b["CacheControl"] == "no-store"


def test_s3_store_get_missing_key_raises_object_not_found(s3_store: S3ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="S3 get failed: NoSuchKey"):
        s3_store.get("images/missing.png")


def test_s3_store_get_missing_bucket_raises_store_error_not_not_found(
    s3_server: S3Server, s3_store: S3ObjectStore
) -> None:
    store = s3_server.make_store("no-such-bucket")

    with pytest.raises(ObjectStoreError, match="NoSuchBucket") as caught:
        store.get("images/a.png")

    assert not isinstance(caught.value, ObjectNotFound)


def test_s3_store_presigned_url_fetches_the_bytes(s3_store: S3ObjectStore) -> None:
    data = payload(4096)
    s3_store.put("images/a.png", data, content_type="image/png")

    url = s3_store.presigned_url("images/a.png", expires=60)
    response = httpx.get(url)

    assert url.startswith(f"{s3_store.endpoint_url}/{s3_store.bucket}/images/a.png?")
    assert "X-Amz-Signature=" in url
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"


def test_s3_store_presigned_url_expiry_out_of_range_raises(s3_store: S3ObjectStore) -> None:
    with pytest.raises(ValueError, match="expires"):
        s3_store.presigned_url("images/a.png", expires=8 * 24 * 3600)


def test_s3_store_test_connection_missing_bucket_fails_at_bucket_step(
    s3_server: S3Server, s3_store: S3ObjectStore
) -> None:
    store = s3_server.make_store("no-such-bucket")

    checks = store.test_connection()

    assert len(checks) == 1
    assert checks[0].step == "bucket"
    assert not checks[0].ok
    assert checks[0].detail == "S3 head_bucket failed: NoSuchBucket"


def test_s3_store_server_down_fails_fast_then_recovers_after_restart(
    s3_server: S3Server, s3_store: S3ObjectStore
) -> None:
    secret = "do-not-leak-this-secret"
    store = S3ObjectStore(
        bucket=s3_store.bucket,
        access_key_id="testing",
        secret_access_key=secret,
        endpoint_url=s3_server.endpoint_url,
        connect_timeout=1,
        read_timeout=2,
        max_attempts=1,
    )
    assert all(c.ok for c in store.test_connection())

    s3_server.stop()
    try:
        checks = store.test_connection()
        with pytest.raises(ObjectStoreError) as caught:
            store.put("images/a.png", b"x", content_type="image/png")
    finally:
        s3_server.start()

    assert [(c.step, c.ok) for c in checks] == [("bucket", False)]
    assert checks[0].detail == "S3 head_bucket failed: EndpointConnectionError"
    assert str(caught.value) == "S3 put failed: EndpointConnectionError"
    assert not isinstance(caught.value, ObjectNotFound)
    assert secret not in str(caught.value)

    # moto forgets everything on restart
    s3_server.create_bucket(s3_store.bucket)
    assert all(c.ok for c in store.test_connection())


def test_s3_store_endpoint_from_account_id_is_r2_path_style() -> None:
    store = S3ObjectStore(
        bucket="pics", access_key_id="key", secret_access_key="secret", account_id="0123abcd"
    )

    url = store.presigned_url("images/a.png", expires=300)

    assert store.endpoint_url == "https://0123abcd.r2.cloudflarestorage.com"
    assert url.startswith("https://0123abcd.r2.cloudflarestorage.com/pics/images/a.png?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert "secret" not in url
    assert "secret" not in repr(store)


def test_s3_store_endpoint_url_wins_over_account_id() -> None:
    store = S3ObjectStore(
        bucket="pics",
        access_key_id="key",
        secret_access_key="secret",
        endpoint_url="http://minio:9000/",
        account_id="0123abcd",
    )

    assert store.endpoint_url == "http://minio:9000"


def test_s3_store_without_endpoint_or_account_raises_value_error() -> None:
    with pytest.raises(ValueError, match="endpoint_url or an R2 account_id"):
        S3ObjectStore(bucket="pics", access_key_id="key", secret_access_key="secret")


def test_s3_store_injected_client_is_used_as_is() -> None:
    sentinel = object()
    store = S3ObjectStore(
        bucket="pics",
        access_key_id="key",
        secret_access_key="secret",
        account_id="abc",
        client=sentinel,
    )

    assert store.client is sentinel


def test_objects_module_import_does_not_import_boto3() -> None:
    code = "import picgate.storage.s3_store, sys; assert 'boto3' not in sys.modules, 'boto3'"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr


def test_object_key_default_prefix_joins_id_and_ext() -> None:
    assert object_key("abc", "png") == "images/abc.png"
    assert object_key("abc", ".webp") == "images/abc.webp"
    assert object_key("abc", "jpg", prefix="") == "abc.jpg"


def test_memory_store_put_counts_each_put_per_key() -> None:
    store = MemoryObjectStore()

    store.put("k1", b"a", content_type="image/png")
    store.put("k1", b"b", content_type="image/png")
    store.put("k2", b"c", content_type="image/jpeg", cache_control="no-store")

    assert store.put_counts == {"k1": 2, "k2": 1}
    assert store.get("k1") == b"b"
    assert store.objects["k2"].content_type == "image/jpeg"
    assert store.objects["k2"].cache_control == "no-store"


def test_memory_store_fail_makes_every_call_raise_store_error() -> None:
    store = MemoryObjectStore()
    store.put("k", b"a", content_type="image/png")
    store.fail = True

    calls = [
        lambda: store.put("k", b"b", content_type="image/png"),
        lambda: store.get("k"),
        lambda: store.delete("k"),
        lambda: store.exists("k"),
        lambda: store.presigned_url("k"),
        store.check_bucket,
    ]
    for call in calls:
        with pytest.raises(ObjectStoreError):
            call()

    assert store.put_counts == {"k": 1}
    store.fail = False
    assert store.get("k") == b"a"


def test_memory_store_get_missing_raises_not_found_and_delete_is_idempotent() -> None:
    store = MemoryObjectStore()

    with pytest.raises(ObjectNotFound):
        store.get("missing")
    store.delete("missing")

    assert not store.exists("missing")


def test_memory_store_test_connection_reports_steps_and_stops_at_failure() -> None:
    store = MemoryObjectStore()

    good = store.test_connection()
    store.fail = True
    bad = store.test_connection()

    assert [(c.step, c.ok) for c in good] == [
        ("bucket", True),
        ("put", True),
        ("get", True),
        ("delete", True),
    ]
    assert store.objects == {}
    assert [(c.step, c.ok) for c in bad] == [("bucket", False)]
    assert bad[0].detail == "memory head_bucket failed: store is down"
