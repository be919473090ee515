"""Hostile images through the real endpoints and the store.

Scripts (SVG, HTML behind a PNG head) never become a stored file; a structurally valid PNG that
carries HTML in a text chunk may be stored, and is then only ever served as ``image/png`` with
``nosniff``. Decompression bombs are stored as the raw bytes they are, but previews refuse them
before decoding, in bounded memory. Empty, tiny and oversized bodies get 4xx answers, and a data
URL's label never decides the stored type.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests import orm
from tests.conftest import Gateway
from tests.orm import Image
from tests.robustness import payloads
from tests.support.images import make_image
from tests.support.upstream import StubUpstream


def image_rows(gateway: Gateway) -> int:
    return orm.write(
        gateway.services.db, lambda s: s.scalar(sql_select(func.count()).select_from(Image)) or 0
    )


def upstream_answers(upstream: StubUpstream, path: str, item: dict[str, Any]) -> None:
    async def handler(request: Request) -> Response:
        return JSONResponse({"created": 1, "data": [item]})

    upstream.handlers[path] = handler


def generate(gateway: Gateway, **body: Any) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"prompt": "p", **body},
        timeout=30,
    )


def edit_upload(gateway: Gateway, data: bytes, mime: str = "image/png") -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        data={"prompt": "p"},
        files={"image": ("x.png", data, mime)},
        timeout=30,
    )


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


def assert_served_as_image(response: httpx.Response, mime: str) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"] == mime
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("inline;")


# -- scripts ---------------------------------------------------------------------------------


def test_hostile_svg_from_upstream_refused_nothing_stored(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    svg = base64.b64encode(payloads.SVG_WITH_SCRIPT).decode()
    upstream_answers(upstream, "/v1/images/generations", {"b64_json": svg})
    error = assert_openai_error(generate(gateway), 502)
    assert error["code"] == "bad_upstream_response"
    upstream_answers(
        upstream, "/v1/images/generations", {"url": f"data:image/svg+xml;base64,{svg}"}
    )
    assert_openai_error(generate(gateway), 502)
    assert image_rows(gateway) == 0
    assert list(gateway.services.cache.scan()) == []


@pytest.mark.parametrize(
    "data", [payloads.SVG_WITH_SCRIPT, payloads.fake_png_html()], ids=["svg", "png-head-html"]
)
def test_hostile_script_edit_inputs_refused_415(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, data: bytes
) -> None:
    gateway = start_gateway()
    assert_openai_error(edit_upload(gateway, data), 415)
    as_json = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        json={"prompt": "p", "image": "data:image/png;base64," + base64.b64encode(data).decode()},
    )
    assert_openai_error(as_json, 415)
    assert not any(r.path == "/v1/images/edits" for r in upstream.requests)


def test_hostile_png_head_html_tail_from_upstream_refused(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    fake = base64.b64encode(payloads.fake_png_html()).decode()
    upstream_answers(upstream, "/v1/images/generations", {"b64_json": fake})
    assert_openai_error(generate(gateway), 502)
    assert image_rows(gateway) == 0


def test_hostile_valid_png_polyglot_served_only_as_png_with_nosniff(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    polyglot = payloads.polyglot_png()
    upstream_answers(
        upstream, "/v1/images/generations", {"b64_json": base64.b64encode(polyglot).decode()}
    )
    answer = generate(gateway)
    assert answer.status_code == 200, answer.text
    url = answer.json()["data"][0]["url"]
    assert url.endswith(".png")
    served = httpx.get(url)
    assert_served_as_image(served, "image/png")
    assert served.content == polyglot
    head = httpx.head(url)
    assert head.headers["content-type"] == "image/png"
    assert head.headers["x-content-type-options"] == "nosniff"
    stem = url.rsplit(".", 1)[0]
    for ext in ("html", "svg", "htm", "js", "jpg"):
        assert_openai_error(httpx.get(f"{stem}.{ext}"), 404)
    # asking for HTML changes nothing: the type comes from the stored bytes
    served = httpx.get(stem, headers={"Accept": "text/html"})
    assert_served_as_image(served, "image/png")


# -- decompression bombs ---------------------------------------------------------------------


@pytest.mark.parametrize("bomb", ["png", "gif"])
def test_hostile_bomb_stored_raw_and_preview_refused(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, bomb: str
) -> None:
    gateway = start_gateway()
    data = payloads.png_bomb() if bomb == "png" else payloads.gif_bomb()
    upstream_answers(
        upstream, "/v1/images/generations", {"b64_json": base64.b64encode(data).decode()}
    )
    answer = generate(gateway)
    assert answer.status_code == 200, answer.text
    url = answer.json()["data"][0]["url"]
    served = httpx.get(url)
    assert_served_as_image(served, f"image/{bomb}")
    assert served.content == data  # served as bytes, never decoded
    preview = httpx.get(url + "?w=384&h=384&format=webp")  # the console's thumbnail
    error = assert_openai_error(preview, 415)
    assert "too large" in error["message"]


PREVIEW_RSS = textwrap.dedent(
    """
    import resource, sys
    from picgate.storage import variants
    from picgate.storage.variants import VariantSpec, render_variant
    from tests.robustness import payloads

    bombs = {"png": payloads.png_bomb, "gif": payloads.gif_bomb, "gif-frame": payloads.gif_frame_bomb}
    data = bombs[sys.argv[1]]()
    if sys.argv[2:] == ["lying-header"]:  # as if the header checks missed it: Pillow's own limit
        variants.decoded_size = lambda data, kind: (1, 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        render_variant(data, VariantSpec(width=384, height=384, format="webp"))
        outcome = "made"
    except Exception as exc:
        outcome = type(exc).__name__ + ":" + str(exc).replace(" ", "_")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(outcome, (after - before) // 1024)
    """
)


@pytest.mark.parametrize(
    ("bomb", "how"),
    [("png", ""), ("gif", ""), ("gif-frame", ""), ("gif-frame", "lying-header")],
)
def test_hostile_bomb_preview_refused_in_bounded_memory(bomb: str, how: str) -> None:
    """Peak RSS of a fresh process (warnings as in production: not errors): refusing a 400 M /
    4.3 G pixel bomb, or a 1×1 GIF with a 5700² frame, costs a few MB at most. With the header
    checks bypassed, Pillow's limit is a hard DecompressionBombError, not a warning."""
    result = subprocess.run(
        [sys.executable, "-c", PREVIEW_RSS, bomb, how],
        capture_output=True,
        text=True,
        check=True,
    )
    outcome, grown_mb = result.stdout.split()
    assert outcome.startswith("UnsupportedMediaType:This_image_is_too_large_to_resize")
    assert int(grown_mb) < 32, f"peak RSS grew by {grown_mb} MB"


# -- empty, tiny and huge --------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x89"], ids=["zero-byte", "one-byte"])
def test_hostile_empty_and_one_byte_images_refused(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, data: bytes
) -> None:
    gateway = start_gateway()
    encoded = base64.b64encode(data).decode()
    upstream_answers(upstream, "/v1/images/generations", {"b64_json": encoded})
    assert_openai_error(generate(gateway), 502)
    assert_openai_error(edit_upload(gateway, data), 415)
    as_json = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        json={"prompt": "p", "image": f"data:image/png;base64,{encoded}"},
    )
    assert as_json.status_code in (400, 415)
    assert_openai_error(as_json, as_json.status_code)
    assert image_rows(gateway) == 0


def post_raw(port: int, head: bytes, chunks: Any) -> bytes:
    """Send a request over a plain socket and return the answer, even if the server stops
    reading the body early (it answers and closes while we are still sending)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except OSError:
                break
        answer = b""
        while True:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            answer += part
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
        return answer


def test_hostile_60mb_declared_body_refused_413_before_reading(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    size = 60 * 2**20
    head = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {gateway.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    block = b"A" * 2**20
    tracemalloc.start()
    try:
        answer = post_raw(gateway.server.port, head, (block for _ in range(60)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "payload_too_large"
    assert peak < 8 * 2**20, f"traced peak {peak / 2**20:.1f} MB"


def test_hostile_60mb_chunked_body_refused_413_within_limit(
    start_gateway: Callable[..., Gateway],
) -> None:
    """No Content-Length: the cap applies while reading, so memory follows the cap (1 MB here),
    not the 60 MB the client would send."""
    gateway = start_gateway(max_request_body_mb=1)
    head = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {gateway.key}\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    block = b"%x\r\n" % (2**18) + b"A" * 2**18 + b"\r\n"
    tracemalloc.start()
    try:
        answer = post_raw(gateway.server.port, head, (block for _ in range(240)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"
    assert peak < 12 * 2**20, f"traced peak {peak / 2**20:.1f} MB"


# -- data URLs lying about their type --------------------------------------------------------


def test_hostile_lying_data_url_from_upstream_stored_with_real_type(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    webp = make_image("WEBP", 3_000, seed=5)
    lie = "data:image/gif;base64," + base64.b64encode(webp).decode()
    upstream_answers(upstream, "/v1/images/generations", {"url": lie})
    answer = generate(gateway)
    assert answer.status_code == 200, answer.text
    url = answer.json()["data"][0]["url"]
    assert url.endswith(".webp")
    served = httpx.get(url)
    assert_served_as_image(served, "image/webp")
    assert served.content == webp


def test_hostile_lying_data_url_edit_input_forwarded_with_real_type(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    jpeg = make_image("JPEG", 3_000, seed=6)
    lie = "data:image/png;base64," + base64.b64encode(jpeg).decode()
    answer = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        json={"prompt": "p", "image": lie},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    name, data, mime = upstream.last("/v1/images/edits").form["image"][0]
    assert (name.rsplit(".", 1)[1], mime, data) == ("jpg", "image/jpeg", jpeg)


def test_hostile_chat_images_stored_with_real_type_svg_never_stored(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    jpeg = make_image("JPEG", 3_000, seed=7)
    lie = "data:image/png;base64," + base64.b64encode(jpeg).decode()
    svg = "data:image/svg+xml;base64," + base64.b64encode(payloads.SVG_WITH_SCRIPT).decode()
    content = f"a ![x]({lie}) b ![y]({svg}) c"

    async def chat(request: Request) -> Response:
        return JSONResponse(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    upstream.handlers["/v1/chat/completions"] = chat
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=gateway.headers,
        json={"model": "picgate", "messages": [{"role": "user", "content": "draw"}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    text = answer.json()["choices"][0]["message"]["content"]
    assert "image/png;base64" not in text
    url = text.split("![x](", 1)[1].split(")", 1)[0]
    assert url.endswith(".jpg")
    assert_served_as_image(httpx.get(url), "image/jpeg")
    assert image_rows(gateway) == 1  # the SVG was not stored
