"""Images lifted out of long SSE data lines: the parser's fast path and the rewriter's tokens.

Every case is also run without lifting: the client must see the same JSON either way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

import pytest

from picgate.errors import UpstreamError
from picgate.gateway.lifted import LIFT_LINE, ImageLifter
from picgate.gateway.rewrite import StreamRewriter
from picgate.gateway.sse import SSEEvent, SSEParser
from tests.support.images import make_image

PNG = base64.b64encode(make_image("PNG", 120_000, seed=3)).decode()
META = {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


class Store:
    """Stores what is a whole PNG, given as text or decoded; records how each came."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.texts: list[str] = []
        self.decoded: list[bytes] = []

    async def __call__(self, image: str) -> str | None:
        encoded = image.split(",", 1)[1] if image.startswith("data:") else image
        self.texts.append(encoded)
        try:
            return self._url(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            return None

    async def bytes_in(self, data: bytes) -> str | None:
        self.decoded.append(data)
        return self._url(data)

    def _url(self, data: bytes) -> str | None:
        if self.fail or not data.startswith(b"\x89PNG"):
            return None
        return f"http://gw/images/{len(self.texts) + len(self.decoded)}.png"


def line(content: str, *, escape_slash: bool = False) -> bytes:
    text = json.dumps({**META, "choices": [{"index": 0, "delta": {"content": content}}]})
    if escape_slash:
        text = text.replace("/", "\\/")
    return b"data: " + text.encode() + b"\n\n"


def relayed(
    stream: bytes, *, lift: bool, store: Store, pieces: int = 1, max_image: int | None = None
) -> tuple[list[Any], list[SSEEvent]]:
    """(the payloads a client gets, as JSON where they are JSON; the parsed events)."""

    async def go() -> tuple[list[Any], list[SSEEvent]]:
        lifter = ImageLifter(max_run=max_image) if lift else None
        parser = SSEParser(lifter=lifter)
        rewriter = StreamRewriter(store, max_image=max_image, decoded=store.bytes_in)
        step = -(-len(stream) // pieces)
        events: list[SSEEvent] = []
        for i in range(0, len(stream), step):
            events += parser.feed(stream[i : i + step])
        events += parser.close()
        out: list[str] = []
        for event in events:
            assert event.data is not None
            out += await rewriter.feed(event.data, event.lifted)
        out += await rewriter.finish()
        return [json.loads(p) if p.startswith("{") else p for p in out], events

    return asyncio.run(go())


def contents(payloads: list[Any]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content", "") for p in payloads if isinstance(p, dict)
    )


def same_either_way(stream: bytes, **kw: Any) -> tuple[list[Any], list[SSEEvent], Store]:
    store = Store(fail=kw.pop("fail", False))
    lifted_out, events = relayed(stream, lift=True, store=store, **kw)
    plain_out, _ = relayed(stream, lift=False, store=Store(fail=store.fail), **kw)
    assert lifted_out == plain_out
    return lifted_out, events, store


def test_lifter_markdown_image_split_across_chunks_stored_decoded() -> None:
    stream = line(f"Here: ![cat](data:image/png;base64,{PNG}) done.")
    out, events, store = same_either_way(stream, pieces=37)
    assert contents(out) == "Here: ![cat](http://gw/images/1.png) done."
    assert len(events[0].lifted) == 1 and PNG not in (events[0].data or "")
    assert store.decoded == [base64.b64decode(PNG)] and store.texts == []


def test_lifter_escaped_slashes_lifted_and_stored() -> None:
    assert "/" in PNG  # the escapes land inside the run, not only in the head
    stream = line(f"![x](data:image/png;base64,{PNG})", escape_slash=True)
    out, events, store = same_either_way(stream)
    assert contents(out) == "![x](http://gw/images/1.png)"
    assert events[0].lifted and store.decoded == [base64.b64decode(PNG)]


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_lifter_each_padding_lifted_and_exact(cut: int) -> None:
    data = base64.b64decode(PNG)
    raw = data[: len(data) - cut - (len(data) % 3)]
    encoded = base64.b64encode(raw).decode()  # "", "=" or "==" at the end
    stream = line(f"a data:image/png;base64,{encoded} b")
    out, events, store = same_either_way(stream, fail=True)
    assert contents(out) == f"a data:image/png;base64,{encoded} b"
    assert events[0].lifted and store.decoded == [raw]


def test_lifter_non_image_data_url_left_in_text() -> None:
    payload = base64.b64encode(b"plain text " * 9000).decode()
    stream = line(f"see data:text/plain;base64,{payload} end")
    out, events, _ = same_either_way(stream)
    assert events[0].lifted == {}
    assert contents(out) == f"see data:text/plain;base64,{payload} end"


def test_lifter_image_at_the_very_end_stored() -> None:
    stream = line(f"data:image/png;base64,{PNG}")
    out, events, store = same_either_way(stream)
    assert contents(out) == "![image](http://gw/images/1.png)"
    assert events[0].lifted and len(store.decoded) == 1


def test_lifter_run_going_on_in_next_chunk_stored_whole() -> None:
    data = base64.b64decode(PNG)
    head, tail = PNG[: (len(PNG) // 2) // 4 * 4], PNG[(len(PNG) // 2) // 4 * 4 :]
    assert base64.b64decode(head + tail) == data
    stream = line(f"data:image/png;base64,{head}") + line(f"{tail} after")
    out, events, store = same_either_way(stream)
    assert contents(out) == "![image](http://gw/images/1.png) after"
    assert events[0].lifted and store.texts == [PNG]


def test_lifter_two_images_in_one_event_both_stored() -> None:
    other = base64.b64encode(make_image("PNG", 90_000, seed=4)).decode()
    stream = line(f"![a](data:image/png;base64,{PNG}) and ![b](data:image/png;base64,{other})")
    out, events, store = same_either_way(stream)
    assert contents(out) == "![a](http://gw/images/1.png) and ![b](http://gw/images/2.png)"
    assert len(events[0].lifted) == 2 and len(store.decoded) == 2


def test_lifter_failing_store_sends_the_original_text() -> None:
    text = f"x ![a](data:image/png;base64,{PNG}) y"
    out, events, _ = same_either_way(line(text), fail=True)
    assert events[0].lifted and contents(out) == text


def test_lifter_images_list_item_stored_decoded() -> None:
    url = f"data:image/png;base64,{PNG}"
    body = {**META, "choices": [{"index": 0, "delta": {"content": "hi", "images": [url]}}]}
    stream = b"data: " + json.dumps(body).encode() + b"\n\n"
    out, events, store = same_either_way(stream)
    assert contents(out) == "hi\n\n![image](http://gw/images/1.png)"
    assert events[0].lifted and len(store.decoded) == 1


def test_lifter_run_in_a_tool_argument_comes_back_unchanged() -> None:
    args = json.dumps({"img": f"data:image/png;base64,{PNG}"})
    call = {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": args}}
    body = {**META, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
    out, events, store = same_either_way(b"data: " + json.dumps(body).encode() + b"\n\n")
    assert events[0].lifted and out == [body]
    assert store.decoded == [] and store.texts == []


@pytest.mark.parametrize(
    "after",
    ["\\u0041", "\\n"],  # "\u0041" is an "A": the run may go on, so it stays in the text
)
def test_lifter_escape_after_run_same_as_text(after: str) -> None:
    raw = b'data: {"choices":[{"index":0,"delta":{"content":"data:image/png;base64,'
    stream = raw + PNG.encode() + after.encode() + b' z"}}]}\n\n'
    out, events, _ = same_either_way(stream, fail=True)
    assert bool(events[0].lifted) == (after == "\\n")
    assert contents(out) == f"data:image/png;base64,{PNG}{json.loads(chr(34) + after + chr(34))} z"


def test_lifter_non_canonical_padding_bits_left_in_text() -> None:
    data = base64.b64decode(PNG)
    raw = data[: len(data) - (len(data) % 3) - 1]  # ends in "=": the last char carries 2 bits
    encoded = base64.b64encode(raw).decode()
    bent = encoded[:-2] + chr(ord(encoded[-2]) + 1) + "="
    assert base64.b64decode(bent) == raw and bent != encoded
    out, events, _ = same_either_way(line(f"data:image/png;base64,{bent}"), fail=True)
    assert events[0].lifted == {}
    assert contents(out) == f"data:image/png;base64,{bent}"


def test_lifter_run_over_max_image_still_refused() -> None:
    stream = line(f"![a](data:image/png;base64,{PNG})")
    for lift in (True, False):
        with pytest.raises(UpstreamError) as caught:
            relayed(stream, lift=lift, store=Store(), max_image=len(PNG) - 1)
        assert caught.value.code == "upstream_image_too_large"


def test_lifter_short_line_not_lifted() -> None:
    small = base64.b64encode(make_image("PNG", 2_000, seed=5)).decode()
    stream = line(f"![a](data:image/png;base64,{small})")
    assert len(stream) < LIFT_LINE
    out, events, store = same_either_way(stream)
    assert events[0].lifted == {} and store.texts == [small]
    assert contents(out) == "![a](http://gw/images/1.png)"
