"""Request-side rewriting: the model, and history images turned into data URLs."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest

from picgate.errors import BadRequest, PayloadTooLarge
from picgate.gateway.downscale import MAX_SIDE, downscaled
from picgate.gateway.fetch import BlockedAddress
from picgate.gateway.history import (
    HistoryImages,
    last_user_text,
    own_image_id,
    upstream_body,
)
from picgate.gateway.inline import InlineBudget
from picgate.gateway.trim import OMITTED
from tests.support.images import data_url, make_image

BASE = "https://img.example.com"
IMAGE_ID = "AbCdEfGhIjKlMnOpQrStUv"
OTHER_ID = "ZyXwVuTsRqPoNmLkJiHgFe"
PNG = make_image("PNG", 2_000, seed=5)
JPEG = make_image("JPEG", 2_000, seed=6)
STORED = {IMAGE_ID: PNG, OTHER_ID: JPEG}


class Loader:
    """A store of two images that remembers what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, image_id: str) -> bytes | None:
        self.asked.append(image_id)
        return STORED.get(image_id)


def images(fetch: Any = None, bases: tuple[str, ...] = (BASE,)) -> HistoryImages:
    return HistoryImages(own_bases=bases, load_own=Loader(), fetch=fetch)


async def rewrite(
    body: dict[str, Any], history: HistoryImages | None = None, model: str | None = "up-model"
) -> dict[str, Any]:
    original = copy.deepcopy(body)
    out = await upstream_body(body, upstream_model=model, images=history or images())
    assert body == original  # the client's body is never mutated
    return out


async def test_upstream_body_replaces_model_keeps_other_fields() -> None:
    body = {
        "model": "picgate",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "modalities": ["image", "text"],
        "temperature": 0.3,
    }
    assert await rewrite(body) == {**body, "model": "up-model"}


async def test_upstream_body_no_upstream_model_keeps_client_model() -> None:
    body = {"model": "nano-banana", "messages": []}
    assert await rewrite(body, model=None) == body


async def test_upstream_body_assistant_markdown_own_url_moved_to_last_user_message() -> None:
    content = (
        f"Here you go.\n![image]({BASE}/images/{IMAGE_ID}.png)\n"
        f"and ![second]({BASE}/images/{OTHER_ID}) end"
    )
    body = {
        "messages": [
            {"role": "user", "content": "draw two"},
            {"role": "assistant", "content": content, "name": "bot"},
            {"role": "user", "content": "make the second blue"},
        ]
    }
    history = images()
    out = await rewrite(body, history)
    assert out["messages"] == [
        {"role": "user", "content": "draw two"},
        {
            "role": "assistant",
            "content": "Here you go.\n[image 1]\nand [image 2] end",
            "name": "bot",
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "[image 1]"},
                {"type": "image_url", "image_url": {"url": data_url(PNG)}},
                {"type": "text", "text": "[image 2]"},
                {"type": "image_url", "image_url": {"url": data_url(JPEG, "image/jpeg")}},
                {"type": "text", "text": "make the second blue"},
            ],
        },
    ]
    assert history.inlined == 2


async def test_upstream_body_moved_images_with_no_user_after_get_a_new_user_message() -> None:
    url = f"{BASE}/images/{IMAGE_ID}.png"
    body = {
        "messages": [
            {"role": "user", "content": "draw"},
            {"role": "assistant", "content": [{"type": "text", "text": f"![x]({url})"}]},
        ]
    }
    out = await rewrite(body)
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "[image 1]"}],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "[image 1]"},
            {"type": "image_url", "image_url": {"url": data_url(PNG)}},
        ],
    }


async def test_upstream_body_assistant_data_urls_and_image_parts_moved_out_of_text() -> None:
    jpeg = data_url(JPEG, "image/jpeg")
    body = {
        "messages": [
            {"role": "user", "content": "draw"},
            {"role": "assistant", "content": f"![image]({data_url(PNG)})\nbare {jpeg} tail"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "there"},
                    {"type": "image_url", "image_url": {"url": data_url(PNG)}},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": "blue"}]},
        ]
    }
    out = await rewrite(body)
    sent = out["messages"]
    assert sent[1]["content"] == "[image 1]\nbare [image 2] tail"
    assert sent[2] == body["messages"][2]
    # the same image again keeps its number and is sent once
    assert sent[3]["content"] == [
        {"type": "text", "text": "there"},
        {"type": "text", "text": "[image 1]"},
    ]
    assert sent[4]["content"] == [
        {"type": "text", "text": "[image 1]"},
        {"type": "image_url", "image_url": {"url": data_url(PNG)}},
        {"type": "text", "text": "[image 2]"},
        {"type": "image_url", "image_url": {"url": jpeg}},
        {"type": "text", "text": "blue"},
    ]


async def test_upstream_body_assistant_data_url_not_an_image_stays_in_text() -> None:
    text = "![x](data:image/png;base64,aGVsbG8gd29ybGQgbm90IGFuIGltYWdl) and data:image/gif;base64,"
    body = {"messages": [{"role": "assistant", "content": text}]}
    assert (await rewrite(body))["messages"] == body["messages"]


async def test_upstream_body_variant_urls_inline_the_original() -> None:
    """A chat written with CHAT_IMAGE_VARIANT holds variant URLs; the upstream gets the
    original's bytes whole, and no query is left behind the data URL."""
    variant = f"{BASE}/images/{IMAGE_ID}.png?w=1024&format=webp"
    loader = Loader()
    history = HistoryImages(own_bases=(BASE,), load_own=loader, fetch=None)
    body = {
        "messages": [
            {"role": "user", "content": "draw"},
            {"role": "assistant", "content": f"done ![image]({variant}) ok"},
        ]
    }
    out = await rewrite(body, history)
    assert out["messages"][1]["content"] == "done [image 1] ok"
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "[image 1]"},
            {"type": "image_url", "image_url": {"url": data_url(PNG)}},
        ],
    }
    part = {"type": "image_url", "image_url": {"url": variant}}
    asked: dict[str, Any] = {"messages": [{"role": "user", "content": [part]}]}
    out = await rewrite(asked, history)
    assert out["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": data_url(PNG)}}
    ]
    assert loader.asked == [IMAGE_ID]  # the bare id, loaded once for both


async def test_upstream_body_user_image_url_part_own_url_inlined() -> None:
    part = {
        "type": "image_url",
        "image_url": {"url": f"{BASE}/images/{IMAGE_ID}.png", "detail": "high"},
    }
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "edit"}, part]}]}
    out = await rewrite(body)
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "edit"},
        {"type": "image_url", "image_url": {"url": data_url(PNG), "detail": "high"}},
    ]


async def test_upstream_body_own_image_on_another_host_inlined_when_id_exists() -> None:
    url = f"http://picgate:5643/images/{IMAGE_ID}.png"
    body = {"messages": [{"role": "assistant", "content": f"![image]({url})"}]}
    out = await rewrite(body)
    assert out["messages"][0]["content"] == "[image 1]"
    assert out["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": data_url(PNG)},
    }


async def test_upstream_body_unknown_id_or_external_url_passes_through() -> None:
    unknown = f"{BASE}/images/{'q' * 22}.png"
    external = "https://cdn.example.org/cat.png"
    body = {
        "messages": [
            {"role": "assistant", "content": f"![a]({unknown}) ![b]({external})"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": unknown}},
                    {"type": "image_url", "image_url": {"url": external}},
                    {"type": "image_url", "image_url": {"url": data_url(PNG)}},
                ],
            },
        ]
    }
    history = images()
    assert await rewrite(body, history) == {**body, "model": "up-model"}
    assert history.inlined == 0


async def test_upstream_body_user_string_content_untouched() -> None:
    body = {"messages": [{"role": "user", "content": f"see {BASE}/images/{IMAGE_ID}.png"}]}
    assert (await rewrite(body))["messages"] == body["messages"]


async def test_upstream_body_same_image_loaded_once() -> None:
    url = f"{BASE}/images/{IMAGE_ID}.png"
    body = {"messages": [{"role": "assistant", "content": f"![a]({url}) ![b]({url})"}] * 3}
    history = images()
    await rewrite(body, history)
    assert history.load_own.asked == [IMAGE_ID]  # type: ignore[attr-defined]


async def test_upstream_body_one_image_under_many_urls_read_and_encoded_once() -> None:
    # what a client can send: the same image under other fragments, extensions, queries, hosts
    urls = [
        f"{BASE}/images/{IMAGE_ID}.png#{i}"
        if i % 3 == 0
        else f"{BASE}/images/{IMAGE_ID}?v={i}"
        if i % 3 == 1
        else f"http://picgate.internal:5643/images/{IMAGE_ID}.png#{i}"
        for i in range(100)
    ]
    markdown = " ".join(f"![a]({url})" for url in urls[:50])
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls[50:]]
    body = {
        "messages": [
            {"role": "assistant", "content": markdown},
            {"role": "user", "content": parts},
        ]
    }
    history = images()
    out = await rewrite(body, history)
    assert history.load_own.asked == [IMAGE_ID]  # type: ignore[attr-defined]
    assert history.inlined == 100
    assert out["messages"][0]["content"] == " ".join(["[image 1]"] * 50)
    moved, *sent = [part["image_url"]["url"] for part in out["messages"][1]["content"][1:]]
    assert moved == data_url(PNG)
    assert len(sent) == 50
    assert all(url is moved for url in sent)  # one string, not 50 copies of it


async def test_upstream_body_inline_budget_counts_every_user_part_reference() -> None:
    url = f"{BASE}/images/{IMAGE_ID}.png"
    size = len(data_url(PNG))
    part = {"type": "image_url", "image_url": {"url": url}}
    fits = {"messages": [{"role": "user", "content": [part] * 3}]}
    history = images()
    history.budget = InlineBudget(limit=3 * size)
    await rewrite(fits, history)
    assert history.budget.used == 3 * size
    assert (history.trim.full, history.trim.downscaled, history.trim.omitted) == (3, 0, 0)


async def test_upstream_body_newest_image_alone_over_cap_is_413() -> None:
    url = f"{BASE}/images/{IMAGE_ID}.png"
    body = {
        "messages": [
            {"role": "assistant", "content": f"![a]({BASE}/images/{OTHER_ID}.jpg)"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    *[{"type": "image_url", "image_url": {"url": url}}],
                ],
            },
        ]
    }
    history = images()
    history.budget = InlineBudget(limit=len(data_url(PNG)) - 1)
    with pytest.raises(PayloadTooLarge) as caught:
        await rewrite(body, history)
    assert caught.value.status_code == 413
    assert caught.value.code == "inline_images_too_large"
    assert caught.value.param == "messages[1].content[1].image_url.url"
    assert "MAX_INLINE_IMAGES_MB" in caught.value.message
    assert "newest image" in caught.value.message
    assert history.load_own.asked == [IMAGE_ID]  # type: ignore[attr-defined]


async def test_upstream_body_external_url_fetched_once_per_request() -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return JPEG

    url = "https://cdn.example.org/cat.jpg"
    part = {"type": "image_url", "image_url": url}
    body = {"messages": [{"role": "user", "content": [part] * 5}]}
    history = images(fetch)
    history.budget = InlineBudget(limit=5 * len(data_url(JPEG, "image/jpeg")))
    out = await rewrite(body, history)
    assert fetched == [url]
    assert [p["image_url"] for p in out["messages"][0]["content"]] == [
        data_url(JPEG, "image/jpeg")
    ] * 5


async def test_upstream_body_external_fetch_on_inlines_image() -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return JPEG

    url = "https://cdn.example.org/cat.jpg"
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": url}]}]}
    out = await rewrite(body, images(fetch))
    assert out["messages"][0]["content"] == [
        {"type": "image_url", "image_url": data_url(JPEG, "image/jpeg")}
    ]
    assert fetched == [url]


async def test_upstream_body_external_markdown_never_fetched() -> None:
    async def fetch(url: str) -> bytes:
        raise AssertionError("assistant markdown must not be fetched")

    body = {"messages": [{"role": "assistant", "content": "![x](https://cdn.example.org/x.png)"}]}
    assert (await rewrite(body, images(fetch)))["messages"] == body["messages"]


async def test_upstream_body_refused_fetch_is_400_naming_url() -> None:
    async def fetch(url: str) -> bytes:
        raise BlockedAddress("image URL points at a forbidden address (10.0.0.1)")

    url = "http://10.0.0.1/secret.png"
    part = {"type": "image_url", "image_url": {"url": url}}
    body = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": [part]}]}
    with pytest.raises(BadRequest) as caught:
        await rewrite(body, images(fetch))
    assert caught.value.status_code == 400
    assert url in caught.value.message
    assert "forbidden address" in caught.value.message
    assert caught.value.param == "messages[1].content[0].image_url.url"


async def test_upstream_body_fetched_non_image_is_400() -> None:
    async def fetch(url: str) -> bytes:
        return b"<html>not an image</html>"

    body = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": "https://x.org/a"}]}
        ]
    }
    with pytest.raises(BadRequest) as caught:
        await rewrite(body, images(fetch))
    assert caught.value.status_code == 400
    assert "https://x.org/a" in caught.value.message


@pytest.mark.parametrize(
    ("body", "code"),
    [({}, "missing_required_parameter"), ({"messages": "hi"}, "invalid_type")],
)
async def test_upstream_body_bad_messages_is_400(body: dict[str, Any], code: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await rewrite(body)
    assert (caught.value.status_code, caught.value.code) == (400, code)


async def test_upstream_body_odd_messages_pass_through() -> None:
    body = {"messages": ["text", None, {"role": "tool", "content": None, "tool_call_id": "1"}]}
    assert (await rewrite(body))["messages"] == body["messages"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{BASE}/images/{IMAGE_ID}.png", IMAGE_ID),
        (f"{BASE}/images/{IMAGE_ID}", IMAGE_ID),
        (f"{BASE}/images/{IMAGE_ID}.jpeg?x=1#f", IMAGE_ID),
        (f"http://10.1.2.3:5643/images/{IMAGE_ID}.webp", IMAGE_ID),
        (f"https://gw.example.com/sub/images/{IMAGE_ID}.gif", IMAGE_ID),
        (f"{BASE}/images/{IMAGE_ID}.svg", None),
        (f"{BASE}/images/short.png", None),
        (f"{BASE}/images/../{IMAGE_ID}.png", None),
        (f"{BASE}/images/{IMAGE_ID}/x.png", None),
        (f"{BASE}/files/{IMAGE_ID}.png", None),
        (f"ftp://x/images/{IMAGE_ID}.png", None),
        ("http://[::1/images/x", None),
    ],
)
def test_own_image_id_shapes(url: str, expected: str | None) -> None:
    assert own_image_id(url, [BASE]) == expected


def test_own_image_id_base_with_path_prefix() -> None:
    assert own_image_id(f"https://x.org/pg/images/{IMAGE_ID}.png", ["https://x.org/pg"]) == IMAGE_ID


def test_last_user_text_takes_last_user_text_parts_truncated() -> None:
    messages: list[Any] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "make it"}, {"type": "text", "text": "blue"}],
        },
        {"role": "assistant", "content": "ok"},
    ]
    assert last_user_text(messages) == "make it\nblue"
    assert last_user_text([{"role": "user", "content": "x" * 50}], limit=10) == "x" * 10 + "..."
    assert last_user_text([{"role": "system", "content": "s"}]) is None


async def test_upstream_body_over_cap_newest_full_older_downscaled_oldest_noted() -> None:
    ids = [f"{'h' * 20}{i:02d}" for i in range(8)]
    stored = {image_id: make_image("PNG", 60_000, seed=40 + i) for i, image_id in enumerate(ids)}

    async def load(image_id: str) -> bytes | None:
        return stored.get(image_id)

    messages: list[Any] = []
    for image_id in ids:
        messages.append({"role": "user", "content": "edit"})
        messages.append({"role": "assistant", "content": f"![image]({BASE}/images/{image_id}.png)"})
    messages.append({"role": "user", "content": "bluer"})
    full = len(data_url(stored[ids[0]]))
    history = HistoryImages(own_bases=[BASE], load_own=load, keep_full=2)
    history.budget = InlineBudget(limit=3 * full)  # two whole, then room for a few small ones
    out = await rewrite({"messages": messages}, history)
    trim = history.trim
    assert (trim.full, trim.downscaled) == (2, 8 - 2 - trim.omitted)
    assert trim.downscaled >= 1 and trim.omitted >= 1
    sent = out["messages"]
    assert [sent[2 * i + 1]["content"] for i in range(trim.omitted)] == [OMITTED] * trim.omitted
    parts = sent[-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert urls[-2:] == [data_url(stored[ids[-2]]), data_url(stored[ids[-1]])]
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls[:-2])
    assert history.budget.used == sum(map(len, urls)) <= 3 * full


def test_downscaled_large_image_fits_max_side_and_flattens_alpha() -> None:
    from PIL import Image

    source = Image.new("RGBA", (2000, 1000), (255, 0, 0, 0))
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    small = downscaled(buffer.getvalue())
    assert small is not None and small.startswith(b"\xff\xd8\xff")
    with Image.open(io.BytesIO(small)) as img:
        assert img.size == (MAX_SIDE, MAX_SIDE // 2)
        assert img.getpixel((10, 10)) == (255, 255, 255)  # transparent became white


def test_downscaled_refuses_bomb_and_junk() -> None:
    header = make_image("PNG", 2_000, seed=9)
    # a PNG header claiming 20000×20000 pixels: refused from the header, nothing decoded
    bomb = header[:16] + (20000).to_bytes(4, "big") * 2 + header[24:]
    assert downscaled(bomb) is None
    assert downscaled(b"not an image at all") is None
