"""The upstream key never reaches a client, however an upstream echoes it: in any field of its
error (``type``, ``code``, nested), URL-encoded or base64-encoded, in a successful answer, in
the console's upstream test; nor a rotated-away key; nor a traceback in Python's log. Real
HTTP on loopback (the second red team's findings)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from contextlib import closing
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from picgate.log_redaction import SecretFilter, installed
from picgate.redaction import Redactor
from tests.conftest import GATEWAY_KEY, Gateway
from tests.support.admin import signed_in
from tests.support.upstream import StubUpstream

CHAT = "/v1/chat/completions"
KEY = "AIzaSy/upstream+9f8e7d6c5b4a"  # '/' and '+' so that every encoding differs


def echoes(key: str) -> list[str]:
    """The forms a relay was seen to echo a key in."""
    return [
        key,
        quote(key, safe=""),
        quote_plus(key),
        quote(key, safe="").lower(),
        base64.b64encode(key.encode()).decode(),
        base64.b64encode(f"user:{key}".encode()).decode(),  # Basic auth, key at offset 5
        base64.urlsafe_b64encode(f"u:{key}".encode()).decode(),
        key.encode().hex(),
    ]


def leaked(text: str, key: str = KEY) -> list[str]:
    """The echo forms of ``key`` whose middle (made of the key's bytes alone, whatever
    surrounds it) is found in ``text``."""
    return [form for form in echoes(key) if form.rstrip("=")[8:-4] in text]


def chat(gateway: Gateway, *, stream: bool = False) -> httpx.Response:
    body = {"model": "picgate", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(gateway.url + CHAT, json=body, headers=gateway.headers, timeout=30)


def every_field_echo(request: Request) -> Any:
    """A 401 quoting the key in every field of OpenAI's error shape, in every form."""
    forms = echoes(request.headers["authorization"].removeprefix("Bearer "))
    error = {
        "message": f"bad key {forms[0]}",
        "type": f"invalid_key:{forms[1]}",
        "code": f"key_{forms[4]}",
        "param": forms[2],
        "metadata": {"raw": {"headers": [forms[5], {"x": forms[6]}], "hex": forms[7]}},
        "provider": {"echo": forms[3]},
    }
    return _async(JSONResponse({"error": error}, status_code=401))


async def _async(response: Response) -> Response:
    return response


def test_secret_echo_in_every_error_field_and_form_masked(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_api_key=KEY)
    upstream.handlers[CHAT] = every_field_echo
    upstream.handlers["/v1/images/generations"] = every_field_echo
    plain = chat(gateway)
    streamed = chat(gateway, stream=True)
    images = httpx.post(
        gateway.url + "/v1/images/generations",
        json={"prompt": "p"},
        headers=gateway.headers,
        timeout=30,
    )
    assert plain.status_code == images.status_code == streamed.status_code == 401
    assert plain.json()["error"]["type"] == "invalid_key:***"
    assert plain.json()["error"]["code"].startswith("key_***")  # a partial last char stays
    for answer in (plain, streamed, images):
        assert leaked(answer.text) == []


def test_secret_echo_in_successful_chat_answer_masked(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_api_key=KEY)

    async def echo(request: Request) -> Response:
        sent = request.headers["authorization"]
        message = {"role": "assistant", "content": f"you sent {sent} / {quote(sent)}"}
        answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "m"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse({**answer, "choices": [choice]})

    upstream.handlers[CHAT] = echo
    plain = chat(gateway)
    streamed = chat(gateway, stream=True)  # the upstream answers JSON to a stream: converted
    assert plain.status_code == streamed.status_code == 200
    assert plain.json()["choices"][0]["message"]["content"] == "you sent Bearer *** / Bearer%20***"
    assert leaked(plain.text) == [] and leaked(streamed.text) == []


def test_secret_echo_in_console_upstream_test_masked(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_api_key=KEY)

    async def refuse(request: Request) -> Response:
        sent = request.headers["authorization"].removeprefix("Bearer ")
        return JSONResponse({"error": {"message": f"Incorrect API key provided: {sent}"}}, 401)

    upstream.handlers["/v1/models"] = refuse
    client, token = signed_in(gateway.url)
    with closing(client):
        tested = client.post("/admin/api/settings/test-upstream", headers={"X-CSRF-Token": token})
    assert tested.json()["detail"] == "Incorrect API key provided: ***"
    assert leaked(tested.text) == []


def test_secret_rotated_away_key_still_masked(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_api_key=None)
    client, token = signed_in(gateway.url)
    with closing(client):
        for key in (KEY, "sk-the-new-upstream-key-0000"):
            saved = client.put(
                "/admin/api/settings",
                json={"values": {"upstream_api_key": key}},
                headers={"X-CSRF-Token": token},
            )
            assert saved.is_success, saved.text

    async def old_key(request: Request) -> Response:  # a relay still quoting the old key
        return JSONResponse({"error": {"message": f"{KEY} was revoked"}}, status_code=401)

    upstream.handlers[CHAT] = old_key
    answer = chat(gateway)
    assert answer.json()["error"]["message"] == "*** was revoked"


def test_secret_error_nested_900_levels_is_502_not_500(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    nested = "[" * 900 + "]" * 900
    body = '{"error": {"message": "deep", "metadata": ' + nested + "}}"

    async def deep(request: Request) -> Response:
        return Response(body, status_code=502, media_type="application/json")

    upstream.handlers[CHAT] = deep
    answer = chat(gateway)
    assert answer.status_code == 502
    assert answer.json()["error"]["message"] == "deep"


# -- Python logging -----------------------------------------------------------------------------


def test_secret_in_traceback_and_log_arguments_masked_by_filter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redactor = Redactor([KEY, GATEWAY_KEY])
    log = logging.getLogger("picgate")
    before = list(log.filters)  # a Lambda handler built by an earlier test keeps its own
    with caplog.at_level(logging.INFO, logger="picgate"), installed(lambda: redactor):
        try:
            raise RuntimeError(f"GET https://up.example/v1?key={quote(KEY, safe='')} failed")
        except RuntimeError:
            log.exception("upstream call with %s failed", KEY)
        log.info("header %s", json.dumps({"authorization": f"Bearer {GATEWAY_KEY}"}))
    rendered = caplog.text
    assert "RuntimeError: GET https://up.example/v1?key=*** failed" in rendered
    assert "upstream call with *** failed" in rendered
    assert leaked(rendered) == [] and GATEWAY_KEY not in rendered
    assert log.filters == before  # taken off again on exit


def test_secret_filter_keeps_access_log_arguments_for_uvicorns_formatter() -> None:
    from uvicorn.logging import AccessFormatter

    redactor = Redactor([KEY])
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/models?key={KEY}", "1.1", 200),
        None,
    )
    SecretFilter(lambda: redactor).filter(record)
    # uvicorn unpacks the five arguments: they must stay a tuple, the status a number
    line = AccessFormatter("%(client_addr)s - %(request_line)s %(status_code)s").format(record)
    assert line == "127.0.0.1:5000 - GET /v1/models?key=*** HTTP/1.1 200 OK"
    assert KEY not in line
