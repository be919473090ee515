"""``SENDFILE_HEADER=X-Accel-Redirect`` through the real nginx and Caddy of Debian, configured
with the snippets of docs/DEPLOY.en.md (tests/proxies.py reads them out of the doc): PicGate
decides, the proxy sends the bytes, and what a client sees is what PicGate would have sent."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

from picgate.library.records import ImageOrigin, StoredImage
from tests.conftest import Gateway
from tests.proxies import (
    CADDY_PREFIX,
    DEPLOY_EN,
    DEPLOY_ZH,
    NGINX_PREFIX,
    CaddyServer,
    NginxServer,
    ProxyServer,
    doc_block,
)
from tests.support.images import make_image

DATA = make_image("JPEG", 200_000, seed=47)
CACHING = "public, max-age=31536000, immutable"
HANDOFF_HEADERS = ("x-accel-redirect", "x-sendfile")


@dataclass(frozen=True)
class Proxied:
    gateway: Gateway
    proxy: ProxyServer

    @property
    def url(self) -> str:
        return self.proxy.url

    def save(self, data: bytes = DATA) -> StoredImage:
        library = self.gateway.services.library
        return library.save_sync(data, origin=ImageOrigin("test", "p"))

    def file(self, image: StoredImage) -> Path:
        return self.gateway.services.cache.path(image.id, image.ext)


PROXIES: dict[str, tuple[type[ProxyServer], str]] = {
    "nginx": (NginxServer, NGINX_PREFIX),
    "caddy": (CaddyServer, CADDY_PREFIX),
}


@pytest.fixture(params=sorted(PROXIES))
def proxied(
    request: pytest.FixtureRequest, start_gateway: Callable[..., Gateway], tmp_path: Path
) -> Iterator[Proxied]:
    server_class, prefix = PROXIES[request.param]
    gateway = start_gateway(sendfile_header="X-Accel-Redirect", sendfile_prefix=prefix)
    images_dir = gateway.services.cache.root
    images_dir.mkdir(parents=True, exist_ok=True)
    with server_class(
        tmp_path / request.param, upstream_port=gateway.server.port, images_dir=images_dir
    ) as proxy:
        yield Proxied(gateway, proxy)
    assert not proxy.running


def wide_png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (1600, 800), (10, 90, 200)).save(out, "PNG")
    return out.getvalue()


def proxy_own_etag(name: str, path: Path) -> str:
    """The ETag the proxy would compute for ``path`` (nginx: mtime-size in hex; Caddy 2.6:
    mtime in ns and size in base 36)."""
    st = path.stat()
    if name == "nginx":
        return f'"{int(st.st_mtime):x}-{st.st_size:x}"'

    def base36(n: int) -> str:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        out = ""
        while True:
            n, r = divmod(n, 36)
            out = digits[r] + out
            if n == 0:
                return out

    return f'"{base36(st.st_mtime_ns)}{base36(st.st_size)}"'


def assert_no_handoff_leak(resp: httpx.Response) -> None:
    for name in HANDOFF_HEADERS:
        assert name not in resp.headers, f"{name} reached the client"


def assert_picgate_error(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert_no_handoff_leak(resp)


def test_proxy_original_has_picgate_bytes_and_headers(proxied: Proxied) -> None:
    image = proxied.save()
    for method in ("GET", "HEAD"):
        resp = httpx.request(method, f"{proxied.url}/images/{image.id}.jpg")
        assert resp.status_code == 200, resp.text
        assert resp.content == (DATA if method == "GET" else b"")
        h = resp.headers
        assert h["etag"] == f'"{hashlib.sha256(DATA).hexdigest()}"' == image.etag
        assert h.get_list("etag") == [image.etag]
        assert h["cache-control"] == CACHING
        assert h["content-type"] == "image/jpeg"
        assert h["content-disposition"] == f'inline; filename="{image.id}.jpg"'
        assert h["content-length"] == str(len(DATA))
        assert h.get_list("x-content-type-options") == ["nosniff"]
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        assert_no_handoff_leak(resp)


def test_proxy_if_none_match_picgate_etag_is_304(proxied: Proxied) -> None:
    image = proxied.save()
    resp = httpx.get(f"{proxied.url}/images/{image.id}.jpg", headers={"If-None-Match": image.etag})
    assert resp.status_code == 304 and resp.content == b""
    assert resp.headers["etag"] == image.etag
    assert_no_handoff_leak(resp)


def test_proxy_own_etag_is_not_a_validator(proxied: Proxied) -> None:
    """Only PicGate's ETag revalidates: the one the proxy would compute is never shown nor
    honoured, so the 304 above was PicGate's decision."""
    image = proxied.save()
    own = proxy_own_etag(proxied.proxy.name, proxied.file(image))
    resp = httpx.get(f"{proxied.url}/images/{image.id}.jpg", headers={"If-None-Match": own})
    assert resp.status_code == 200 and resp.content == DATA
    assert resp.headers["etag"] == image.etag


def test_proxy_variant_is_webp_at_snapped_width(proxied: Proxied) -> None:
    image = proxied.save(wide_png())
    url = f"{proxied.url}/images/{image.id}.png?w=300&format=webp"  # 300 snaps down to 256
    resp = httpx.get(url)
    assert resp.status_code == 200, resp.text
    with PILImage.open(io.BytesIO(resp.content)) as variant:
        assert (variant.format, variant.size) == ("WEBP", (256, 128))
    h = resp.headers
    assert h["content-type"] == "image/webp"
    assert re.fullmatch(r'"[0-9a-f]{64}"', h["etag"]) and h["etag"] != image.etag
    assert h["cache-control"] == CACHING
    assert h["content-disposition"] == f'inline; filename="{image.id}.webp"'
    assert h["x-content-type-options"] == "nosniff"
    assert_no_handoff_leak(resp)

    again = httpx.get(url, headers={"If-None-Match": h["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_proxy_unknown_image_is_picgate_404(proxied: Proxied) -> None:
    assert_picgate_error(httpx.get(f"{proxied.url}/images/AAAAAAAAAAAAAAAAAAAAAA.png"), 404)


def test_proxy_image_gone_everywhere_is_picgate_410(proxied: Proxied) -> None:
    image = proxied.save()
    proxied.gateway.services.cache.delete(image.id, image.ext)
    assert_picgate_error(httpx.get(f"{proxied.url}/images/{image.id}.jpg"), 410)


def test_proxy_answers_range_with_the_bytes(proxied: Proxied) -> None:
    image = proxied.save()
    resp = httpx.get(f"{proxied.url}/images/{image.id}.jpg", headers={"Range": "bytes=0-99"})
    assert resp.status_code == 206
    assert resp.content == DATA[:100]
    assert resp.headers["content-range"] == f"bytes 0-99/{len(DATA)}"
    assert resp.headers["etag"] == image.etag
    assert_no_handoff_leak(resp)


def test_proxy_if_range_picgate_etag_gives_the_range_or_the_whole(proxied: Proxied) -> None:
    """nginx answers the range; Caddy 2.6 compares If-Range with its own ETag and sends the
    whole image: slower to resume, never wrong bytes."""
    image = proxied.save()
    headers = {"Range": "bytes=0-99", "If-Range": image.etag}
    resp = httpx.get(f"{proxied.url}/images/{image.id}.jpg", headers=headers)
    expected = {206: DATA[:100], 200: DATA}
    assert resp.status_code in expected and resp.content == expected[resp.status_code]
    assert resp.headers["etag"] == image.etag


def test_proxy_files_not_reachable_directly(proxied: Proxied) -> None:
    """Whatever prefix either snippet uses, a client asking for the file (or a path out of the
    images folder) gets a 404, never the bytes: only PicGate's answer opens a file."""
    image = proxied.save()
    relative = proxied.file(image).relative_to(proxied.gateway.services.cache.root).as_posix()
    paths = [
        f"{NGINX_PREFIX}{relative}",
        f"{CADDY_PREFIX}{relative}",
        f"{NGINX_PREFIX}..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ]
    for path in paths:
        resp = httpx.get(f"{proxied.url}{path}")
        assert resp.status_code in (400, 404), (path, resp.status_code)
        assert DATA[:64] not in resp.content and b"root:" not in resp.content, path
        assert_no_handoff_leak(resp)


@pytest.mark.parametrize("language", ["nginx", "caddyfile"])
def test_proxy_snippets_same_in_both_deploy_docs(language: str) -> None:
    """DEPLOY.md (Chinese) shows the same configuration as DEPLOY.en.md; only comments differ."""

    def code(text: str) -> list[str]:
        lines = (line.split("#", 1)[0].rstrip() for line in text.splitlines())
        return [line for line in lines if line]

    assert code(doc_block(language, DEPLOY_ZH)) == code(doc_block(language, DEPLOY_EN))
