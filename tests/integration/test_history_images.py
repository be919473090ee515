"""History images reach the upstream as image parts of a user message, and a long editing chat
is trimmed under ``MAX_INLINE_IMAGES_MB`` instead of refused: a real gateway on a socket, the
stub upstream recording what it got.

The shape checked is the one OpenAI chat, OpenRouter and Gemini's OpenAI-compatible endpoint
document for images in a chat request: a ``user`` message whose ``content`` is a list of parts,
``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url": <data URL>}}``;
``assistant`` content is text.
"""

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


def store(gateway: Gateway, upstream: StubUpstream, image: bytes) -> str:
    """The gateway URL of ``image``, stored through a generation."""
    upstream.image = image
    made = httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"prompt": "p", "response_format": "url"},
        timeout=60,
    )
    assert made.status_code == 200, made.text[:300]
    url: str = made.json()["data"][0]["url"]
    return url


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def texts(messages: list[dict[str, Any]]) -> list[str]:
    """Every text the upstream got: string contents and text parts."""
    found: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            found.append(content)
        elif isinstance(content, list):
            found += [part["text"] for part in content if part.get("type") == "text"]
    return found


def assert_vision_request(messages: list[dict[str, Any]]) -> list[str]:
    """The documented request shape (see the module doc); the image URLs, in order."""
    urls: list[str] = []
    for message in messages:
        content = message["content"]
        if message["role"] != "user" or isinstance(content, str):
            assert isinstance(content, str) or all(p["type"] == "text" for p in content)
            continue
        for part in content:
            if part["type"] == "image_url":
                assert set(part) == {"type", "image_url"}
                assert part["image_url"]["url"].startswith("data:image/")
                urls.append(part["image_url"]["url"])
            else:
                assert part["type"] == "text" and isinstance(part["text"], str)
    assert not any("data:" in text for text in texts(messages))
    return urls


HISTORY_SHAPES: dict[str, Callable[[str, str], list[dict[str, Any]]]] = {
    # Open WebUI and the OpenAI SDK: plain strings, the image as markdown
    "string-content": lambda url, _inline: [
        {"role": "user", "content": "draw a fox"},
        {"role": "assistant", "content": f"Here it is.\n\n![image]({url})"},
        {"role": "user", "content": "make it blue"},
    ],
    # OpenRouter's and Gemini's examples: content as a list of text parts
    "content-parts": lambda url, _inline: [
        {"role": "user", "content": [{"type": "text", "text": "draw a fox"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"![image]({url})"}]},
        {"role": "user", "content": [{"type": "text", "text": "make it blue"}]},
    ],
    # a chat from before PicGate: the image is already a data URL in the assistant text
    "data-url-in-text": lambda _url, inline: [
        {"role": "user", "content": "draw a fox"},
        {"role": "assistant", "content": f"![image]({inline})"},
        {"role": "user", "content": "make it blue"},
    ],
}


@pytest.mark.parametrize("shape", sorted(HISTORY_SHAPES))
def test_chat_two_turn_edit_first_image_sent_as_user_image_part_no_data_url_in_text(
    gateway: Gateway, upstream: StubUpstream, shape: str
) -> None:
    first = make_image("PNG", 30_000, seed=21)
    url = store(gateway, upstream, first)
    messages = HISTORY_SHAPES[shape](url, data_url(first))
    resp = httpx.post(
        gateway.url + CHAT,
        headers=gateway.headers,
        json={"model": "picgate", "messages": messages},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:300]
    sent = upstream.last(CHAT).json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert assert_vision_request(sent) == [data_url(first)]
    last = sent[2]["content"]
    assert last[:2] == [
        {"type": "text", "text": "[image 1]"},
        {"type": "image_url", "image_url": {"url": data_url(first)}},
    ]
    assert last[-1] == {"type": "text", "text": "make it blue"}
    assert "[image 1]" in texts([sent[1]])[0]


def test_chat_thirty_turn_edit_4mb_images_trimmed_under_cap_reaches_upstream(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    cap_mb = 50  # MAX_INLINE_IMAGES_MB's default
    gateway = start_gateway(max_inline_images_mb=cap_mb, inline_full_images=2)
    images = [make_image("PNG", 4_000_000, seed=100 + turn) for turn in range(30)]
    assert all(len(image) > 3_900_000 for image in images)
    messages: list[dict[str, Any]] = []
    for turn, image in enumerate(images):
        messages.append({"role": "user", "content": f"edit {turn}"})
        messages.append(
            {"role": "assistant", "content": f"![image]({store(gateway, upstream, image)})"}
        )
    messages.append({"role": "user", "content": "make it bluer"})
    upstream.requests.clear()

    resp = httpx.post(
        gateway.url + CHAT,
        headers=gateway.headers,
        json={"model": "picgate", "messages": messages},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text[:300]
    sent = upstream.last(CHAT).json["messages"]
    urls = assert_vision_request(sent)
    full = [u for u in urls if u.startswith("data:image/png;")]
    smaller = [u for u in urls if u.startswith("data:image/jpeg;")]
    notes = [t for t in texts(sent) if t.startswith("[image omitted: ")]
    assert full == [data_url(images[-2]), data_url(images[-1])]  # the newest two, whole
    assert len(smaller) + len(notes) == 28 and smaller
    assert sum(map(len, urls)) <= cap_mb * 2**20
    # oldest left out first: the notes stand in the oldest assistant turns
    omitted = [i for i, m in enumerate(sent[:-1]) if texts([m])[0].startswith("[image omitted: ")]
    assert omitted == [2 * i + 1 for i in range(len(notes))]
    labels = [texts([m])[0] for m in sent[1:-1:2]][len(notes) :]
    assert labels == [f"[image {n}]" for n in range(1, 31 - len(notes))]
    print(f"upstream got {len(full)} full, {len(smaller)} downscaled, {len(notes)} omitted")
