"""Large base64 images written while the upstream answer arrives, through PicGate on a socket.

The stub upstream answers over 127.0.0.1; the gateway's ``ImageLibrary.incoming`` is wrapped to
remember the images it started, so a test can tell whether an image took the streamed path (its
URL carries the id of an image written as it arrived) or the fallback (the answer parsed whole).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from picgate.storage.incoming import IncomingImage
from picgate.storage.local import TMP_PREFIX
from tests import orm
from tests.conftest import Gateway
from tests.orm import Image
from tests.support.images import b64, data_url, make_image
from tests.support.upstream import StubUpstream

GENERATIONS = "/v1/images/generations"
BIG = make_image("PNG", 2_500_000, seed=31)
BIG_2 = make_image("PNG", 1_200_000, seed=32)
BIG_3 = make_image("PNG", 1_000_000, seed=33)


def png_of_size(size: int) -> bytes:
    """A valid PNG of exactly ``size`` bytes (a private chunk of zeros fills it up)."""
    png = make_image("PNG", size * 9 // 10, seed=37)
    fill = size - len(png) - 12
    assert fill >= 0
    chunk = b"prVt" + b"\0" * fill
    padding = struct.pack(">I", fill) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return png[:-12] + padding + png[-12:]  # before IEND


def record_incoming(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> list[IncomingImage]:
    """Every IncomingImage the gateway starts, in order (the real ones, only remembered)."""
    made: list[IncomingImage] = []
    real = gateway.services.library.incoming

    def incoming(*, keep_text: bool = False) -> IncomingImage:
        image = real(keep_text=keep_text)
        made.append(image)
        return image

    monkeypatch.setattr(gateway.services.library, "incoming", incoming)
    return made


@pytest.fixture
def started(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> list[IncomingImage]:
    return record_incoming(gateway, monkeypatch)


def answer_with(upstream: StubUpstream, body: bytes) -> None:
    """The upstream answers every generation with exactly ``body`` (raw JSON bytes)."""

    async def handler(request: Request) -> Response:
        return Response(body, media_type="application/json")

    upstream.handlers[GENERATIONS] = handler


def generate(gateway: Gateway, **body: Any) -> httpx.Response:
    return httpx.post(
        gateway.url + GENERATIONS,
        headers=gateway.headers,
        json={"model": "picgate", "prompt": "a fox in the snow", **body},
        timeout=60,
    )


def image_id(url: str) -> str:
    return url.rsplit("/", 1)[-1].split(".", 1)[0]


def row(gateway: Gateway, id_: str) -> Image | None:
    return orm.read(gateway.services.db, lambda s: s.get(Image, id_))


def row_count(gateway: Gateway) -> int:
    count = orm.read(
        gateway.services.db, lambda s: s.scalar(select(func.count()).select_from(Image))
    )
    assert count is not None
    return int(count)


def temp_files(gateway: Gateway) -> list[Path]:
    return sorted(gateway.services.cache.root.rglob(f"{TMP_PREFIX}*"))


def temp_files_after_settling(gateway: Gateway, timeout: float = 5.0) -> list[Path]:
    """The ``.tmp-`` files left once aborted writes had time to finish (a pool thread may
    still be writing an image given up when the reply left; it removes it when done)."""
    deadline = time.monotonic() + timeout
    while (left := temp_files(gateway)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def results(images: list[IncomingImage]) -> list[Any]:
    async def gather() -> list[Any]:
        return [await image.result() for image in images]

    return asyncio.run(gather())


def assert_served(gateway: Gateway, url: str, data: bytes) -> Image:
    assert url.startswith(gateway.url + "/images/") and url.endswith(".png"), url
    resp = httpx.get(url)
    assert resp.status_code == 200
    assert resp.content == data
    stored = row(gateway, image_id(url))
    assert stored is not None
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert resp.headers["etag"] == f'"{stored.sha256}"'
    return stored


def assert_openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


# -- the streamed path ---------------------------------------------------------------------------


def test_streaming_large_b64_url_reply_serves_same_bytes_and_hash(
    gateway: Gateway,
    upstream: StubUpstream,
    openai_client: openai.OpenAI,
    started: list[IncomingImage],
) -> None:
    upstream.image = BIG
    result = openai_client.images.generate(
        model="picgate", prompt="a fox in the snow", response_format="url"
    )
    assert result.data is not None
    [item] = result.data
    assert item.url is not None
    stored = assert_served(gateway, item.url, BIG)
    # the image was written as it arrived: its id is the one the streamed image was given
    assert [image.image_id for image in started] == [stored.id]
    assert stored.source == "generations" and stored.prompt == "a fox in the snow"
    assert temp_files(gateway) == []


def test_streaming_large_b64_json_reply_returns_same_bytes_and_stores(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    upstream.image = BIG
    resp = generate(gateway, response_format="b64_json")
    assert resp.status_code == 200, resp.text
    assert base64.b64decode(resp.json()["data"][0]["b64_json"]) == BIG
    [image] = started
    stored = row(gateway, image.image_id)
    assert stored is not None and stored.sha256 == hashlib.sha256(BIG).hexdigest()
    assert temp_files(gateway) == []


def count_encodings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the images the Images API base64-encodes for a reply."""
    from picgate.gateway import images_api

    sizes: list[int] = []
    real = images_api._b64

    def counted(data: bytes) -> bytes:
        sizes.append(len(data))
        return real(data)

    monkeypatch.setattr(images_api, "_b64", counted)
    return sizes


def test_streaming_b64_json_reply_hands_back_the_upstreams_own_text(
    gateway: Gateway,
    upstream: StubUpstream,
    started: list[IncomingImage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded = count_encodings(monkeypatch)
    text = b64(BIG_2)
    body = {"created": 7, "data": [{"b64_json": text, "revised_prompt": "r"}], "usage": {"n": 1}}
    answer_with(upstream, json.dumps(body).encode())
    resp = generate(gateway, response_format="b64_json")
    assert resp.status_code == 200, resp.text
    # byte for byte what a JSON encoder gives for the same answer
    expected = {
        "created": 7,
        "usage": {"n": 1},
        "data": [{"b64_json": text, "revised_prompt": "r"}],
    }
    assert resp.content == json.dumps(expected, separators=(",", ":")).encode()
    assert resp.headers["content-length"] == str(len(resp.content))
    assert encoded == []  # the upstream's text went back; nothing was encoded again
    [image] = started
    assert row(gateway, image.image_id) is not None


def test_streaming_b64_json_non_canonical_upstream_text_is_reencoded(
    gateway: Gateway, upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = count_encodings(monkeypatch)
    data = BIG_2
    assert len(data) % 3, "the image needs padding for a stray bit to fit"
    text = b64(data)
    # a stray bit after the last byte: the same bytes, spelled in a way clients may refuse
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body_text = text.rstrip("=")
    odd = body_text[:-1] + last[last.index(body_text[-1]) + 1]
    odd += "=" * (len(text) - len(body_text))
    assert base64.b64decode(odd) == data and odd != text
    answer_with(upstream, json.dumps({"created": 1, "data": [{"b64_json": odd}]}).encode())
    resp = generate(gateway, response_format="b64_json")
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["b64_json"] == text
    assert encoded == [len(data)]


def test_streaming_two_large_images_both_streamed_in_order(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    body = {"created": 1, "data": [{"b64_json": b64(BIG_2)}, {"b64_json": b64(BIG_3)}]}
    answer_with(upstream, json.dumps(body).encode())
    resp = generate(gateway, n=2)
    assert resp.status_code == 200, resp.text
    urls = [item["url"] for item in resp.json()["data"]]
    first, second = (assert_served(gateway, url, data) for url, data in zip(urls, [BIG_2, BIG_3]))
    assert [image.image_id for image in started] == [first.id, second.id]
    assert row_count(gateway) == 2
    assert temp_files(gateway) == []


def test_streaming_small_and_large_images_mixed_both_stored(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    small = make_image("PNG", 2_000, seed=34)
    body = {
        "created": 1,
        "data": [
            {"b64_json": b64(small), "revised_prompt": 'a "small" caf\u00e9 \\ fox'},
            {"b64_json": b64(BIG_2)},
        ],
    }
    answer_with(upstream, json.dumps(body, ensure_ascii=False).encode())
    resp = generate(gateway, n=2)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data[0]["revised_prompt"] == 'a "small" caf\u00e9 \\ fox'
    assert_served(gateway, data[0]["url"], small)
    large = assert_served(gateway, data[1]["url"], BIG_2)
    assert [image.image_id for image in started] == [large.id]  # the small one stayed inline
    assert temp_files(gateway) == []


# -- the fallback: the answer parsed whole -----------------------------------------------------


@pytest.mark.parametrize("escaped", ["every slash", "slashes past 1 MB"])
def test_streaming_escaped_slashes_fall_back_and_serve_same_bytes(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage], escaped: str
) -> None:
    text = b64(BIG)
    if escaped == "every slash":  # as PHP's json_encode writes it
        content = text.replace("/", "\\/")
    else:  # the long string is cut out first, then an escape arrives: the reader gives up
        content = text[:1_000_000] + text[1_000_000:].replace("/", "\\/")
    answer_with(upstream, ('{"created":1,"data":[{"b64_json":"' + content + '"}]}').encode())
    resp = generate(gateway, response_format="url")
    assert resp.status_code == 200, resp.text
    stored = assert_served(gateway, resp.json()["data"][0]["url"], BIG)
    assert stored.id not in [image.image_id for image in started]
    if escaped == "slashes past 1 MB":
        assert len(started) == 1
    assert all(r is None for r in results(started))
    assert temp_files_after_settling(gateway) == []


def test_streaming_large_base64_in_extra_field_kept_exactly(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    extra = b64(make_image("PNG", 300_000, seed=35))
    body = {"created": 1, "data": [{"b64_json": b64(BIG_2), "x_thumbnail": extra, "seed": 7}]}
    answer_with(upstream, json.dumps(body).encode())
    resp = generate(gateway)
    assert resp.status_code == 200, resp.text
    [item] = resp.json()["data"]
    assert item["x_thumbnail"] == extra
    assert item["seed"] == 7
    stored = assert_served(gateway, item["url"], BIG_2)
    # both long strings were cut out; one is not a b64_json: the answer was parsed whole
    assert len(started) == 2
    assert stored.id not in [image.image_id for image in started]
    assert row_count(gateway) == 1
    assert temp_files_after_settling(gateway) == []


def test_streaming_large_data_url_in_url_field_stored(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    answer_with(upstream, json.dumps({"created": 1, "data": [{"url": data_url(BIG)}]}).encode())
    resp = generate(gateway)
    assert resp.status_code == 200, resp.text
    stored = assert_served(gateway, resp.json()["data"][0]["url"], BIG)
    assert stored.id not in [image.image_id for image in started]
    assert temp_files_after_settling(gateway) == []


def test_streaming_same_long_text_in_two_items_stored_as_two_images(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    text = b64(BIG_2)
    body = {"created": 1, "data": [{"b64_json": text}, {"b64_json": text}]}
    answer_with(upstream, json.dumps(body).encode())
    resp = generate(gateway, n=2)
    assert resp.status_code == 200, resp.text
    ids = [assert_served(gateway, item["url"], BIG_2).id for item in resp.json()["data"]]
    assert ids == [image.image_id for image in started]
    assert len(set(ids)) == 2 and row_count(gateway) == 2
    assert temp_files(gateway) == []


# -- upstream failures -------------------------------------------------------------------------


TRUNCATED = (
    '{"created":1,"data":[{"b64_json":"' + b64(BIG_2) + '"},{"b64_json":"' + b64(BIG_3) + '"}]}'
).encode()
CUT_AT = len(TRUNCATED) - 300_000  # inside the second image, well past its first 64 KiB


def _short_content_length(request: Request) -> Response:
    return Response(
        TRUNCATED[:CUT_AT],
        media_type="application/json",
        headers={"content-length": str(len(TRUNCATED))},
    )


def _stream_then_fail(request: Request) -> Response:
    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, CUT_AT, 65536):
            yield TRUNCATED[start : min(start + 65536, CUT_AT)]
            await asyncio.sleep(0)
        raise RuntimeError("upstream worker died")

    return StreamingResponse(pieces(), media_type="application/json")


@pytest.mark.parametrize("how", [_short_content_length, _stream_then_fail])
def test_streaming_upstream_body_cut_short_is_502_and_leaves_nothing(
    gateway: Gateway,
    upstream: StubUpstream,
    started: list[IncomingImage],
    how: Callable[[Request], Response],
) -> None:
    async def handler(request: Request) -> Response:
        return how(request)

    upstream.handlers[GENERATIONS] = handler
    resp = generate(gateway, n=2)
    assert assert_openai_error(resp, 502)["code"] == "upstream_interrupted"
    # the first image had arrived whole (and was being written), the second was arriving
    assert len(started) == 2
    assert all(r is None for r in results(started))
    assert row_count(gateway) == 0
    assert temp_files_after_settling(gateway) == []


def test_streaming_long_invalid_base64_is_502_bad_upstream_response(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    answer_with(
        upstream, json.dumps({"created": 1, "data": [{"b64_json": "!!!!" * 50_000}]}).encode()
    )
    resp = generate(gateway)
    assert assert_openai_error(resp, 502)["code"] == "bad_upstream_response"
    assert len(started) == 1 and results(started) == [None]
    assert row_count(gateway) == 0
    assert temp_files_after_settling(gateway) == []


def test_streaming_long_base64_not_an_image_is_502_bad_upstream_response(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage]
) -> None:
    text = base64.b64encode(b"<svg/>" * 40_000).decode()  # valid base64, not a raster image
    answer_with(upstream, json.dumps({"created": 1, "data": [{"b64_json": text}]}).encode())
    resp = generate(gateway)
    assert assert_openai_error(resp, 502)["code"] == "bad_upstream_response"
    assert len(started) == 1
    assert row_count(gateway) == 0
    assert temp_files_after_settling(gateway) == []


def test_streaming_image_just_over_max_is_502_as_ordinary_path_and_leaves_no_temp(
    start_gateway: Any, upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(max_image_mb=1)
    started = record_incoming(gateway, monkeypatch)
    # one byte over: its text still fits the streamed limit (max * 4 // 3 + 4), so it is
    # written to a temporary file before the store refuses it
    data = png_of_size(2**20 + 1)
    text = b64(data)
    plain = ('{"created":1,"data":[{"b64_json":"' + text + '"}]}').encode()
    answer_with(upstream, plain)
    streamed = generate(gateway)
    assert len(started) == 1
    assert temp_files(gateway) == []
    answer_with(upstream, plain.replace(b"/", b"\\/"))  # the ordinary path, for comparison
    ordinary = generate(gateway)
    assert len(started) == 1  # the escaped text was never cut out
    assert streamed.status_code == ordinary.status_code == 502  # the upstream's fault
    assert streamed.json()["error"]["code"] == ordinary.json()["error"]["code"]
    assert streamed.json()["error"]["code"] == "upstream_image_too_large"
    assert row_count(gateway) == 0
    assert temp_files(gateway) == []


def test_streaming_image_without_data_next_to_small_image_is_502(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    # the control for the test below: no long string, so nothing is cut out
    body = {"data": [{"b64_json": {"x": 1}}, {"b64_json": b64(make_image("PNG", 2_000, seed=36))}]}
    answer_with(upstream, json.dumps(body).encode())
    assert assert_openai_error(generate(gateway), 502)["code"] == "bad_upstream_response"


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda text: [{"b64_json": {"x": 1}}, {"b64_json": text}], id="dict next"),
        pytest.param(lambda text: [{"b64_json": [text]}], id="list around"),
    ],
)
def test_streaming_b64_json_not_a_string_next_to_large_image_is_502(
    gateway: Gateway, upstream: StubUpstream, shape: Any
) -> None:
    body = {"created": 1, "data": shape(b64(BIG_2))}
    answer_with(upstream, json.dumps(body).encode())
    resp = generate(gateway)
    assert assert_openai_error(resp, 502)["code"] == "bad_upstream_response"


# -- a file cut short on disk ------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["cut short", "empty", "grown"])
@pytest.mark.parametrize("record", ["remembered", "read from the database"])
def test_streaming_stored_file_wrong_size_is_410_never_short_body(
    gateway: Gateway, upstream: StubUpstream, started: list[IncomingImage], damage: str, record: str
) -> None:
    upstream.image = BIG
    resp = generate(gateway)
    assert resp.status_code == 200, resp.text
    url = resp.json()["data"][0]["url"]
    stored = assert_served(gateway, url, BIG)
    assert [image.image_id for image in started] == [stored.id]
    path = gateway.services.cache.path(stored.id, "png")
    # what a power loss can leave: the rename and the row survived, the data did not
    written = {"cut short": BIG[: len(BIG) // 3], "empty": b"", "grown": BIG + b"\0" * 10}[damage]
    path.write_bytes(written)
    if record == "read from the database":
        gateway.services.library.rows.forget(stored.id)
    for name in (f"{stored.id}.png", stored.id):
        got = httpx.get(f"{gateway.url}/images/{name}")
        assert_openai_error(got, 410)
        assert got.headers["content-type"].startswith("application/json")
    ranged = httpx.get(url, headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 410
    head = httpx.head(url)
    assert head.status_code == 410
    assert path.read_bytes() == written  # nothing served it, nothing "repaired" it
