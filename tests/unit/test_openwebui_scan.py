"""The pure part of the Open WebUI migration: base64 images found and replaced as text."""

from __future__ import annotations

import json

from picgate.openwebui.scan import (
    body_key,
    find_data_urls,
    has_data_url,
    message_ids_by_key,
    replace_data_urls,
)
from tests.support.images import data_url, make_image

PNG = data_url(make_image("PNG", 600, seed=7))
JPEG = data_url(make_image("JPEG", 600, seed=8), "image/jpeg")


def _key(url: str) -> str:
    return body_key(url.split(",", 1)[1])


def test_find_data_urls_markdown_json_value_and_prose_are_told_apart() -> None:
    text = json.dumps(
        {"content": f"see ![cat]({PNG}) and {JPEG} here", "url": PNG}, ensure_ascii=False
    )
    found = list(find_data_urls(text))
    assert [(f.subtype, f.in_prose) for f in found] == [
        ("png", False),
        ("jpeg", True),
        ("png", False),
    ]
    assert all(text[f.start : f.end].startswith("data:image/") for f in found)


def test_find_data_urls_wrapped_body_is_left_alone() -> None:
    body = PNG.split(",", 1)[1]
    wrapped = json.dumps({"content": f"data:image/png;base64,{body[:64]}\n{body[64:]}"})
    assert list(find_data_urls(wrapped)) == []


def test_find_data_urls_tiny_placeholder_is_not_an_image() -> None:
    assert not has_data_url('{"url": "data:image/png;base64,AAAA"}')


def test_replace_data_urls_keeps_every_other_byte() -> None:
    text = json.dumps(
        {"content": f'前 ![x]({PNG}) 中 <img src="{JPEG}"> 后 🐱', "n": 1.50},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    urls = {_key(PNG): "https://pg.example/images/a.png", _key(JPEG): "https://pg/i/b.jpg"}
    new, count = replace_data_urls(text, urls)
    assert count == 2
    assert new == text.replace(PNG, urls[_key(PNG)]).replace(JPEG, urls[_key(JPEG)])
    assert json.loads(new)["content"].startswith("前 ![x](https://pg.example/images/a.png)")


def test_replace_data_urls_prose_image_becomes_markdown_image() -> None:
    text = json.dumps({"content": f"Done: {PNG} (bare)"})
    new, count = replace_data_urls(text, {_key(PNG): "https://pg/images/a.png"})
    assert count == 1
    assert json.loads(new) == {"content": "Done: ![image](https://pg/images/a.png) (bare)"}


def test_replace_data_urls_unknown_images_are_left_in_place() -> None:
    text = json.dumps({"a": PNG, "b": JPEG})
    new, count = replace_data_urls(text, {_key(JPEG): "https://pg/images/b.jpg"})
    assert count == 1
    assert json.loads(new) == {"a": PNG, "b": "https://pg/images/b.jpg"}


def test_replace_data_urls_no_images_returns_the_same_text() -> None:
    text = '{"content": "你好 \\n data:image/png but no base64"}'
    assert replace_data_urls(text, {}) == (text, 0)


def test_message_ids_by_key_history_and_legacy_list() -> None:
    chat = {
        "history": {
            "messages": {
                "m1": {"id": "m1", "content": "hi", "files": [{"type": "image", "url": JPEG}]},
                "m2": {"id": "m2", "content": f"![image]({PNG})"},
            }
        },
        "messages": [{"id": "m0", "content": f"{PNG}"}],
        "title": "no message",
    }
    ids = message_ids_by_key(json.dumps(chat))
    assert ids == {_key(JPEG): "m1", _key(PNG): "m2"}


def test_message_ids_by_key_broken_json_finds_nothing() -> None:
    assert message_ids_by_key("{not json") == {}
    assert message_ids_by_key("[1, 2]") == {}
