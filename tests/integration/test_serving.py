"""GET/HEAD /images: headers, ETag and 304, ranges, 404s, access times batched."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from picgate.storage.image_store import StoredImage
from tests.conftest import Gateway
from tests.support.images import make_image

DATA = make_image("JPEG", 200_000, seed=21)


@pytest.fixture
def stored(gateway: Gateway) -> StoredImage:
    return gateway.services.images.store_bytes(DATA, source="test", prompt="p")


def test_get_image_full_headers(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.get(f"{gateway.url}/images/{stored.id}.jpg")
    assert resp.status_code == 200
    assert resp.content == DATA
    h = resp.headers
    assert h["content-type"] == "image/jpeg"
    assert h["content-length"] == str(len(DATA))
    assert h["etag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert h["cache-control"] == "public, max-age=31536000, immutable"
    assert h["x-content-type-options"] == "nosniff"
    assert h["content-disposition"].startswith("inline")
    assert h["accept-ranges"] == "bytes"


def test_get_image_without_extension_serves_same(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.get(f"{gateway.url}/images/{stored.id}")
    assert resp.status_code == 200 and resp.content == DATA


def test_get_image_wrong_extension_is_404(gateway: Gateway, stored: StoredImage) -> None:
    assert httpx.get(f"{gateway.url}/images/{stored.id}.png").status_code == 404


def test_get_image_if_none_match_is_304(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.get(
        f"{gateway.url}/images/{stored.id}.jpg", headers={"If-None-Match": stored.etag}
    )
    assert resp.status_code == 304 and resp.content == b""
    assert resp.headers["etag"] == stored.etag


def test_get_image_range_is_206(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.get(f"{gateway.url}/images/{stored.id}.jpg", headers={"Range": "bytes=10-19"})
    assert resp.status_code == 206
    assert resp.content == DATA[10:20]
    assert resp.headers["content-range"] == f"bytes 10-19/{len(DATA)}"


def test_get_image_unsatisfiable_range_is_416(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.get(
        f"{gateway.url}/images/{stored.id}.jpg", headers={"Range": f"bytes={len(DATA) + 5}-"}
    )
    assert resp.status_code == 416


def test_head_image_has_length_no_body(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.head(f"{gateway.url}/images/{stored.id}.jpg")
    assert resp.status_code == 200
    assert resp.headers["content-length"] == str(len(DATA)) and resp.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/images/unknownunknownunknown1.png",
        "/images/..%2f..%2fetc%2fpasswd",
        "/images/../../etc/passwd",
        "/images/%2e%2e",
        "/images/x.svg",
    ],
)
def test_get_image_unknown_or_traversal_is_404(gateway: Gateway, path: str) -> None:
    resp = httpx.get(gateway.url + path)
    assert resp.status_code == 404
    assert "error" in resp.json()


def test_get_image_access_time_not_written_per_hit(gateway: Gateway, stored: StoredImage) -> None:
    from picgate.db.models import Image

    before = gateway.services.db.call(lambda s: s.get(Image, stored.id).accessed_at)
    for _ in range(5):
        httpx.get(f"{gateway.url}/images/{stored.id}.jpg")
    assert gateway.services.db.call(lambda s: s.get(Image, stored.id).accessed_at) == before
    assert gateway.services.images.flush_access_times() == 1
    assert gateway.services.db.call(lambda s: s.get(Image, stored.id).accessed_at) > before


def test_half_written_temp_file_never_served(gateway: Gateway, stored: StoredImage) -> None:
    path = gateway.services.cache.path(stored.id, "jpg")
    (path.parent / ".tmp-deadbeef").write_bytes(b"partial")
    resp = httpx.get(f"{gateway.url}/images/.tmp-deadbeef")
    assert resp.status_code == 404
