"""Hostile request bodies on the three POST routes: always a 4xx in OpenAI's shape, never a 500,
and nothing that cannot be encoded reaches the upstream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway
from tests.support.upstream import StubUpstream

CHAT = "/v1/chat/completions"
GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
ROUTES = (CHAT, GENERATIONS, EDITS)
DATA_URL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def valid_body(route: str) -> dict[str, Any]:
    if route == CHAT:
        return {"model": "picgate", "messages": [{"role": "user", "content": "hi"}]}
    if route == GENERATIONS:
        return {"prompt": "a fox"}
    return {"prompt": "a fox", "image": DATA_URL}


def post_raw(gateway: Gateway, route: str, raw: bytes) -> httpx.Response:
    headers = {**gateway.headers, "Content-Type": "application/json"}
    return httpx.post(gateway.url + route, content=raw, headers=headers, timeout=30)


def assert_openai_4xx(resp: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert resp.status_code in (statuses or (400,)), (resp.status_code, resp.text[:300])
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    error: dict[str, Any] = body["error"]
    return error


def with_field(route: str, raw_value: str) -> bytes:
    """The route's valid body with one more field whose JSON text is ``raw_value``."""
    text = json.dumps(valid_body(route))
    return (text[:-1] + f', "extra": {raw_value}}}').encode()


@pytest.mark.parametrize("route", ROUTES)
def test_bad_input_deep_nesting_is_400(
    gateway: Gateway, upstream: StubUpstream, route: str
) -> None:
    depth = 100_000
    resp = post_raw(gateway, route, with_field(route, "[" * depth + "]" * depth))
    assert assert_openai_4xx(resp)["code"] == "invalid_json"
    assert not upstream.requests


@pytest.mark.parametrize("route", ROUTES)
def test_bad_input_nesting_under_parser_limit_but_deep_is_400(
    gateway: Gateway, upstream: StubUpstream, route: str
) -> None:
    # json parses this, but walking or re-encoding it would recurse 900 frames deep
    depth = 900
    resp = post_raw(gateway, route, with_field(route, "[" * depth + "]" * depth))
    error = assert_openai_4xx(resp)
    assert error["code"] == "invalid_json"
    assert "nested" in error["message"]
    assert not upstream.requests


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "raw_value",
    [
        '"\\ud800"',  # escaped lone surrogate
        '"x\\udfff y"',  # a low one, inside text
        '{"\\ud800": 1}',  # in a key
    ],
)
def test_bad_input_lone_surrogate_is_400(
    gateway: Gateway, upstream: StubUpstream, route: str, raw_value: str
) -> None:
    resp = post_raw(gateway, route, with_field(route, raw_value))
    error = assert_openai_4xx(resp)
    assert error["code"] == "invalid_json"
    assert "surrogate" in error["message"]
    assert not upstream.requests


@pytest.mark.parametrize("route", ROUTES)
def test_bad_input_lone_surrogate_in_prompt_or_message_is_400(
    gateway: Gateway, upstream: StubUpstream, route: str
) -> None:
    body = valid_body(route)
    if route == CHAT:
        body["messages"][0]["content"] = "hi \ud83d there"
    else:
        body["prompt"] = "a fox \udc00"
    raw = json.dumps(body).encode()  # ensure_ascii keeps it as an escape
    assert_openai_4xx(post_raw(gateway, route, raw))
    assert not upstream.requests


def test_bad_input_raw_utf8_encoded_surrogate_is_400(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    # ED A0 80 is U+D800 written as UTF-8 bytes (invalid UTF-8 that json's decoder lets through)
    raw = b'{"prompt": "a fox \xed\xa0\x80"}'
    assert_openai_4xx(post_raw(gateway, GENERATIONS, raw))
    assert not upstream.requests


def test_bad_input_surrogate_pair_is_fine(gateway: Gateway, upstream: StubUpstream) -> None:
    body = {"model": "picgate", "messages": [{"role": "user", "content": "a fox \U0001f98a"}]}
    resp = post_raw(gateway, CHAT, json.dumps(body).encode())  # sent as \ud83e\udd8a
    assert resp.status_code == 200, resp.text
    assert upstream.last(CHAT).json["messages"][0]["content"] == "a fox \U0001f98a"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_bad_input_nan_and_infinity_literals_are_400(
    gateway: Gateway, upstream: StubUpstream, route: str, literal: str
) -> None:
    error = assert_openai_4xx(post_raw(gateway, route, with_field(route, literal)))
    assert error["code"] == "invalid_json"
    assert literal in error["message"]
    assert not upstream.requests


@pytest.mark.parametrize("route", ROUTES)
def test_bad_input_number_too_large_for_a_float_is_400(
    gateway: Gateway, upstream: StubUpstream, route: str
) -> None:
    # 1e999 parses as inf, which cannot be sent on as JSON
    error = assert_openai_4xx(post_raw(gateway, route, with_field(route, "1e999")))
    assert error["code"] == "invalid_json"
    assert not upstream.requests


BAD_HOSTS = [
    "http://xn--a.com/x.png",  # punycode that does not decode
    "http://a..b/x.png",  # an empty label
    "http://\u2603..com/x.png",  # non-ASCII with an empty label (IDNA encoding fails)
    "http://a\u3002\u3002b/x.png",  # ideographic full stops: an empty label after mapping
    "http://" + "\u00e9" * 70 + ".com/x.png",  # a label too long once encoded
    "http://\u00df\u200d.com/x.png",  # a joiner IDNA 2008 refuses (idna.IDNAError)
]


@pytest.mark.parametrize("url", BAD_HOSTS)
def test_bad_input_invalid_idna_host_in_chat_image_is_400(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, url: str
) -> None:
    gateway = start_gateway(allow_external_image_fetch=True)
    content = [{"type": "image_url", "image_url": {"url": url}}]
    body = {"model": "picgate", "messages": [{"role": "user", "content": content}]}
    resp = post_raw(gateway, CHAT, json.dumps(body).encode())
    error = assert_openai_4xx(resp)
    assert error["param"] == "messages[0].content[0].image_url.url"
    assert not upstream.requests


@pytest.mark.parametrize("url", BAD_HOSTS)
def test_bad_input_invalid_idna_host_in_edit_image_is_400(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, url: str
) -> None:
    gateway = start_gateway(allow_external_image_fetch=True)
    resp = post_raw(gateway, EDITS, json.dumps({"prompt": "p", "image": url}).encode())
    assert_openai_4xx(resp)
    assert not upstream.requests


@pytest.mark.parametrize("url", BAD_HOSTS)
def test_bad_input_invalid_idna_host_passes_through_chat_when_fetch_off(
    gateway: Gateway, upstream: StubUpstream, url: str
) -> None:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    body = {"model": "picgate", "messages": [{"role": "user", "content": content}]}
    resp = post_raw(gateway, CHAT, json.dumps(body).encode())
    assert resp.status_code == 200, resp.text
    assert upstream.last(CHAT).json["messages"][0]["content"][0]["image_url"]["url"] == url


def test_bad_input_deep_but_legitimate_schema_is_forwarded(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    """A JSON schema 40 levels deep in ``response_format`` still reaches the upstream whole."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(19):  # two levels per step
        schema = {"type": "object", "properties": {"x": schema}}
    body = {
        "model": "picgate",
        "messages": [{"role": "user", "content": "draw a fox"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    resp = post_raw(gateway, CHAT, json.dumps(body).encode())
    assert resp.status_code == 200, resp.text
    assert upstream.last(CHAT).json["response_format"] == body["response_format"]
