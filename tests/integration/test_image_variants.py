"""GET /images/{id}.{ext}?w=&h=&format=&q=: variants over a real socket, cached beside the
original, counted in the cache size, removed with the original, never archived to R2."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from picgate.db.models import R2_UPLOADED
from picgate.library.records import ImageOrigin, StoredImage, utcnow
from picgate.storage.s3_store import S3ObjectStore
from tests.conftest import Gateway
from tests.robustness import payloads
from tests.s3_fixtures import S3_TEST_BUCKET
from tests.support.images import make_image

PAST_TTL = timedelta(hours=72, minutes=1)


def save(gateway: Gateway, data: bytes) -> StoredImage:
    return gateway.services.library.save_sync(data, origin=ImageOrigin("test"))


def wide_png(width: int = 1600, height: int = 800, seed: int = 0) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (seed, 90, 200)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def stored(gateway: Gateway) -> StoredImage:
    return save(gateway, wide_png())


def url_of(gateway: Gateway, image: StoredImage, query: str = "") -> str:
    return f"{gateway.url}/images/{image.id}.{image.ext}" + (f"?{query}" if query else "")


def size_of(data: bytes) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(data)) as img:
        return img.size


def variant_files(gateway: Gateway, image_id: str) -> list[str]:
    folder = gateway.services.cache.variant_dir(image_id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_variant_webp_width_snapped_with_own_headers(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.get(url_of(gateway, stored, "w=600&format=webp"))
    assert resp.status_code == 200, resp.text
    h = resp.headers
    assert h["content-type"] == "image/webp"
    assert size_of(resp.content) == (512, 256)  # 600 snaps down to 512
    assert h["etag"].startswith('"') and h["etag"] != stored.etag
    assert h["cache-control"] == "public, max-age=31536000, immutable"
    assert h["x-content-type-options"] == "nosniff"
    assert "vary" not in h
    assert h["content-length"] == str(len(resp.content))
    assert variant_files(gateway, stored.id) == ["w512h0q80.webp"]


@pytest.mark.parametrize(
    ("query", "mime", "size"),
    [
        ("h=300", "image/png", (512, 256)),
        ("w=1024&h=128", "image/png", (256, 128)),
        ("format=jpeg&q=30", "image/jpeg", (1600, 800)),
        ("w=5000&format=webp", "image/webp", (1600, 800)),  # never upscaled
        ("w=64&format=png", "image/png", (64, 32)),
    ],
)
def test_variant_each_parameter_shapes_the_answer(
    gateway: Gateway, stored: StoredImage, query: str, mime: str, size: tuple[int, int]
) -> None:
    resp = httpx.get(url_of(gateway, stored, query))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == mime
    assert size_of(resp.content) == size


def test_variant_quality_is_its_own_variant(gateway: Gateway, stored: StoredImage) -> None:
    photo = save(gateway, make_image("JPEG", 300_000, seed=3))
    low = httpx.get(url_of(gateway, photo, "format=webp&q=5"))
    high = httpx.get(url_of(gateway, photo, "format=webp&q=95"))
    assert len(low.content) < len(high.content)
    assert low.headers["etag"] != high.headers["etag"]


def test_variant_avif_when_pillow_has_it(gateway: Gateway, stored: StoredImage) -> None:
    from picgate.variant_query import avif_supported

    resp = httpx.get(url_of(gateway, stored, "w=256&format=avif"))
    if avif_supported():
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/avif"
    else:
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "format"


def test_variant_query_naming_the_original_serves_it(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.get(url_of(gateway, stored, "format=png&q=50&v=2"))
    assert resp.status_code == 200 and resp.headers["etag"] == stored.etag
    assert resp.content == wide_png()
    assert variant_files(gateway, stored.id) == []


def test_variant_if_none_match_is_304_without_rendering(
    gateway: Gateway, stored: StoredImage
) -> None:
    first = httpx.get(url_of(gateway, stored, "w=256&format=webp"))
    etag = first.headers["etag"]
    gateway.services.cache.drop_variants(stored.id)
    again = httpx.get(url_of(gateway, stored, "w=256&format=webp"), headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert variant_files(gateway, stored.id) == []  # answered without making it again
    other = httpx.get(
        url_of(gateway, stored, "w=256&format=webp"), headers={"If-None-Match": stored.etag}
    )
    assert other.status_code == 200  # the original's ETag is not the variant's
    remade = httpx.get(url_of(gateway, stored, "w=256&format=webp"))
    assert remade.headers["etag"] == etag and remade.content == first.content


def test_variant_head_has_headers_no_body(gateway: Gateway, stored: StoredImage) -> None:
    resp = httpx.head(url_of(gateway, stored, "w=128&format=webp"))
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-type"] == "image/webp"


@pytest.mark.parametrize(
    ("query", "param"),
    [("w=abc", "w"), ("w=0", "w"), ("h=-1", "h"), ("q=101", "q"), ("format=svg", "format")],
)
def test_variant_bad_parameter_is_400_openai_error(
    gateway: Gateway, stored: StoredImage, query: str, param: str
) -> None:
    resp = httpx.get(url_of(gateway, stored, query))
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["code"] == "invalid_variant"
    assert variant_files(gateway, stored.id) == []


def test_variant_of_unknown_image_is_404(gateway: Gateway) -> None:
    resp = httpx.get(f"{gateway.url}/images/{'a' * 22}.png?w=128")
    assert resp.status_code == 404 and set(resp.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_variant_of_animated_gif_is_400(gateway: Gateway) -> None:
    frames = [PILImage.new("RGB", (40, 40), (90 * i, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=40)
    image = save(gateway, out.getvalue())
    resp = httpx.get(url_of(gateway, image, "w=64&format=webp"))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "animated_image"
    assert httpx.get(url_of(gateway, image)).status_code == 200  # the original still is


@pytest.mark.parametrize("bomb", ["png", "gif"])
def test_variant_of_decompression_bomb_is_415(gateway: Gateway, bomb: str) -> None:
    data = payloads.png_bomb() if bomb == "png" else payloads.gif_bomb()
    image = save(gateway, data)
    resp = httpx.get(url_of(gateway, image, "w=256&format=webp"))
    assert resp.status_code == 415 and resp.json()["error"]["code"] == "image_too_large"
    assert variant_files(gateway, image.id) == []


def test_variant_concurrent_requests_render_once(gateway: Gateway, stored: StoredImage) -> None:
    url = url_of(gateway, stored, "w=768&format=webp")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: httpx.get(url, timeout=30), range(6)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert variant_files(gateway, stored.id) == ["w768h0q80.webp"]


def test_variant_counted_in_cache_usage_and_removed_with_original(
    gateway: Gateway, stored: StoredImage
) -> None:
    cache = gateway.services.cache
    before = cache.usage()
    made = httpx.get(url_of(gateway, stored, "w=256&format=webp")).content
    assert cache.usage() == before + len(made)
    cache.reset_usage()  # a fresh walk finds the same total
    assert cache.usage() == before + len(made)
    freed = cache.delete(stored.id, stored.ext)
    assert freed == stored.size + len(made)
    assert variant_files(gateway, stored.id) == []
    assert cache.usage() == before - stored.size


def test_variant_removed_by_console_delete(gateway: Gateway, stored: StoredImage) -> None:
    from tests.support.admin import signed_in

    httpx.get(url_of(gateway, stored, "w=128&format=webp"))
    client, csrf = signed_in(gateway.url)
    try:
        answer = client.post(
            "/admin/api/images/delete",
            json={"ids": [stored.id], "mode": "local"},
            headers={"X-CSRF-Token": csrf},
        )
    finally:
        client.close()
    assert answer.status_code == 200, answer.text
    assert variant_files(gateway, stored.id) == []


def test_variant_removed_by_ttl_cleanup(gateway: Gateway, stored: StoredImage) -> None:
    httpx.get(url_of(gateway, stored, "w=128&format=webp"))
    report = gateway.services.cleanup.run(now=utcnow() + PAST_TTL)
    assert report.ttl_removed == 1
    assert variant_files(gateway, stored.id) == []
    assert httpx.get(url_of(gateway, stored, "w=128&format=webp")).status_code == 410


def test_variant_bytes_count_toward_the_cap(gateway: Gateway) -> None:
    services = gateway.services
    old = save(gateway, wide_png(seed=1))
    new = save(gateway, wide_png(seed=2))
    services.library.touch(new.id)
    for query in ("w=2048&format=png", "w=1536&format=png", "w=1024&format=png"):
        assert httpx.get(url_of(gateway, old, query)).status_code == 200
    services.library.flush_access_times()
    with_variants = services.cache.usage()
    # room for both originals, not for the variants as well: the least recent one goes
    cap = old.size + new.size
    assert with_variants > cap
    result = services.library.copies.evict_to_cap(cap_bytes=cap)
    assert result.removed >= 1
    assert services.cache.usage() <= cap
    assert variant_files(gateway, old.id) == []


def test_variant_of_image_only_in_r2_fetched_then_made_never_archived(
    start_gateway: Callable[..., Gateway], r2_settings: dict[str, Any], s3_store: S3ObjectStore
) -> None:
    gateway = start_gateway(**r2_settings)
    services = gateway.services
    image = save(gateway, wide_png(seed=7))
    for _ in range(200):
        services.cleanup.run()
        if services.library.rows.r2_state(image.id) == R2_UPLOADED:
            break
        time.sleep(0.05)
    services.cleanup.run(now=utcnow() + PAST_TTL)  # the local copy goes; R2 keeps it
    assert not services.cache.exists(image.id, "png")

    resp = httpx.get(url_of(gateway, image, "w=256&format=webp"))

    assert resp.status_code == 200, resp.text
    assert size_of(resp.content) == (256, 128)
    assert services.cache.exists(image.id, "png")  # fetched back as /images does
    listing = s3_store.client.list_objects_v2(Bucket=S3_TEST_BUCKET).get("Contents", [])
    assert [o["Key"] for o in listing if image.id in o["Key"]] == [f"images/{image.id}.png"]
