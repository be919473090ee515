"""GET/HEAD /images: headers, ETag and 304, ranges, 404s, access times batched."""

from __future__ import annotations

import hashlib
from datetime import datetime

import httpx
import pytest

from picgate.library.records import ImageOrigin, StoredImage
from tests.conftest import Gateway
from tests.support.images import make_image

DATA = make_image("JPEG", 200_000, seed=21)


@pytest.fixture
def stored(gateway: Gateway) -> StoredImage:
    return gateway.services.library.save_sync(DATA, origin=ImageOrigin("test", "p"))


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
    assert resp.headers["content-range"] == f"bytes */{len(DATA)}"
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=20-10",  # last before first: the whole header is invalid
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=-",
        "bytes=",
        "items=0-10",  # a unit PicGate does not know
        "bytes 0-10",
        "bytes=0-10," + ",".join(f"{i * 100}-{i * 100 + 1}" for i in range(1, 40)),
    ],
)
def test_get_image_malformed_range_is_ignored_200_full_body(
    gateway: Gateway, stored: StoredImage, header: str
) -> None:
    resp = httpx.get(f"{gateway.url}/images/{stored.id}.jpg", headers={"Range": header})
    assert resp.status_code == 200, header
    assert resp.content == DATA


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=-10", len(DATA) - 10, len(DATA)), ("bytes=5-", 5, len(DATA)), ("bytes=0-0", 0, 1)],
)
def test_get_image_suffix_and_open_ranges_are_206(
    gateway: Gateway, stored: StoredImage, header: str, start: int, end: int
) -> None:
    resp = httpx.get(f"{gateway.url}/images/{stored.id}.jpg", headers={"Range": header})
    assert resp.status_code == 206
    assert resp.content == DATA[start:end]
    assert resp.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"


def test_get_image_one_satisfiable_range_of_two_is_206(
    gateway: Gateway, stored: StoredImage
) -> None:
    header = f"bytes=0-3,{len(DATA) + 10}-{len(DATA) + 20}"
    resp = httpx.get(f"{gateway.url}/images/{stored.id}.jpg", headers={"Range": header})
    assert resp.status_code == 206
    assert resp.content == DATA[0:4]


def test_get_image_range_start_of_thousands_of_digits_is_416(
    gateway: Gateway, stored: StoredImage
) -> None:
    """int() refuses strings over 4300 digits: such a position must still be "past the end"."""
    header = "bytes=" + "9" * 5000 + "-"
    resp = httpx.get(f"{gateway.url}/images/{stored.id}.jpg", headers={"Range": header})
    assert resp.status_code == 416
    assert resp.json()["error"]["code"] == "range_not_satisfiable"


def test_head_image_unsatisfiable_range_is_416(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.head(f"{gateway.url}/images/{stored.id}.jpg", headers={"Range": "bytes=-0"})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{len(DATA)}"


def test_get_image_if_range_other_etag_ignores_unsatisfiable_range(
    gateway: Gateway, stored: StoredImage
) -> None:
    headers = {"Range": f"bytes={len(DATA) + 5}-", "If-Range": '"other"'}
    resp = httpx.get(f"{gateway.url}/images/{stored.id}.jpg", headers=headers)
    assert resp.status_code == 200 and resp.content == DATA


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
    from tests import orm
    from tests.orm import Image

    def accessed() -> datetime:
        row = orm.read(gateway.services.db, lambda s: s.get(Image, stored.id))
        assert row is not None
        return row.accessed_at

    before = accessed()
    for _ in range(5):
        httpx.get(f"{gateway.url}/images/{stored.id}.jpg")
    assert accessed() == before
    assert gateway.services.library.rows.flush_access_times() == 1
    assert accessed() > before


def test_half_written_temp_file_never_served(gateway: Gateway, stored: StoredImage) -> None:
    path = gateway.services.cache.path(stored.id, "jpg")
    (path.parent / ".tmp-deadbeef").write_bytes(b"partial")
    resp = httpx.get(f"{gateway.url}/images/.tmp-deadbeef")
    assert resp.status_code == 404
