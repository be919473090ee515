"""The Images API through PicGate on a real socket, with the official openai SDK as the client."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import openai
import pytest
from openai.types import ImagesResponse

from picgate.library.records import ImageOrigin
from tests.conftest import UPSTREAM_KEY, Gateway
from tests.support.fixtures import load_json
from tests.support.images import make_image
from tests.support.upstream import StubUpstream


def fetch(gateway: Gateway, url: str) -> httpx.Response:
    assert url.startswith(gateway.url), url
    return httpx.get(url)


def first_url(result: ImagesResponse) -> str:
    assert result.data, result
    url = result.data[0].url
    assert url is not None
    return url


def test_generations_b64_upstream_url_reply_serves_same_bytes(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI
) -> None:
    upstream.image = make_image("PNG", 2_000_000)
    result = openai_client.images.generate(model="picgate", prompt="a fox in the snow")
    assert len(result.data or []) == 1
    url = first_url(result)
    assert url and url.endswith(".png")
    resp = fetch(gateway, url)
    assert resp.status_code == 200
    assert resp.content == upstream.image
    assert resp.headers["content-type"] == "image/png"
    sent = upstream.last("/v1/images/generations")
    assert sent.json["model"] == "gpt-image-1"
    assert "response_format" not in sent.json  # gpt-image-* rejects it
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.headers["accept"] == "application/json"
    assert result.usage is not None and result.usage.total_tokens == 100
    assert result.output_format == "png"


def test_generations_n3_b64_json_reply_returns_bytes_and_stores(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI
) -> None:
    result = openai_client.images.generate(
        model="picgate", prompt="three cats", n=3, response_format="b64_json"
    )
    assert [base64.b64decode(d.b64_json or "") for d in result.data or []] == [upstream.image] * 3
    rows = gateway.services.db.write(
        lambda s: s.execute(__import__("sqlalchemy").text("select count(*) from images")).scalar(),
    )
    assert rows == 3


def test_generations_dalle_model_asks_upstream_for_b64(
    start_gateway, upstream: StubUpstream
) -> None:
    gw = start_gateway(upstream_model_name="dall-e-3")
    body = load_json("openwebui_images_generations_request.json")
    body = {k: v for k, v in body.items() if not k.startswith("_")}
    body["model"] = "picgate"
    resp = httpx.post(gw.url + "/v1/images/generations", json=body, headers=gw.headers)
    assert resp.status_code == 200, resp.text
    assert upstream.last("/v1/images/generations").json["response_format"] == "b64_json"
    # OpenWebUI asked for b64_json: it gets the bytes back
    assert base64.b64decode(resp.json()["data"][0]["b64_json"]) == upstream.image


def test_generations_upstream_url_answer_fetched_and_stored(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI
) -> None:
    upstream.mode = "url"
    upstream.image = make_image("JPEG", 200_000)
    result = openai_client.images.generate(model="picgate", prompt="fox", n=2)
    assert len(result.data or []) == 2
    for item in result.data or []:
        assert item.url and item.url.endswith(".jpg")
        assert item.revised_prompt == "revised"
        assert fetch(gateway, item.url).content == upstream.image


@pytest.mark.parametrize(
    "fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif")]
)
def test_generations_each_raster_type_gets_real_extension(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI, fmt: str, ext: str
) -> None:
    upstream.image = make_image(fmt, 50_000)
    url = first_url(openai_client.images.generate(model="picgate", prompt="x"))
    assert url and url.endswith("." + ext)
    resp = fetch(gateway, url)
    assert resp.content == upstream.image


def test_edits_multipart_image_array_forwarded_as_image_array(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI
) -> None:
    a, b = make_image("PNG", 10_000, seed=1), make_image("JPEG", 10_000, seed=2)
    result = openai_client.images.edit(
        model="picgate",
        image=[("a.png", io.BytesIO(a), "image/png"), ("b.jpg", io.BytesIO(b), "image/jpeg")],
        prompt="make it blue",
        size="1024x1024",
    )
    url = first_url(result)
    assert url and fetch(gateway, url).content == upstream.image
    sent = upstream.last("/v1/images/edits")
    assert [f[1] for f in sent.form["image[]"]] == [a, b]
    assert sent.form["prompt"] == ["make it blue"]
    assert sent.form["size"] == ["1024x1024"]
    assert sent.form["model"] == ["gpt-image-1"]
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_edits_openwebui_single_image_array_with_b64_json(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    src = make_image("PNG", 5_000, seed=3)
    resp = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        data={"model": "picgate", "prompt": "blue", "response_format": "b64_json"},
        files=[("image[]", ("u.png", src, "image/png"))],
    )
    assert resp.status_code == 200, resp.text
    assert base64.b64decode(resp.json()["data"][0]["b64_json"]) == upstream.image
    assert [f[1] for f in upstream.last("/v1/images/edits").form["image[]"]] == [src]


def test_edits_json_body_with_data_url_forwarded_as_multipart(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    src = make_image("PNG", 5_000, seed=4)
    body = {
        "prompt": "blue",
        "image": "data:image/png;base64," + base64.b64encode(src).decode(),
        "n": 1,
    }
    resp = httpx.post(gateway.url + "/v1/images/edits", headers=gateway.headers, json=body)
    assert resp.status_code == 200, resp.text
    sent = upstream.last("/v1/images/edits")
    assert sent.form["image"][0][1] == src
    assert sent.form["n"] == ["1"]


def test_edits_json_body_with_own_image_url_inlines_stored_bytes(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI
) -> None:
    first = first_url(openai_client.images.generate(model="picgate", prompt="x"))
    upstream.image = make_image("PNG", 3_000, seed=9)
    body = {"prompt": "again", "image": [{"image_url": first}]}
    resp = httpx.post(gateway.url + "/v1/images/edits", headers=gateway.headers, json=body)
    assert resp.status_code == 200, resp.text
    assert upstream.last("/v1/images/edits").form["image"][0][1] == fetch(gateway, first).content


# -- errors ------------------------------------------------------------------------------


def assert_openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    "fixture,status",
    [
        ("openai_error.json", 401),
        ("openai_error_image_moderation.json", 400),
        ("openrouter_error.json", 402),
    ],
)
def test_generations_upstream_error_keeps_status_and_message(
    gateway: Gateway, upstream: StubUpstream, fixture: str, status: int
) -> None:
    from starlette.responses import JSONResponse

    payload = load_json(fixture)

    async def fail(request):  # type: ignore[no-untyped-def]
        return JSONResponse(payload, status_code=status)

    upstream.handlers["/v1/images/generations"] = fail
    resp = httpx.post(
        gateway.url + "/v1/images/generations", headers=gateway.headers, json={"prompt": "x"}
    )
    err = assert_openai_error(resp, status)
    assert err["message"] == payload["error"]["message"]


def test_generations_sdk_sees_moderation_error(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI
) -> None:
    from starlette.responses import JSONResponse

    payload = load_json("openai_error_image_moderation.json")

    async def fail(request):  # type: ignore[no-untyped-def]
        return JSONResponse(payload, status_code=400)

    upstream.handlers["/v1/images/generations"] = fail
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="picgate", prompt="bad")
    assert info.value.code == "moderation_blocked"


def test_generations_upstream_unreachable_is_502(start_gateway) -> None:
    from tests.support.servers import free_port

    gw = start_gateway(upstream_api_base=f"http://127.0.0.1:{free_port()}/v1")
    resp = httpx.post(gw.url + "/v1/images/generations", headers=gw.headers, json={"prompt": "x"})
    assert assert_openai_error(resp, 502)["code"] == "upstream_unreachable"


def test_generations_upstream_timeout_is_504(start_gateway, upstream: StubUpstream) -> None:
    import asyncio

    async def slow(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(5)
        raise AssertionError("should have timed out")

    upstream.handlers["/v1/images/generations"] = slow
    gw = start_gateway(upstream_timeout_seconds=0.3)
    resp = httpx.post(gw.url + "/v1/images/generations", headers=gw.headers, json={"prompt": "x"})
    assert assert_openai_error(resp, 504)["code"] == "upstream_timeout"


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>502 bad gateway</html>",
        b'{"data": "nope"}',
        b'{"data": [{"b64_json": "!!!"}]}',
        b'{"data": [{"b64_json": "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciLz4="}]}',
    ],
)
def test_generations_upstream_200_with_junk_is_502(
    gateway: Gateway, upstream: StubUpstream, answer: bytes
) -> None:
    from starlette.responses import Response

    async def junk(request):  # type: ignore[no-untyped-def]
        return Response(answer, media_type="application/json")

    upstream.handlers["/v1/images/generations"] = junk
    resp = httpx.post(
        gateway.url + "/v1/images/generations", headers=gateway.headers, json={"prompt": "x"}
    )
    assert assert_openai_error(resp, 502)["code"] == "bad_upstream_response"


@pytest.mark.parametrize(
    "body,status",
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b"", 400),
        (json.dumps({"n": 1}).encode(), 400),
        (json.dumps({"prompt": "x", "n": 0}).encode(), 400),
        (json.dumps({"prompt": "x", "response_format": "svg"}).encode(), 400),
    ],
)
def test_generations_bad_request_is_4xx_openai_shaped(
    gateway: Gateway, upstream: StubUpstream, body: bytes, status: int
) -> None:
    resp = httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers | {"content-type": "application/json"},
        content=body,
    )
    assert_openai_error(resp, status)
    assert not any(r.path == "/v1/images/generations" for r in upstream.requests)


def test_body_over_cap_is_413(start_gateway) -> None:
    gw = start_gateway(max_request_body_mb=1)
    resp = httpx.post(
        gw.url + "/v1/images/generations",
        headers=gw.headers | {"content-type": "application/json"},
        content=b'{"prompt": "' + b"x" * (2 * 2**20) + b'"}',
    )
    assert_openai_error(resp, 413)


def test_body_over_cap_chunked_is_413(start_gateway) -> None:
    gw = start_gateway(max_request_body_mb=1)

    def body():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    resp = httpx.post(
        gw.url + "/v1/images/generations",
        headers=gw.headers | {"content-type": "application/json"},
        content=body(),
    )
    assert_openai_error(resp, 413)


@pytest.mark.parametrize("header", [None, "Bearer wrong-key-123", "Basic abc", "Bearer"])
def test_v1_wrong_or_missing_key_is_401(gateway: Gateway, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = httpx.get(gateway.url + "/v1/models", headers=headers)
    assert_openai_error(resp, 401)


def test_v1_no_key_configured_refuses_with_how_to(start_gateway) -> None:
    gw = start_gateway(gateway_api_key=None)
    # first start generated a key; clearing it must close the gateway
    gw.services.config.save({"gateway_api_key": None})
    resp = httpx.get(gw.url + "/v1/models", headers={"Authorization": "Bearer anything"})
    err = assert_openai_error(resp, 401)
    assert "GATEWAY_API_KEY" in err["message"]


def test_first_start_generates_key_that_works(start_gateway, capsys) -> None:
    gw = start_gateway(gateway_api_key=None)
    key = gw.services.generated_key
    assert key and len(key) >= 32
    assert key in capsys.readouterr().out
    resp = httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200


def test_upstream_not_configured_is_503_naming_setting(start_gateway) -> None:
    gw = start_gateway(upstream_api_base=None)
    resp = httpx.post(gw.url + "/v1/images/generations", headers=gw.headers, json={"prompt": "x"})
    assert "UPSTREAM_API_BASE" in assert_openai_error(resp, 503)["message"]


def test_models_lists_gateway_model(gateway: Gateway, openai_client: openai.OpenAI) -> None:
    models = openai_client.models.list()
    assert [m.id for m in models.data] == ["picgate"]


def test_unknown_path_is_openai_shaped_404(gateway: Gateway) -> None:
    assert_openai_error(httpx.get(gateway.url + "/v1/nope", headers=gateway.headers), 404)


def test_health_ok(gateway: Gateway) -> None:
    resp = httpx.get(gateway.url + "/health")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


def test_log_lines_written_without_base64_or_secrets(
    gateway: Gateway, upstream: StubUpstream, openai_client: openai.OpenAI
) -> None:
    from sqlalchemy import select

    from tests import orm
    from tests.orm import LogEntry

    openai_client.images.generate(model="picgate", prompt="画一只可爱的猫")
    gateway.services.events.flush()
    lines = orm.write(
        gateway.services.db,
        lambda s: [e.message for e in s.scalars(select(LogEntry).order_by(LogEntry.id))],
    )
    assert any(line.startswith("📤 发起文生图请求: prompt=画一只可爱的猫") for line in lines)
    assert any(line.startswith("✅ 文生图完成") for line in lines)
    blob = "\n".join(lines)
    assert UPSTREAM_KEY not in blob and "iVBOR" not in blob


def test_upstream_error_logged_with_status(gateway: Gateway, upstream: StubUpstream) -> None:
    from sqlalchemy import select
    from starlette.responses import JSONResponse

    from tests import orm
    from tests.orm import LogEntry

    async def fail(request):  # type: ignore[no-untyped-def]
        return JSONResponse(load_json("openai_error.json"), status_code=401)

    upstream.handlers["/v1/images/generations"] = fail
    httpx.post(
        gateway.url + "/v1/images/generations", headers=gateway.headers, json={"prompt": "x"}
    )
    gateway.services.events.flush()
    rows = orm.write(
        gateway.services.db, lambda s: [(e.level, e.message) for e in s.scalars(select(LogEntry))]
    )
    assert any(level == "ERROR" and m.startswith("❌ 上游返回错误: HTTP 401") for level, m in rows)


# -- an edit without an image file -------------------------------------------------------------


@pytest.mark.parametrize(
    "send",
    [
        {"files": [("prompt", (None, "blue")), ("model", (None, "picgate"))]},  # multipart
        {"data": {"prompt": "blue", "model": "picgate"}},  # url-encoded: cannot carry a file
    ],
    ids=["multipart-no-file", "urlencoded-form"],
)
def test_edits_without_image_file_is_400_naming_image(
    gateway: Gateway, upstream: StubUpstream, send: dict[str, object]
) -> None:
    resp = httpx.post(gateway.url + "/v1/images/edits", headers=gateway.headers, **send)  # type: ignore[arg-type]
    error = assert_openai_error(resp, 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", "image")
    assert not any(r.path == "/v1/images/edits" for r in upstream.requests)


def test_edits_file_that_is_not_an_image_is_415_naming_its_field(gateway: Gateway) -> None:
    resp = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        data={"prompt": "blue"},
        files=[("mask", ("m.png", b"not an image", "image/png"))],
    )
    assert assert_openai_error(resp, 415)["param"] == "mask"


# -- the gateway's own model name with no upstream model -----------------------------------------


def test_generations_gateway_model_without_upstream_model_is_400(
    start_gateway, upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_model_name=None)
    resp = httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"model": "picgate", "prompt": "a fox"},
    )
    error = assert_openai_error(resp, 400)
    assert (error["param"], error["code"]) == ("model", "upstream_model_not_set")
    assert "UPSTREAM_MODEL_NAME" in error["message"]
    assert not upstream.requests


def test_edits_gateway_model_without_upstream_model_is_400(
    start_gateway, upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_model_name=None, gateway_model_name="my-gate")
    resp = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        data={"model": "my-gate", "prompt": "blue"},
        files=[("image", ("a.png", make_image("PNG", 2_000), "image/png"))],
    )
    error = assert_openai_error(resp, 400)
    assert (error["param"], error["code"]) == ("model", "upstream_model_not_set")
    assert "UPSTREAM_MODEL_NAME" in error["message"]
    assert not upstream.requests


def test_edits_json_gateway_model_is_refused_before_any_image_is_read(
    start_gateway, upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(upstream_model_name=None)
    stored = gateway.services.library.save_sync(make_image("PNG", 2_000), origin=ImageOrigin("t"))
    reads: list[str] = []
    original = gateway.services.library.serving.read_bytes

    async def counted(image_id: str) -> bytes:
        reads.append(image_id)
        data: bytes = await original(image_id)
        return data

    monkeypatch.setattr(gateway.services.library.serving, "read_bytes", counted)
    url = f"{gateway.url}/images/{stored.id}.png"
    body = {"model": "picgate", "prompt": "blue", "image": [url] * 3}
    resp = httpx.post(gateway.url + "/v1/images/edits", headers=gateway.headers, json=body)
    assert assert_openai_error(resp, 400)["code"] == "upstream_model_not_set"
    assert reads == []


def test_generations_other_model_without_upstream_model_passes_through(
    start_gateway, upstream: StubUpstream
) -> None:
    gateway = start_gateway(upstream_model_name=None)
    resp = httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"model": "dall-e-3", "prompt": "a fox"},
    )
    assert resp.status_code == 200, resp.text
    assert upstream.last("/v1/images/generations").json["model"] == "dall-e-3"
