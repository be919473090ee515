"""The SSRF guard of ``picgate.gateway.fetch``: forbidden addresses in every spelling, redirects.

A real listener on 127.0.0.1 stands in for the internal service an attacker wants to reach;
every refusal is also checked against it: it must never see a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from picgate.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, UpstreamError
from picgate.gateway.fetch import (
    BlockedAddress,
    address_allowed,
    fetch_image_bytes,
    resolve_checked,
)
from tests.support.images import make_image
from tests.support.servers import ServerThread

PNG = make_image("PNG", 3_000, seed=9)
PUBLIC_IP = "93.184.216.34"  # an IP literal: resolving it needs no DNS

FORBIDDEN_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "169.254.169.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "fe80::1%eth0",
    "fc00::1",
    "fec0::1",  # site-local (deprecated): Python calls it global
    "feff:ffff::1",
    "198.18.0.1",
    "240.0.0.1",
    "not-an-address",
]


class Listener:
    """An HTTP server on loopback that records every request it gets."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.server = ServerThread(Starlette(routes=[Route("/{p:path}", self._any)]))

    async def _any(self, request: Request) -> Response:
        self.seen.append(str(request.url))
        return Response(PNG, media_type="image/png")


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    target = Listener()
    target.server.start()
    yield target
    target.server.stop()


@pytest.fixture
def internal(listener: Listener) -> Listener:
    listener.seen.clear()
    return listener


@pytest.mark.parametrize("address", FORBIDDEN_ADDRESSES)
def test_address_allowed_forbidden_address_refused(address: str) -> None:
    assert not address_allowed(address)


@pytest.mark.parametrize("address", ["8.8.8.8", PUBLIC_IP, "2606:4700:4700::1111"])
def test_address_allowed_public_address_accepted(address: str) -> None:
    assert address_allowed(address)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "10.1.2.3",
        "172.16.5.4",
        "192.168.0.10",
        "100.64.1.1",
        "::ffff:127.0.0.1",
        "2130706433",  # decimal 127.0.0.1
        "0177.0.0.1",  # octal 127.0.0.1
        "0x7f.1",
        "127.1",
        "localhost",
    ],
)
async def test_resolve_checked_loopback_and_private_spellings_blocked(host: str) -> None:
    with pytest.raises(BlockedAddress) as caught:
        await resolve_checked(host, 80)
    assert caught.value.status_code == 400


async def test_resolve_checked_public_literal_returned() -> None:
    assert await resolve_checked(PUBLIC_IP, 443) == PUBLIC_IP


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0177.0.0.1",
        "localhost",
        "LocalHost",
    ],
)
async def test_fetch_image_bytes_loopback_forms_never_reach_listener(
    internal: Listener, host: str
) -> None:
    url = f"http://{host}:{internal.server.port}/secret.png"
    async with httpx.AsyncClient() as client:
        with pytest.raises(BlockedAddress):
            await fetch_image_bytes(client, url, max_bytes=2**20)
    assert internal.seen == []


async def test_fetch_image_bytes_trusted_origin_redirect_to_loopback_blocked(
    internal: Listener,
) -> None:
    target = f"http://127.0.0.1:{internal.server.port}/admin.png"

    async def bounce(request: Request) -> Response:
        return RedirectResponse(target, status_code=302)

    with ServerThread(Starlette(routes=[Route("/img.png", bounce)])) as origin:
        async with httpx.AsyncClient() as client:
            with pytest.raises(BlockedAddress):
                await fetch_image_bytes(
                    client, origin.url + "/img.png", max_bytes=2**20, trusted_origin=origin.url
                )
    assert internal.seen == []


async def test_fetch_image_bytes_trusted_origin_itself_is_fetched(internal: Listener) -> None:
    origin = internal.server.url
    async with httpx.AsyncClient() as client:
        data = await fetch_image_bytes(
            client, origin + "/ok.png", max_bytes=2**20, trusted_origin=origin
        )
    assert data == PNG
    assert internal.seen == [origin + "/ok.png"]


async def test_fetch_image_bytes_public_hop_redirecting_to_loopback_blocked(
    internal: Listener,
) -> None:
    asked: list[tuple[str, str]] = []

    def public_host(request: httpx.Request) -> httpx.Response:
        asked.append((str(request.url), request.headers["host"]))
        loopback = f"http://localhost:{internal.server.port}/metadata"
        return httpx.Response(302, headers={"Location": loopback})

    async with httpx.AsyncClient(transport=httpx.MockTransport(public_host)) as client:
        with pytest.raises(BlockedAddress):
            await fetch_image_bytes(client, f"http://{PUBLIC_IP}/cat.png", max_bytes=2**20)
    assert asked == [(f"http://{PUBLIC_IP}/cat.png", PUBLIC_IP)]  # one hop, then refused
    assert internal.seen == []


async def test_fetch_image_bytes_public_host_image_returned() -> None:
    def public_host(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(public_host)) as client:
        assert await fetch_image_bytes(client, f"http://{PUBLIC_IP}/a.png", max_bytes=2**20) == PNG


async def test_fetch_image_bytes_overall_timeout_is_504() -> None:
    async def stalls(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(stalls)) as client:
        with pytest.raises(UpstreamError) as caught:
            await fetch_image_bytes(
                client, f"http://{PUBLIC_IP}/slow.png", max_bytes=2**20, timeout=0.05
            )
    assert (caught.value.status_code, caught.value.code) == (504, "image_fetch_timeout")


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (
            httpx.Response(200, content=b"<html>", headers={"Content-Type": "text/html"}),
            UnsupportedMediaType,
        ),
        (
            httpx.Response(200, content=b"x" * 2000, headers={"Content-Type": "image/png"}),
            PayloadTooLarge,
        ),
        (httpx.Response(404), UpstreamError),
    ],
)
async def test_fetch_image_bytes_bad_answers_refused(
    response: httpx.Response, error: type[Exception]
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: response)) as client:
        with pytest.raises(error):
            await fetch_image_bytes(client, f"http://{PUBLIC_IP}/a.png", max_bytes=1000)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "http://user:pw@example.com/a.png",
        "http://example.com:99999/a.png",
        "http://[::1/a.png",
        "http:///a.png",
    ],
)
async def test_fetch_image_bytes_invalid_urls_are_400(url: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(BadRequest) as caught:
            await fetch_image_bytes(client, url, max_bytes=1000)
    assert caught.value.status_code == 400
