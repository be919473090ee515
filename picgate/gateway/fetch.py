"""Fetching an image from a URL, with an SSRF guard for URLs that users or upstreams give us.

The guard resolves the host once, refuses loopback, private, link-local, CGNAT, multicast,
reserved and unspecified addresses, and IPv6 site-local ``fec0::/10`` (deprecated, but routed
as private on networks that still use it; IPv4-mapped IPv6 is unwrapped first), then connects to the
address it checked (the name is kept for ``Host`` and TLS SNI), so DNS cannot change the answer
between the check and the connection. Every redirect hop is checked again. Bytes and time are
capped and only images are accepted.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import anyio

from picgate.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, UpstreamError

if TYPE_CHECKING:
    import httpx

MAX_REDIRECTS = 5
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_BENCHMARK = ipaddress.ip_network("198.18.0.0/15")
# NAT64 prefixes carry an IPv4 address in their low 32 bits (64:ff9b::7f00:1 is 127.0.0.1)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class BlockedAddress(BadRequest):
    code = "blocked_url"


def address_allowed(address: str) -> bool:
    """True when ``address`` (an IP literal, IPv6 scope allowed) is a public unicast address."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0]
        )
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _NAT64):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip.teredo is not None:
            ip = ip.teredo[1]
    if isinstance(ip, ipaddress.IPv4Address) and (ip in _CGNAT or ip in _BENCHMARK):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False  # Python counts fec0::/10 as global: it is not in the special registry
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
        and not ip.is_unspecified
    )


async def resolve_checked(host: str, port: int) -> str:
    """One allowed address for ``host``; BlockedAddress when any answer is forbidden."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # IDNA refused the name: an empty or overlong label, bad punycode
        raise BadRequest(
            f"image URL has an invalid host name {host!r}", code="invalid_url"
        ) from exc
    except OSError as exc:
        raise BadRequest(f"cannot resolve image host {host!r}", code="unresolvable_url") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise BadRequest(f"cannot resolve image host {host!r}", code="unresolvable_url")
    # one forbidden answer is enough to refuse: a name that mixes them is an attack
    for address in addresses:
        if not address_allowed(address):
            raise BlockedAddress(f"image URL points at a forbidden address ({host})")
    return addresses[0]


def _pin(url: str, address: str) -> tuple[str, str]:
    """The URL with its host replaced by ``address``, and the original Host header value."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc_host = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port else ""
    host_header = (f"[{host}]" if ":" in host else host) + port
    return urlunsplit((parts.scheme, netloc_host + port, parts.path, parts.query, "")), host_header


async def fetch_image_bytes(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    timeout: float = 30.0,
    trusted_origin: str | None = None,
) -> bytes:
    """GET an image; URLs outside ``trusted_origin`` go through the SSRF guard on every hop.

    ``timeout`` bounds the whole fetch (resolving, every redirect, the body): exceeding it is a
    504 UpstreamError. A URL that cannot be parsed, is not http(s) or is refused is a BadRequest.
    """
    try:
        with anyio.fail_after(timeout):
            return await _fetch(client, url, max_bytes=max_bytes, trusted_origin=trusted_origin)
    except TimeoutError as exc:
        raise UpstreamError(
            "fetching the image URL timed out", status_code=504, code="image_fetch_timeout"
        ) from exc


def _split(url: str) -> tuple[SplitResult, int]:
    """The parts of an http(s) URL and its port; BadRequest for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or a broken IPv6 literal
        raise BadRequest("image URL is not a valid URL", code="invalid_url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("image URL must be http or https", code="invalid_url")
    if parts.username or parts.password:
        raise BadRequest("image URL must not carry credentials", code="invalid_url")
    return parts, port or (443 if parts.scheme == "https" else 80)


async def _fetch(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, trusted_origin: str | None
) -> bytes:
    import httpx

    from picgate.gateway.upstream import same_origin

    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts, port = _split(current)
        hostname = parts.hostname or ""
        extensions: dict[str, str] = {}
        headers = {"Accept": "image/*"}
        target = current
        if not same_origin(current, trusted_origin):
            address = await resolve_checked(hostname, port)
            target, headers["Host"] = _pin(current, address)
            if parts.scheme == "https":
                extensions["sni_hostname"] = hostname
        try:
            async with client.stream(
                "GET", target, headers=headers, extensions=extensions, follow_redirects=False
            ) as resp:
                if resp.is_redirect:
                    current = urljoin(current, resp.headers["location"])
                    continue
                if resp.status_code != 200:
                    raise UpstreamError(
                        f"image URL answered HTTP {resp.status_code}", code="image_fetch_failed"
                    )
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype and not (
                    ctype.startswith("image/") or ctype == "application/octet-stream"
                ):
                    raise UnsupportedMediaType(f"image URL returned {ctype}, not an image")
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise PayloadTooLarge("image at URL is too large")
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > max_bytes:
                        raise PayloadTooLarge("image at URL is too large")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                "fetching the image URL timed out", status_code=504, code="image_fetch_timeout"
            ) from exc
        except httpx.InvalidURL as exc:
            raise BadRequest("image URL is not a valid URL", code="invalid_url") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"fetching the image URL failed ({type(exc).__name__})", code="image_fetch_failed"
            ) from exc
    raise UpstreamError("image URL redirected too many times", code="image_fetch_failed")
