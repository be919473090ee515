"""The upstream OpenAI-compatible API: one shared httpx client, errors mapped to PicGate's tree.

Upstream 4xx/5xx keep their status and message; unreachable is 502, a timeout 504, a 2xx with a
body that is not the JSON we expect is 502.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from picgate.config import Settings
from picgate.errors import NotConfigured, UpstreamError


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


def map_transport_error(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(
            "the upstream API did not answer in time", status_code=504, code="upstream_timeout"
        )
    return UpstreamError(
        f"the upstream API is unreachable ({type(exc).__name__})",
        status_code=502,
        code="upstream_unreachable",
    )


class Upstream:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @staticmethod
    def build_client(*, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(600.0, connect=15.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=40),
            follow_redirects=False,
        )

    def _timeout(self, settings: Settings) -> httpx.Timeout:
        return httpx.Timeout(settings.upstream_timeout_seconds, connect=15.0)

    async def post_json(self, settings: Settings, path: str, body: dict[str, Any]) -> Any:
        """POST JSON, return the parsed JSON answer; every failure becomes an UpstreamError."""
        url = upstream_url(settings, path)
        try:
            resp = await self.client.post(
                url, json=body, headers=upstream_headers(settings), timeout=self._timeout(settings)
            )
        except httpx.HTTPError as exc:
            raise map_transport_error(exc) from exc
        return self._parse(resp)

    async def post_multipart(
        self,
        settings: Settings,
        path: str,
        *,
        data: dict[str, str],
        files: list[tuple[str, tuple[str, bytes, str]]],
    ) -> Any:
        url = upstream_url(settings, path)
        try:
            resp = await self.client.post(
                url,
                data=data,
                files=files,
                headers=upstream_headers(settings),
                timeout=self._timeout(settings),
            )
        except httpx.HTTPError as exc:
            raise map_transport_error(exc) from exc
        return self._parse(resp)

    async def get_json(self, settings: Settings, path: str, *, timeout: float = 15.0) -> Any:
        url = upstream_url(settings, path)
        try:
            resp = await self.client.get(url, headers=upstream_headers(settings), timeout=timeout)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc) from exc
        return self._parse(resp)

    @staticmethod
    def _parse(resp: httpx.Response) -> Any:
        if resp.status_code >= 300:
            raise error_from_upstream(resp.status_code, resp.content)
        try:
            return resp.json()
        except ValueError as exc:
            raise UpstreamError(
                "the upstream API answered with something that is not JSON",
                code="bad_upstream_response",
            ) from exc

    @asynccontextmanager
    async def stream(
        self, settings: Settings, path: str, body: dict[str, Any]
    ) -> AsyncIterator[httpx.Response]:
        """Open a streaming POST; non-2xx answers are read and raised as UpstreamError."""
        url = upstream_url(settings, path)
        headers = upstream_headers(settings) | {"Accept": "text/event-stream"}
        request = self.client.build_request(
            "POST", url, json=body, headers=headers, timeout=self._timeout(settings)
        )
        try:
            resp = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc) from exc
        try:
            if resp.status_code >= 300:
                try:
                    content = await resp.aread()
                except httpx.HTTPError as exc:
                    raise map_transport_error(exc) from exc
                raise error_from_upstream(resp.status_code, content)
            yield resp
        finally:
            await resp.aclose()
