"""Malformed JSON and hostile text: a 400 in OpenAI's shape, never a 500 (#13.8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway
from tests.support.upstream import StubUpstream

ENDPOINTS = ["/v1/chat/completions", "/v1/images/generations", "/v1/images/edits"]

DEEP = b'{"model": "picgate", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
BODIES = {
    "deeply nested": DEEP,
    "deep object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "lone surrogate": b'{"model": "picgate", "prompt": "a \\ud800 fox", "messages": [{"role": "user", "content": "x \\udfff"}]}',
    "NaN": b'{"model": "picgate", "prompt": "fox", "n": NaN, "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
    "Infinity": b'{"model": "picgate", "prompt": "fox", "n": Infinity, "messages": [{"role": "user", "content": "x"}], "temperature": -Infinity}',
}


@pytest.mark.parametrize("name", list(BODIES))
@pytest.mark.parametrize("path", ENDPOINTS)
def test_hostile_json_is_400(gateway: Gateway, path: str, name: str) -> None:
    headers = {**gateway.headers, "Content-Type": "application/json"}
    resp = httpx.post(gateway.url + path, headers=headers, content=BODIES[name], timeout=30)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "url",
    [
        "http://xn--a.com/x.png",  # not valid punycode
        "http://xn--zz-.com/x.png",
        "http://a..b/x.png",  # an empty label
        "http://.a.com/x.png",
        "http://" + "a" * 64 + ".com/x.png",  # a label over 63 characters
        "http://" + "a" * 300 + ".com/x.png",
        "http://\u2100.com/x.png",  # a character IDNA 2008 refuses
        "http://\u00df\u200d.com/x.png",
        "http://[::1/x.png",
    ],
)
def test_invalid_idna_host_in_image_url_is_400(
    start_gateway: Callable[..., Gateway], url: str
) -> None:
    gateway = start_gateway(allow_external_image_fetch=True)
    chat = {
        "model": "picgate",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    resp = httpx.post(
        gateway.url + "/v1/chat/completions", headers=gateway.headers, json=chat, timeout=30
    )
    edit = {"model": "picgate", "prompt": "x", "image": [{"image_url": url}]}
    resp2 = httpx.post(
        gateway.url + "/v1/images/edits", headers=gateway.headers, json=edit, timeout=30
    )
    for answer in (resp, resp2):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] in ("invalid_url", "unresolvable_url")


def test_nesting_within_the_limit_is_forwarded(gateway: Gateway, upstream: StubUpstream) -> None:
    """A deep but legitimate body (a JSON schema 40 levels deep) still reaches the upstream."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(19):  # two levels per step
        schema = {"type": "object", "properties": {"x": schema}}
    body = {
        "model": "picgate",
        "messages": [{"role": "user", "content": "draw a fox"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    resp = httpx.post(gateway.url + "/v1/chat/completions", headers=gateway.headers, json=body)
    assert resp.status_code == 200, resp.text
    sent = upstream.last("/v1/chat/completions").json
    assert sent["response_format"] == body["response_format"]
