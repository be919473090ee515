"""The upstream OpenAI-compatible API: one shared httpx client, errors mapped to PicGate's tree.

Upstream 4xx/5xx keep their status and message; unreachable is 502, a timeout 504, a 2xx with a
body that is not the JSON we expect is 502. A connection that drops after the answer began is
``502 upstream_interrupted`` (not "unreachable": it was reached).

Nothing read from the upstream is unbounded (``response_limit``, ``ERROR_BODY_LIMIT``, and for
streams ``event_limit``); a body over its cap is ``502 upstream_response_too_large``.

httpx is imported where a call uses it, not with the module: a Lambda cold start that serves
``GET /v1/models`` or an image never loads it (~30 ms of CPU on python3.13); the first call
that goes upstream does.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pybase64

from picgate.config import Settings
from picgate.errors import NotConfigured, UpstreamError
from picgate.gateway.buffers import BufferHold

if TYPE_CHECKING:
    import httpx

LONG_STRING = 64 * 1024
# an error body is read for its message: a megabyte is plenty
ERROR_BODY_LIMIT = 2**20
# an Images API answer carries at most ``n`` = 10 images
MAX_IMAGES_N = 10
SLACK = 2**20  # the JSON around the images: ids, text, usage
# one SSE event carries at most two images of the largest size (a delta with two data URLs)
MAX_IMAGES_PER_EVENT = 2
# answers that come before the upstream does any work: safe to ask again (UPSTREAM_RETRIES)
RETRIED_STATUS = frozenset({429, 502, 503})
RETRY_BASE_SECONDS = 0.25
RETRY_MAX_SECONDS = 4.0


def base64_chars(size: int) -> int:
    """Characters of the base64 text of ``size`` bytes (padded)."""
    return 4 * ((size + 2) // 3)


def image_limit(settings: Settings) -> int:
    """The largest image in bytes (``MAX_IMAGE_MB``)."""
    return settings.max_image_mb * 2**20


def response_limit(settings: Settings) -> int:
    """The largest non-stream answer read from the upstream: ten images of ``MAX_IMAGE_MB``
    as base64 plus the JSON around them, and never more than ``MAX_UPSTREAM_RESPONSE_MB``
    (derived alone, 50 MB images made it ~668 MB: a 600 MB answer peaked at 2.4 GB)."""
    derived = MAX_IMAGES_N * base64_chars(image_limit(settings)) + SLACK
    return min(derived, settings.max_upstream_response_mb * 2**20)


def event_limit(settings: Settings) -> int:
    """The largest SSE line or event of an upstream stream."""
    return MAX_IMAGES_PER_EVENT * base64_chars(image_limit(settings)) + SLACK


def too_large(what: str, limit: int) -> UpstreamError:
    """The 502 for an upstream answer (or part of one) over its cap."""
    return UpstreamError(
        f"the upstream sent {what} larger than PicGate accepts ({limit} bytes)",
        code="upstream_response_too_large",
    )


def parse_json(body: bytes) -> Any:
    """``json.loads(body)``, about twice as fast on answers carrying multi-MB base64 images.

    json's string scanner is slow on an 11 MB string (15-30 ms for an 8 MB image). A long string
    that is plain padded base64 (pybase64's SIMD validator proves it holds no quote, backslash
    or control character) is cut out, a random alphanumeric placeholder is parsed in its place,
    and the text is put back. The result equals ``json.loads(body)``; a body that does not parse
    after the cut is handed to ``json.loads`` whole, so errors are json's own.
    """
    if len(body) < LONG_STRING:
        return json.loads(body)
    view = memoryview(body)
    token = "pg" + secrets.token_hex(8)
    cut: dict[str, str] = {}
    pieces: list[bytes | memoryview] = []
    copied = 0
    start = body.find(b'"')
    while start != -1:  # start: an opening quote (no quotes occur between JSON strings)
        end = start + 1
        while True:
            end = body.find(b'"', end)
            if end == -1:
                return json.loads(body)  # unterminated string: let json say so
            slashes = 0
            while body[end - 1 - slashes] == 0x5C:  # a backslash: an odd run escapes the quote
                slashes += 1
            if slashes % 2 == 0:
                break
            end += 1
        if end - start - 1 >= LONG_STRING and _plain_base64(view[start + 1 : end]):
            key = f"{token}n{len(cut)}"
            cut[key] = str(view[start + 1 : end], "ascii")
            pieces += [view[copied : start + 1], key.encode("ascii")]
            copied = end
        start = body.find(b'"', end + 1)
    if not cut:
        return json.loads(body)
    pieces.append(view[copied:])
    try:
        parsed = json.loads(b"".join(pieces))
    except ValueError:
        return json.loads(body)
    try:
        return _restore(parsed, cut)
    except RecursionError:  # nested deeper than this walk can go: json decides
        return json.loads(body)


def _plain_base64(text: memoryview) -> bool:
    try:
        pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _restore(value: Any, cut: dict[str, str]) -> Any:
    if isinstance(value, str):
        return cut.get(value, value)
    if isinstance(value, list):
        return [_restore(v, cut) for v in value]
    if isinstance(value, dict):
        return {cut.get(k, k): _restore(v, cut) for k, v in value.items()}
    return value


def upstream_url(settings: Settings, path: str) -> str:
    if not settings.upstream_api_base:
        raise NotConfigured(
            "the upstream API is not configured: set UPSTREAM_API_BASE (and UPSTREAM_API_KEY, "
            "UPSTREAM_MODEL_NAME) in the environment or in the admin console"
        )
    return settings.upstream_api_base.rstrip("/") + "/" + path.lstrip("/")


def same_origin(url: str, base: str | None) -> bool:
    if not base:
        return False
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def upstream_headers(settings: Settings) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if settings.upstream_api_key:
        headers["Authorization"] = f"Bearer {settings.upstream_api_key}"
    return headers


def not_json_answer() -> UpstreamError:
    """The 502 for a 2xx answer that is not JSON."""
    return UpstreamError(
        "the upstream API answered with something that is not JSON",
        code="bad_upstream_response",
    )


def error_from_upstream(status: int, body: bytes) -> UpstreamError:
    """An upstream non-2xx answer, keeping its status and message (OpenAI or OpenRouter shape)."""
    message = f"upstream returned HTTP {status}"
    error_type = "upstream_error"
    code: str | None = None
    param: str | None = None
    extra: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text:
            message = f"{message}: {text[:300]}"
    else:
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            error_type = str(err.get("type") or error_type)
            raw_code = err.get("code")
            code = None if raw_code is None else str(raw_code)
            param = err.get("param") if isinstance(err.get("param"), str) else None
            for key in ("moderation_details", "metadata"):
                if key in err:
                    extra[key] = err[key]
        elif isinstance(err, str):
            message = err
        elif isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    status = status if 400 <= status <= 599 else 502
    return UpstreamError(
        message, status_code=status, error_type=error_type, code=code, param=param, extra=extra
    )


def map_transport_error(exc: httpx.HTTPError, *, answering: bool = False) -> UpstreamError:
    """The UpstreamError for a transport failure; ``answering``: the upstream had begun to
    answer (status line received), so a broken connection is an interruption."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(
            "the upstream API did not answer in time", status_code=504, code="upstream_timeout"
        )
    if answering:
        return interrupted(exc)
    return UpstreamError(
        f"the upstream API is unreachable ({type(exc).__name__})",
        status_code=502,
        code="upstream_unreachable",
    )


def interrupted(exc: BaseException) -> UpstreamError:
    """The 502 for an answer whose connection broke before its end."""
    return UpstreamError(
        f"the upstream stream was interrupted before the answer was complete "
        f"({type(exc).__name__})",
        status_code=502,
        code="upstream_interrupted",
    )


async def read_limited(chunks: AsyncIterator[bytes], limit: int, what: str) -> bytes:
    """All of ``chunks``, or ``too_large`` as soon as they pass ``limit`` bytes."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_large(what, limit)
    return bytes(body)


def declared_over(response: httpx.Response, limit: int) -> bool:
    declared = response.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


class Upstream:
    """Calls to the upstream API through a shared client, made on first use.

    ``client`` is a client or a zero-argument callable returning one: building an httpx client
    loads the CA bundle (~100 ms), which a Lambda cold start should not pay for requests that
    never reach the upstream.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        *,
        observe: Callable[[Settings, float], None] | None = None,
    ) -> None:
        """``observe(settings, seconds)`` is told how long each upstream took to answer
        (its status line), for the metrics."""
        self._client = client
        self._observe = observe

    @property
    def client(self) -> httpx.AsyncClient:
        import httpx

        if isinstance(self._client, httpx.AsyncClient):
            return self._client
        return self._client()

    @staticmethod
    def build_client(*, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(600.0, connect=15.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=40),
            follow_redirects=False,
        )

    def _timeout(self, settings: Settings) -> httpx.Timeout:
        import httpx

        return httpx.Timeout(settings.upstream_timeout_seconds, connect=15.0)

    async def post_json(
        self,
        settings: Settings,
        path: str,
        body: dict[str, Any],
        *,
        hold: BufferHold | None = None,
    ) -> Any:
        """POST JSON, return the parsed JSON answer; every failure becomes an UpstreamError."""
        chunks: list[bytes] = []
        await self.post(settings, path, chunks.append, json=body, hold=hold)
        return self.parse_answer(b"".join(chunks))

    async def post(
        self,
        settings: Settings,
        path: str,
        feed: Callable[[bytes], None],
        *,
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        hold: BufferHold | None = None,
    ) -> None:
        """POST JSON or multipart; a 2xx answer's body goes to ``feed`` as it arrives.

        A non-2xx answer is read (up to ``ERROR_BODY_LIMIT``) and raised with its status and
        message; transport failures are raised as 502/504 (``upstream_interrupted`` halfway
        through the body); a body over ``response_limit`` as 502 upstream_response_too_large.
        ``hold``: the caller keeps the body, so its bytes are taken from the server-wide budget
        before each chunk is handed on (ServerBusy, 503, when there is no room).
        """
        import httpx

        limit = response_limit(settings)
        answering = False
        try:
            async with self.stream(settings, path, json, data=data, files=files) as resp:
                answering = True
                if declared_over(resp, limit):
                    raise too_large("an answer", limit)
                total = 0
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > limit:
                        raise too_large("an answer", limit)
                    if hold is not None:
                        await hold.cover(total)
                    feed(chunk)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, answering=answering) from exc

    async def get_json(self, settings: Settings, path: str, *, timeout: float = 15.0) -> Any:
        import httpx

        url = upstream_url(settings, path)
        headers = upstream_headers(settings)
        limit = ERROR_BODY_LIMIT
        answering = False
        try:
            async with self.client.stream("GET", url, headers=headers, timeout=timeout) as resp:
                answering = True
                if resp.status_code < 300:
                    limit = response_limit(settings)
                if declared_over(resp, limit):
                    raise too_large("an answer", limit)
                body = await read_limited(resp.aiter_bytes(), limit, "an answer")
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, answering=answering) from exc
        if resp.status_code >= 300:
            raise error_from_upstream(resp.status_code, body)
        return self.parse_answer(body)

    @staticmethod
    def parse_answer(body: bytes) -> Any:
        """A 2xx answer's JSON; UpstreamError (502) when it is not JSON."""
        try:
            return parse_json(body)
        except ValueError as exc:
            raise not_json_answer() from exc

    async def _send(self, settings: Settings, request: httpx.Request) -> httpx.Response:
        """Send ``request``; a refused connection, 429, 502 or 503 is tried again up to
        ``UPSTREAM_RETRIES`` times (nothing was drawn yet: those answers come before the work)."""
        import httpx

        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                resp = await self.client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= settings.upstream_retries:
                    raise map_transport_error(exc) from exc
            except httpx.HTTPError as exc:
                raise map_transport_error(exc) from exc
            else:
                if self._observe is not None:
                    self._observe(settings, time.perf_counter() - started)
                if resp.status_code not in RETRIED_STATUS or attempt >= settings.upstream_retries:
                    return resp
                await resp.aclose()
            await asyncio.sleep(min(RETRY_BASE_SECONDS * 2**attempt, RETRY_MAX_SECONDS))
            attempt += 1

    @asynccontextmanager
    async def stream(
        self,
        settings: Settings,
        path: str,
        body: dict[str, Any] | None,
        *,
        data: dict[str, str] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        accept: str | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Open a POST (JSON ``body``, or multipart ``data`` and ``files``) and yield its 2xx
        response unread; a non-2xx answer is read and raised as UpstreamError."""
        import httpx

        headers = upstream_headers(settings)
        if accept is not None:
            headers["Accept"] = accept
        request = self.client.build_request(
            "POST",
            upstream_url(settings, path),
            json=body,
            data=data,
            files=files,
            headers=headers,
            timeout=self._timeout(settings),
        )
        resp = await self._send(settings, request)
        try:
            if resp.status_code >= 300:
                if declared_over(resp, ERROR_BODY_LIMIT):
                    raise too_large(f"an HTTP {resp.status_code} error body", ERROR_BODY_LIMIT)
                try:
                    content = await read_limited(
                        resp.aiter_bytes(),
                        ERROR_BODY_LIMIT,
                        f"an HTTP {resp.status_code} error body",
                    )
                except httpx.HTTPError as exc:
                    raise map_transport_error(exc, answering=True) from exc
                raise error_from_upstream(resp.status_code, content)
            yield resp
        finally:
            await resp.aclose()
