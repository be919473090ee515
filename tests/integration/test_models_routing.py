"""MODELS_FILE over real sockets: two stub upstreams on loopback, PicGate routing between them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.conftest import UPSTREAM_KEY, Gateway
from tests.support.models_file import KEY_A, KEY_B, models_file, second_upstream_server, upstream_b
from tests.support.upstream import StubUpstream

__all__ = ["models_file", "second_upstream_server", "upstream_b"]  # fixtures used here


def _auth_seen(stub: StubUpstream) -> set[str]:
    return {r.headers.get("authorization", "") for r in stub.requests}


@pytest.fixture
def routed_gateway(start_gateway: Callable[..., Gateway], models_file: Path) -> Gateway:
    return start_gateway(models_file=models_file)


def test_models_list_with_models_file_lists_every_model(routed_gateway: Gateway) -> None:
    r = httpx.get(routed_gateway.url + "/v1/models", headers=routed_gateway.headers)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["painter", "flux", "talker"]


def test_images_generation_routes_by_model_each_key_only_to_its_host(
    routed_gateway: Gateway, upstream: StubUpstream, upstream_b: StubUpstream
) -> None:
    url = routed_gateway.url + "/v1/images/generations"
    a = httpx.post(url, headers=routed_gateway.headers, json={"model": "painter", "prompt": "cat"})
    b = httpx.post(url, headers=routed_gateway.headers, json={"model": "flux", "prompt": "dog"})
    assert a.status_code == 200, a.text
    assert b.status_code == 200, b.text
    assert a.json()["data"][0]["url"].startswith(routed_gateway.url + "/images/")
    sent_a = upstream.last("/v1/images/generations").json
    sent_b = upstream_b.last("/v1/images/generations").json
    assert (sent_a["model"], sent_a["prompt"], sent_a["size"]) == ("gpt-image-1", "cat", "256x256")
    assert (sent_b["model"], sent_b["prompt"]) == ("flux-dev", "dog")
    assert "size" not in sent_b
    assert _auth_seen(upstream) == {f"Bearer {KEY_A}"}
    assert _auth_seen(upstream_b) == {f"Bearer {KEY_B}"}


def test_images_generation_client_options_win_over_model_params(
    routed_gateway: Gateway, upstream: StubUpstream
) -> None:
    r = httpx.post(
        routed_gateway.url + "/v1/images/generations",
        headers=routed_gateway.headers,
        json={"model": "painter", "prompt": "cat", "size": "1024x1024"},
    )
    assert r.status_code == 200, r.text
    sent = upstream.last("/v1/images/generations").json
    assert (sent["size"], sent["quality"]) == ("1024x1024", "low")


def test_images_edit_multipart_routes_to_the_models_upstream(
    routed_gateway: Gateway, upstream: StubUpstream, upstream_b: StubUpstream
) -> None:
    r = httpx.post(
        routed_gateway.url + "/v1/images/edits",
        headers=routed_gateway.headers,
        data={"model": "flux", "prompt": "blue"},
        files={"image": ("in.png", upstream.image, "image/png")},
    )
    assert r.status_code == 200, r.text
    sent = upstream_b.last("/v1/images/edits")
    assert sent.form["model"] == ["flux-dev"]
    assert sent.form["image"][0][1] == upstream.image
    assert upstream.requests == []
    assert _auth_seen(upstream_b) == {f"Bearer {KEY_B}"}


def test_chat_model_routes_with_params_and_upstream_model(
    routed_gateway: Gateway, upstream: StubUpstream, upstream_b: StubUpstream
) -> None:
    r = httpx.post(
        routed_gateway.url + "/v1/chat/completions",
        headers=routed_gateway.headers,
        json={"model": "talker", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text
    sent = upstream_b.last("/v1/chat/completions").json
    assert (sent["model"], sent["temperature"]) == ("gemini-image", 0.5)
    assert upstream.requests == []
    assert _auth_seen(upstream_b) == {f"Bearer {KEY_B}"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/images/generations", {"model": "dall-e-9", "prompt": "x"}),
        (
            "/v1/chat/completions",
            {"model": "dall-e-9", "messages": [{"role": "user", "content": "x"}]},
        ),
        ("/v1/images/edits", {"model": "dall-e-9", "prompt": "x", "image": "aGVsbG8="}),
    ],
)
def test_unknown_model_with_models_file_is_404_model_not_found(
    routed_gateway: Gateway,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
    path: str,
    body: dict[str, Any],
) -> None:
    r = httpx.post(routed_gateway.url + path, headers=routed_gateway.headers, json=body)
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "dall-e-9" in error["message"]
    assert upstream.requests == [] and upstream_b.requests == []


def test_request_without_model_goes_to_the_first_model(
    routed_gateway: Gateway, upstream: StubUpstream
) -> None:
    r = httpx.post(
        routed_gateway.url + "/v1/images/generations",
        headers=routed_gateway.headers,
        json={"prompt": "cat"},
    )
    assert r.status_code == 200, r.text
    assert upstream.last("/v1/images/generations").json["model"] == "gpt-image-1"


def test_upstream_retries_from_models_file_ask_again_after_503(
    routed_gateway: Gateway, upstream_b: StubUpstream
) -> None:
    calls: list[int] = []
    default = upstream_b.handlers["/v1/images/generations"]

    async def flaky(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            return JSONResponse({"error": {"message": "busy"}}, status_code=503)
        return await default(request)

    upstream_b.handlers["/v1/images/generations"] = flaky
    r = httpx.post(
        routed_gateway.url + "/v1/images/generations",
        headers=routed_gateway.headers,
        json={"model": "flux", "prompt": "dog"},
    )
    assert r.status_code == 200, r.text
    assert len(calls) == 2


def test_upstream_without_retries_keeps_the_503(
    routed_gateway: Gateway, upstream: StubUpstream
) -> None:
    async def busy(request: Request) -> Response:
        return JSONResponse({"error": {"message": "busy"}}, status_code=503)

    upstream.handlers["/v1/images/generations"] = busy
    r = httpx.post(
        routed_gateway.url + "/v1/images/generations",
        headers=routed_gateway.headers,
        json={"model": "painter", "prompt": "cat"},
    )
    assert r.status_code == 503
    assert len(upstream.requests) == 1


def test_upstream_key_echoed_in_an_error_is_redacted(
    routed_gateway: Gateway, upstream: StubUpstream
) -> None:
    async def echo(request: Request) -> Response:
        return JSONResponse(
            {"error": {"message": f"Incorrect API key provided: {KEY_A}"}}, status_code=401
        )

    upstream.handlers["/v1/images/generations"] = echo
    r = httpx.post(
        routed_gateway.url + "/v1/images/generations",
        headers=routed_gateway.headers,
        json={"model": "painter", "prompt": "cat"},
    )
    assert r.status_code == 401
    assert KEY_A not in r.text
    assert "***" in r.json()["error"]["message"]


def test_without_models_file_the_single_upstream_takes_every_model(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    models = httpx.get(gateway.url + "/v1/models", headers=gateway.headers).json()
    assert [m["id"] for m in models["data"]] == ["picgate"]
    r = httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"model": "anything-at-all", "prompt": "cat"},
    )
    assert r.status_code == 200, r.text
    assert upstream.last("/v1/images/generations").json["model"] == "gpt-image-1"
    assert _auth_seen(upstream) == {f"Bearer {UPSTREAM_KEY}"}
