"""GET/HEAD /images with SENDFILE_HEADER over a real socket: PicGate decides (404/410/304,
ETag, caching and type headers), sends no body, and names the file for the proxy."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from picgate.db.models import R2_UPLOADED
from picgate.library.records import ImageOrigin, StoredImage, utcnow
from tests.conftest import Gateway
from tests.support.images import make_image

DATA = make_image("JPEG", 200_000, seed=31)
PREFIX = "/_picgate_files/"
ACCEL = "x-accel-redirect"
XSENDFILE = "x-sendfile"
CACHING = "public, max-age=31536000, immutable"


def wide_png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (1600, 800), (10, 90, 200)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def accel(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(sendfile_header="X-Accel-Redirect", sendfile_prefix=PREFIX)


def save(gateway: Gateway, data: bytes = DATA) -> StoredImage:
    return gateway.services.library.save_sync(data, origin=ImageOrigin("test", "p"))


def named_file(gateway: Gateway, value: str) -> Path:
    """The file an X-Accel-Redirect value names, as nginx's ``alias IMAGES_DIR/`` finds it."""
    assert value.startswith(PREFIX)
    return gateway.services.cache.root / value.removeprefix(PREFIX)


def assert_no_handoff(resp: httpx.Response) -> None:
    assert ACCEL not in resp.headers and XSENDFILE not in resp.headers


def test_sendfile_accel_original_empty_body_names_file(accel: Gateway) -> None:
    image = save(accel)
    resp = httpx.get(f"{accel.url}/images/{image.id}.jpg")
    assert resp.status_code == 200
    assert resp.content == b""
    h = resp.headers
    assert h[ACCEL] == f"{PREFIX}{image.id[:2]}/{image.id}.jpg"
    assert named_file(accel, h[ACCEL]).read_bytes() == DATA
    assert h["etag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert h["cache-control"] == CACHING
    assert h["content-type"] == "image/jpeg"
    assert h["x-content-type-options"] == "nosniff"
    assert h["content-disposition"] == f'inline; filename="{image.id}.jpg"'
    assert h["content-length"] == "0"


def test_sendfile_accel_without_extension_names_same_file(accel: Gateway) -> None:
    image = save(accel)
    resp = httpx.get(f"{accel.url}/images/{image.id}")
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers[ACCEL].endswith(f"/{image.id}.jpg")


def test_sendfile_head_has_headers_no_body(accel: Gateway) -> None:
    image = save(accel)
    resp = httpx.head(f"{accel.url}/images/{image.id}.jpg")
    assert resp.status_code == 200 and resp.content == b""
    assert named_file(accel, resp.headers[ACCEL]).read_bytes() == DATA
    assert resp.headers["etag"] == image.etag


def test_sendfile_if_none_match_is_304_without_handoff(accel: Gateway) -> None:
    image = save(accel)
    resp = httpx.get(f"{accel.url}/images/{image.id}.jpg", headers={"If-None-Match": image.etag})
    assert resp.status_code == 304 and resp.content == b""
    assert resp.headers["etag"] == image.etag
    assert_no_handoff(resp)


def test_sendfile_range_left_to_the_proxy(accel: Gateway) -> None:
    image = save(accel)
    for header in ("bytes=10-19", f"bytes={len(DATA) + 5}-"):  # even one PicGate would 416
        resp = httpx.get(f"{accel.url}/images/{image.id}.jpg", headers={"Range": header})
        assert resp.status_code == 200 and resp.content == b""
        assert "content-range" not in resp.headers
        assert resp.headers[ACCEL].endswith(f"/{image.id}.jpg")


@pytest.mark.parametrize(
    "name",
    [
        "AAAAAAAAAAAAAAAAAAAAAA.png",  # well-formed, unknown
        "..%2F..%2Fetc%2Fpasswd",
        "..%2F..%2F..%2Fetc%2Fpasswd.png",
        "%2Fetc%2Fpasswd",
        "ab%2F..%2F..%2Fsecret.jpg",
    ],
)
def test_sendfile_unknown_or_traversal_is_404_without_handoff(accel: Gateway, name: str) -> None:
    resp = httpx.get(f"{accel.url}/images/{name}")
    assert resp.status_code == 404
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert_no_handoff(resp)


def test_sendfile_wrong_extension_is_404_without_handoff(accel: Gateway) -> None:
    image = save(accel)
    resp = httpx.get(f"{accel.url}/images/{image.id}.png")
    assert resp.status_code == 404
    assert_no_handoff(resp)


def test_sendfile_image_gone_everywhere_is_410_without_handoff(accel: Gateway) -> None:
    image = save(accel)
    accel.services.cache.delete(image.id, image.ext)
    for method in ("GET", "HEAD"):
        resp = httpx.request(method, f"{accel.url}/images/{image.id}.jpg")
        assert resp.status_code == 410
        assert_no_handoff(resp)


def test_sendfile_variant_names_variant_file_with_its_own_etag(accel: Gateway) -> None:
    image = save(accel, wide_png())
    url = f"{accel.url}/images/{image.id}.png?w=256&format=webp"
    resp = httpx.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.content == b""
    h = resp.headers
    assert h[ACCEL].startswith(f"{PREFIX}variants/{image.id[:2]}/{image.id}/")
    made = named_file(accel, h[ACCEL])
    with PILImage.open(io.BytesIO(made.read_bytes())) as variant:
        assert (variant.format, variant.size) == ("WEBP", (256, 128))
    assert h["content-type"] == "image/webp"
    assert h["etag"] not in ("", image.etag)
    assert h["cache-control"] == CACHING
    assert h["content-disposition"] == f'inline; filename="{image.id}.webp"'

    again = httpx.get(url)  # the cached variant: named again, not rendered again
    assert again.headers[ACCEL] == h[ACCEL]
    assert made.stat().st_mtime_ns == named_file(accel, again.headers[ACCEL]).stat().st_mtime_ns

    cached = httpx.get(url, headers={"If-None-Match": h["etag"]})
    assert cached.status_code == 304
    assert_no_handoff(cached)


def test_sendfile_variant_bad_parameter_is_400_without_handoff(accel: Gateway) -> None:
    image = save(accel, wide_png())
    resp = httpx.get(f"{accel.url}/images/{image.id}.png?w=abc")
    assert resp.status_code == 400
    assert_no_handoff(resp)


def test_sendfile_xsendfile_names_absolute_path(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(sendfile_header="X-Sendfile")
    image = save(gateway)
    resp = httpx.get(f"{gateway.url}/images/{image.id}.jpg")
    assert resp.status_code == 200 and resp.content == b""
    value = resp.headers[XSENDFILE]
    expected = gateway.services.cache.path(image.id, image.ext).absolute()
    assert value == str(expected)
    assert Path(value).read_bytes() == DATA
    assert ACCEL not in resp.headers


def test_sendfile_xsendfile_prefix_maps_images_dir(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(sendfile_header="X-Sendfile", sendfile_prefix="/mnt/images")
    image = save(gateway)
    resp = httpx.get(f"{gateway.url}/images/{image.id}.jpg")
    assert resp.headers[XSENDFILE] == f"/mnt/images/{image.id[:2]}/{image.id}.jpg"


def test_sendfile_unset_serves_bytes_itself(gateway: Gateway) -> None:
    image = save(gateway)
    resp = httpx.get(f"{gateway.url}/images/{image.id}.jpg")
    assert resp.content == DATA
    assert_no_handoff(resp)


def test_sendfile_image_only_in_r2_fetched_then_handed_off(
    start_gateway: Callable[..., Gateway], r2_settings: dict[str, Any]
) -> None:
    gateway = start_gateway(
        sendfile_header="X-Accel-Redirect", sendfile_prefix=PREFIX, **r2_settings
    )
    services = gateway.services
    image = save(gateway)
    for _ in range(200):
        services.cleanup.run()
        if services.library.rows.r2_state(image.id) == R2_UPLOADED:
            break
        time.sleep(0.05)
    services.cleanup.run(now=utcnow() + timedelta(hours=72, minutes=1))
    assert not services.cache.exists(image.id, image.ext)

    resp = httpx.get(f"{gateway.url}/images/{image.id}.jpg")

    assert resp.status_code == 200 and resp.content == b""
    assert named_file(gateway, resp.headers[ACCEL]).read_bytes() == DATA
