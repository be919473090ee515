"""Attribution and ``USER_DAILY_IMAGE_LIMIT`` through PicGate on a real socket, with the
headers Open WebUI forwards when ``ENABLE_FORWARD_USER_INFO_HEADERS=true``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from tests import orm
from tests.conftest import Gateway
from tests.orm import Image
from tests.support.upstream import StubUpstream

OWUI_HEADERS = {
    "X-OpenWebUI-User-Id": "8a1d1f5e-7c55-4e0b-9f3c-2a9b5a0e6d11",
    "X-OpenWebUI-User-Name": quote("张三 Zhang"),
    "X-OpenWebUI-User-Email": "zhang@example.com",
    "X-OpenWebUI-User-Role": "user",
    "X-OpenWebUI-Chat-Id": "4f3c2b1a-0000-4000-8000-00000000c4a7",
    "X-OpenWebUI-Message-Id": "9e8d7c6b-0000-4000-8000-0000000003e5",
}


def _rows(gateway: Gateway) -> list[Image]:
    return list(
        orm.read(
            gateway.services.db, lambda s: list(s.scalars(select(Image).order_by(Image.created_at)))
        )
    )


def _post(gateway: Gateway, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        gateway.url + path, json=body, headers={**gateway.headers, **headers}, timeout=30
    )


def test_generation_with_openwebui_headers_records_who_and_where(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    reply = _post(
        gateway,
        "/v1/images/generations",
        {"model": "picgate", "prompt": "a fox", "n": 2, "user": "ignored-body-user"},
        **OWUI_HEADERS,
    )
    assert reply.status_code == 200, reply.text
    rows = _rows(gateway)
    assert len(rows) == 2
    for row in rows:
        assert row.user_id == OWUI_HEADERS["X-OpenWebUI-User-Id"]
        assert row.user_name == "张三 Zhang"
        assert row.chat_id == OWUI_HEADERS["X-OpenWebUI-Chat-Id"]
        assert row.message_id == OWUI_HEADERS["X-OpenWebUI-Message-Id"]
        assert row.model == "picgate"
        assert row.key_name == "env"


@pytest.mark.parametrize("stream", [False, True])
def test_chat_with_openwebui_headers_records_the_chat_and_message(
    gateway: Gateway, upstream: StubUpstream, stream: bool
) -> None:
    body = {"model": "picgate", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    reply = _post(gateway, "/v1/chat/completions", body, **OWUI_HEADERS)
    assert reply.status_code == 200, reply.text
    rows = _rows(gateway)
    assert rows, "the stub's chat answer carries an image"
    assert {(r.chat_id, r.message_id, r.user_id) for r in rows} == {
        (
            OWUI_HEADERS["X-OpenWebUI-Chat-Id"],
            OWUI_HEADERS["X-OpenWebUI-Message-Id"],
            OWUI_HEADERS["X-OpenWebUI-User-Id"],
        )
    }


def test_generation_without_headers_takes_the_body_user(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    reply = _post(gateway, "/v1/images/generations", {"prompt": "x", "user": "client-7"})
    assert reply.status_code == 200, reply.text
    (row,) = _rows(gateway)
    assert (row.user_id, row.chat_id, row.model, row.key_name) == ("client-7", None, None, "env")


def test_hostile_header_values_are_cleaned_and_capped(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    hostile = {
        "X-OpenWebUI-User-Id": "u" * 1000,
        "X-OpenWebUI-User-Name": quote("<b>evil</b>\x00\x1b[31m\u202e") + "%ZZ",
        "X-OpenWebUI-Chat-Id": "a\tb",
    }
    reply = _post(gateway, "/v1/images/generations", {"prompt": "x"}, **hostile)
    assert reply.status_code == 200, reply.text
    (row,) = _rows(gateway)
    assert row.user_id == "u" * 128
    assert row.user_name == "<b>evil</b>[31m%ZZ"  # printable only; the console escapes it
    assert row.chat_id == "ab"


def test_daily_limit_per_forwarded_user_is_a_429_saying_when_it_resets(
    start_gateway: Any, upstream: StubUpstream
) -> None:
    gateway = start_gateway(user_daily_image_limit=2)
    body = {"prompt": "x", "n": 1}
    for _ in range(2):
        assert _post(gateway, "/v1/images/generations", body, **OWUI_HEADERS).status_code == 200
    refused = _post(gateway, "/v1/images/generations", body, **OWUI_HEADERS)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert set(error) == {"message", "type", "param", "code"}
    assert "00:00 UTC" in error["message"] and "2 of 2" in error["message"]
    assert int(refused.headers["retry-after"]) > 0
    assert len(_rows(gateway)) == 2
    # another user of the same Open WebUI is not held back
    other = {**OWUI_HEADERS, "X-OpenWebUI-User-Id": "someone-else"}
    assert _post(gateway, "/v1/images/generations", body, **other).status_code == 200
    # reading stays open
    models = httpx.get(gateway.url + "/v1/models", headers={**gateway.headers, **OWUI_HEADERS})
    assert models.status_code == 200


def test_daily_limit_without_forwarded_user_counts_the_key(
    start_gateway: Any, upstream: StubUpstream
) -> None:
    gateway = start_gateway(user_daily_image_limit=1)
    assert _post(gateway, "/v1/images/generations", {"prompt": "x"}).status_code == 200
    refused = _post(gateway, "/v1/images/generations", {"prompt": "x", "user": "other"})
    assert refused.status_code == 429
    assert "gateway key" in refused.json()["error"]["message"]
    chat = _post(
        gateway,
        "/v1/chat/completions",
        {"model": "picgate", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 429


def test_daily_limit_zero_is_no_limit(gateway: Gateway, upstream: StubUpstream) -> None:
    for _ in range(3):
        reply = _post(gateway, "/v1/images/generations", {"prompt": "x"}, **OWUI_HEADERS)
        assert reply.status_code == 200
