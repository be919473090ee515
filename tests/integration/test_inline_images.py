"""Images named by URL and inlined for the upstream: read once per request, capped in bytes sent
(``MAX_INLINE_IMAGES_MB``), on a real socket against the stub upstream."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway
from tests.support.images import make_image
from tests.support.upstream import StubUpstream

CHAT = "/v1/chat/completions"
EDITS = "/v1/images/edits"
IMAGE = make_image("PNG", 200_000, seed=11)  # ~0.26 MB as a data URL
REFERENCES = 100


def stored_image(gateway: Gateway, upstream: StubUpstream) -> str:
    """The URL of IMAGE stored by the gateway (through a generation)."""
    upstream.image = IMAGE
    made = httpx.post(
        gateway.url + "/v1/images/generations", headers=gateway.headers, json={"prompt": "p"}
    )
    assert made.status_code == 200, made.text
    url: str = made.json()["data"][0]["url"]
    upstream.requests.clear()
    return url


def count_reads(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The image ids the gateway reads from its store from now on."""
    reads: list[str] = []
    read_bytes = gateway.services.library.serving.read_bytes

    async def counted(image_id: str) -> bytes:
        reads.append(image_id)
        return await read_bytes(image_id)

    monkeypatch.setattr(gateway.services.library.serving, "read_bytes", counted)
    return reads


def image_parts(url: str, count: int) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": f"{url}#{i}"}} for i in range(count)]


def chat(gateway: Gateway, messages: list[dict[str, Any]]) -> httpx.Response:
    body = {"model": "picgate", "messages": messages}
    return httpx.post(gateway.url + CHAT, json=body, headers=gateway.headers, timeout=60)


def assert_inline_413(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 413, resp.text[:300]
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "inline_images_too_large")
    assert "MAX_INLINE_IMAGES_MB" in error["message"]
    return error


def test_inline_chat_newest_image_alone_over_cap_413_nothing_sent(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(max_inline_images_mb=1)
    upstream.image = make_image("PNG", 900_000, seed=12)  # ~1.2 MB as a data URL
    made = httpx.post(
        gateway.url + "/v1/images/generations", headers=gateway.headers, json={"prompt": "p"}
    )
    url = made.json()["data"][0]["url"]
    upstream.requests.clear()
    messages = [
        {"role": "user", "content": "draw"},
        {"role": "assistant", "content": f"![image]({url})"},
        {"role": "user", "content": "again"},
    ]
    error = assert_inline_413(chat(gateway, messages))
    assert error["param"] == "messages[1].content"
    assert "newest image" in error["message"]
    assert not upstream.requests


def test_inline_chat_image_parts_over_cap_trimmed_newest_full_image_read_once(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(max_inline_images_mb=1)
    url = stored_image(gateway, upstream)
    reads = count_reads(gateway, monkeypatch)
    content = [{"type": "text", "text": "again"}, *image_parts(url, REFERENCES)]
    resp = chat(gateway, [{"role": "user", "content": content}])
    assert resp.status_code == 200, resp.text[:300]
    sent = upstream.last(CHAT).json["messages"][0]["content"]
    assert len(sent) == 1 + REFERENCES  # every part is still there, as an image or a note
    full = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    urls = [p["image_url"]["url"] for p in sent if p["type"] == "image_url"]
    notes = [p["text"] for p in sent[1:] if p["type"] == "text"]
    assert [p["image_url"]["url"] for p in sent[-2:]] == [full, full]  # the newest two
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls[:-2])
    assert len(urls) > 2 and notes  # some downscaled, the oldest left out
    assert all(note.startswith("[image omitted: ") for note in notes)
    assert sent.index({"type": "text", "text": notes[0]}) < len(sent) - len(urls)  # oldest first
    assert sum(len(u) for u in urls) <= 2**20
    assert reads == [reads[0]]


def test_inline_chat_assistant_markdown_repeated_image_sent_once(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(max_inline_images_mb=1)
    url = stored_image(gateway, upstream)
    reads = count_reads(gateway, monkeypatch)
    markdown = "\n".join(f"![a]({url}#{i})" for i in range(REFERENCES))
    messages = [
        {"role": "user", "content": "draw"},
        {"role": "assistant", "content": markdown},
        {"role": "user", "content": "again"},
    ]
    assert chat(gateway, messages).status_code == 200
    sent = upstream.last(CHAT).json["messages"]
    assert sent[1]["content"] == "\n".join(["[image 1]"] * REFERENCES)
    assert [p["type"] for p in sent[2]["content"]] == ["text", "image_url", "text"]
    assert len(reads) == 1


def test_inline_chat_under_cap_every_reference_sent_image_read_once(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(max_inline_images_mb=1)
    url = stored_image(gateway, upstream)
    reads = count_reads(gateway, monkeypatch)
    resp = chat(gateway, [{"role": "user", "content": image_parts(url, 3)}])
    assert resp.status_code == 200, resp.text[:300]
    expected = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    sent = upstream.last(CHAT).json["messages"][0]["content"]
    assert [part["image_url"]["url"] for part in sent] == [expected] * 3
    assert len(reads) == 1


def test_inline_edit_json_urls_over_cap_413_image_read_once(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(max_inline_images_mb=1)
    url = stored_image(gateway, upstream)
    reads = count_reads(gateway, monkeypatch)
    resp = httpx.post(
        gateway.url + EDITS,
        headers=gateway.headers,
        json={"prompt": "blue", "image": [url] * REFERENCES},
        timeout=60,
    )
    assert assert_inline_413(resp)["param"] == "image"
    assert len(reads) == 1
    assert not upstream.requests


def test_inline_edit_json_urls_under_cap_each_sent_read_once(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(max_inline_images_mb=1)
    url = stored_image(gateway, upstream)
    reads = count_reads(gateway, monkeypatch)
    resp = httpx.post(
        gateway.url + EDITS,
        headers=gateway.headers,
        json={"prompt": "blue", "image": [url, url + "#2", url], "mask": url},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:300]
    form = upstream.last(EDITS).form
    assert [part[1] for part in form["image[]"]] == [IMAGE] * 3
    assert form["mask"][0][1] == IMAGE
    assert len(reads) == 1


def test_inline_chat_naming_2000_made_up_ids_one_lookup_no_reads(
    gateway: Gateway, upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request naming thousands of made-up image ids costs one batched lookup (it cost one
    database read each: a 1.9 MB request took 16 s), and nothing is read for them."""
    url = stored_image(gateway, upstream)
    reads = count_reads(gateway, monkeypatch)
    rows = gateway.services.library.rows
    loads: list[str] = []
    lookups: list[int] = []
    load, sizes = rows.load, rows.sizes

    def counted_load(image_id: str) -> Any:
        loads.append(image_id)
        return load(image_id)

    def counted_sizes(ids: Any) -> dict[str, int]:
        lookups.append(len(ids))
        return sizes(ids)

    monkeypatch.setattr(rows, "load", counted_load)
    monkeypatch.setattr(rows, "sizes", counted_sizes)
    made_up = [
        f"{gateway.url}/images/{base64.urlsafe_b64encode(i.to_bytes(16, 'big')).decode()[:22]}.png"
        for i in range(2000)
    ]
    content = [{"type": "image_url", "image_url": {"url": u}} for u in [*made_up, url]]
    resp = chat(gateway, [{"role": "user", "content": content}])
    assert resp.status_code == 200, resp.text[:300]
    assert len(lookups) == 1  # one query, at most MAX_LOOKUPS ids
    assert lookups[0] <= 256
    assert loads == []
    assert reads == []  # the real image is the 2001st distinct id: past the cap, left as text
    sent = upstream.last(CHAT).json["messages"][0]["content"]
    assert [p["image_url"]["url"] for p in sent] == [*made_up, url]
