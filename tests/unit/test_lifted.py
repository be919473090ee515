"""Images lifted out of long SSE data lines: the parser's fast path and the rewriter's tokens.

Every case is also run without lifting: the client must see the same JSON either way, and the
same images lifted however the stream is cut into chunks (whole, or in pieces small enough that
the parser decodes an image while its line is still arriving).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import tracemalloc
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picgate.errors import UpstreamError
from picgate.gateway.lifted import LIFT_LINE, ImageLifter
from picgate.gateway.rewrite import LEFT_OUT, StreamRewriter
from picgate.gateway.sse import EventTooLarge, SSEEvent, SSEParser
from tests.support.images import make_image

PNG = base64.b64encode(make_image("PNG", 120_000, seed=3)).decode()
META = {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


class Store:
    """Stores what is a whole PNG, given as text or decoded; records how each came. Past
    ``keep`` images, each is left out (``LEFT_OUT``, as MAX_IMAGES_PER_ANSWER does)."""

    def __init__(self, *, fail: bool = False, keep: int | None = None) -> None:
        self.fail = fail
        self.keep = keep
        self.seen = 0
        self.texts: list[str] = []
        self.decoded: list[bytes] = []

    def _left_out(self) -> bool:
        self.seen += 1
        return self.keep is not None and self.seen > self.keep

    async def __call__(self, image: str) -> str | None:
        if self._left_out():
            return LEFT_OUT
        encoded = image.split(",", 1)[1] if image.startswith("data:") else image
        self.texts.append(encoded)
        try:
            return self._url(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            return None

    async def bytes_in(self, data: bytes) -> str | None:
        if self._left_out():
            return LEFT_OUT
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


def parsed(payload: str) -> Any:
    """A payload as JSON, or as it is when it is no JSON (``[DONE]``, a broken-off line)."""
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def cut(stream: bytes, *, step: int, at: Iterable[int] = ()) -> list[bytes]:
    """``stream`` in chunks of ``step`` bytes, also cut at each offset of ``at``."""
    offsets = sorted({*range(0, len(stream), step), *at, len(stream)} - {0})
    return [stream[i:j] for i, j in zip([0, *offsets], offsets, strict=False) if j > i]


def relayed(
    stream: bytes,
    *,
    lift: bool,
    store: Store,
    pieces: int = 1,
    max_image: int | None = None,
    chunks: Sequence[bytes] | None = None,
) -> tuple[list[Any], list[SSEEvent]]:
    """(the payloads a client gets, as JSON where they are JSON; the parsed events)."""

    async def go() -> tuple[list[Any], list[SSEEvent]]:
        lifter = ImageLifter(max_run=max_image) if lift else None
        parser = SSEParser(lifter=lifter)
        rewriter = StreamRewriter(store, max_image=max_image, decoded=store.bytes_in)
        events: list[SSEEvent] = []
        for chunk in chunks or cut(stream, step=-(-len(stream) // pieces)):
            events += parser.feed(chunk)
        events += parser.close()
        out: list[str] = []
        for event in events:
            assert event.data is not None
            out += await rewriter.feed(event.data, event.lifted)
        out += await rewriter.finish()
        return [parsed(p) for p in out], events

    return asyncio.run(go())


def contents(payloads: list[Any]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content", "") for p in payloads if isinstance(p, dict)
    )


def same_either_way(stream: bytes, **kw: Any) -> tuple[list[Any], list[SSEEvent], Store]:
    """Relayed with and without lifting (the same payloads), then again lifted in chunks of
    4 KB, of 997 bytes, and byte by byte around every backslash and every ``;base64,``: the
    same payloads, the same number of images lifted from each event, the same images stored."""
    fail, keep = kw.pop("fail", False), kw.pop("keep", None)
    store = Store(fail=fail, keep=keep)
    lifted_out, events = relayed(stream, lift=True, store=store, **kw)
    plain_out, _ = relayed(stream, lift=False, store=Store(fail=fail, keep=keep), **kw)
    assert lifted_out == plain_out
    marks = [i + d for i, byte in enumerate(stream) if byte == 0x5C for d in (0, 1, 2)]
    start = 0
    while (found := stream.find(b";base64,", start)) >= 0:
        marks += range(found, found + 12)
        start = found + 1
    for chunks in (
        cut(stream, step=4096),
        cut(stream, step=997),
        cut(stream, step=4096, at=marks[:400]),
    ):
        again = Store(fail=fail, keep=keep)
        out, evs = relayed(stream, lift=True, store=again, chunks=chunks, **kw)
        assert out == lifted_out
        assert [len(e.lifted) for e in evs] == [len(e.lifted) for e in events]
        assert (again.texts, again.decoded) == (store.texts, store.decoded)
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


def test_lifter_image_past_the_answer_cap_left_out_with_no_token_or_base64() -> None:
    other = base64.b64encode(make_image("PNG", 90_000, seed=4)).decode()
    stream = line(f"![a](data:image/png;base64,{PNG}) and ![b](data:image/png;base64,{other})")
    out, events, store = same_either_way(stream, keep=1)
    assert len(events[0].lifted) == 2 and len(store.decoded) == 1
    assert contents(out) == "![a](http://gw/images/1.png) and "


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


def test_lifter_crlf_stream_lifted_and_same() -> None:
    stream = line(f"![c](data:image/png;base64,{PNG}) ok").replace(b"\n", b"\r\n")
    out, events, store = same_either_way(stream)
    assert contents(out) == "![c](http://gw/images/1.png) ok"
    assert events[0].lifted and store.decoded == [base64.b64decode(PNG)]


@pytest.mark.parametrize("bad", [",", "==", "*", "\\u0041"])
def test_lifter_run_broken_midway_left_in_text(bad: str) -> None:
    middle = len(PNG) // 2 // 4 * 4
    text = f"x data:image/png;base64,{PNG[:middle]}{bad}{PNG[middle:]} y"
    stream = (
        b"data: "
        + json.dumps({**META, "choices": [{"index": 0, "delta": {"content": text}}]})
        .encode()
        .replace(b"\\\\u", b"\\u")
        + b"\n\n"
    )
    out, events, _ = same_either_way(stream, fail=True)
    assert events[0].lifted == {}
    assert contents(out) == json.loads(json.dumps(text).replace("\\\\u", "\\u"))


def test_lifter_stream_ending_inside_an_image_same_as_text() -> None:
    stream = line(f"![a](data:image/png;base64,{PNG}) z")
    out, _, store = same_either_way(stream[: len(stream) // 2])
    assert out == [stream[6 : len(stream) // 2].decode()] and store.decoded == []


def test_parser_line_past_max_event_refused_while_its_image_streams() -> None:
    stream = line(f"![a](data:image/png;base64,{PNG})")
    parser = SSEParser(max_event=len(stream) // 2, lifter=ImageLifter())
    with pytest.raises(EventTooLarge):
        for chunk in cut(stream, step=4096):
            parser.feed(chunk)


def test_parser_image_arriving_in_chunks_never_held_as_text() -> None:
    image = make_image("PNG", 3_000_000, seed=9)
    encoded = base64.b64encode(image)
    body = b'{"choices":[{"index":0,"delta":{"content":"![a](data:image/png;base64,'
    chunks = cut(b"data: " + body + encoded + b')"}}]}\n\n', step=65536)
    parser = SSEParser(lifter=ImageLifter())
    tracemalloc.start()
    try:
        events = [event for chunk in chunks for event in parser.feed(chunk)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (lifted,) = events[0].lifted.values()
    assert lifted.data == image
    # the decoded pieces and their join (1.5x); a buffered line and its image would be 1.9x
    assert peak < 1.6 * len(encoded), peak / len(encoded)


@st.composite
def _bursts(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A data line with one image's base64 (maybe escaped, maybe broken somewhere), a second
    event after it, LF or CRLF; and the stream cut in chunks at random places."""
    data = base64.b64decode(PNG)
    run = base64.b64encode(data[: len(data) - draw(st.integers(0, 2))])
    if draw(st.booleans()):
        at = draw(st.integers(0, len(run) // 4)) * 4 + draw(st.sampled_from([0, 0, 1, 2, 3]))
        junk = draw(st.sampled_from([b",", b"*", b"QQ==", b"\\u0041", b"\\n", b" ", b")", b"A"]))
        run = run[:at] + junk + run[at:]
    if draw(st.booleans()):
        run = run.replace(b"/", b"\\/")
    head = b'data: {"id":"c1","object":"chat.completion.chunk","created":7,"model":"m",'
    head += b'"choices":[{"index":0,"delta":{"content":"'
    head += draw(st.sampled_from([b"", b"![a](", b"see "])) + b"data:image/png;base64,"
    tail = draw(st.sampled_from([b")", b") after", b"", b" after"])) + b'"}}]}\n\n'
    tail += b'data: {"choices":[{"index":0,"delta":{"content":"next"}}]}\n\n'
    stream = head + run + tail
    if draw(st.booleans()):
        stream = stream.replace(b"\n", b"\r\n")
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=30))
    step = draw(st.sampled_from([512, 4096, 65536, len(stream)]))
    return stream, cut(stream, step=step, at=cuts)


@settings(max_examples=60, deadline=None)
@given(_bursts())
def test_lifter_any_chunking_of_a_burst_same_as_text(case: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = case
    lifted, _ = relayed(stream, lift=True, store=Store(), chunks=chunks)
    plain, _ = relayed(stream, lift=False, store=Store())
    assert lifted == plain


def test_lifter_padding_inside_a_run_cut_right_after_it_left_in_text() -> None:
    middle = len(PNG) // 2 // 4 * 4
    text = f"x data:image/png;base64,{PNG[:middle]}QQ=={PNG[middle:]} y"
    stream = line(text)
    after = stream.index(b"QQ==") + 4
    for chunks in (cut(stream, step=4096, at=[after]), [stream[:after], stream[after:]]):
        out, events = relayed(stream, lift=True, store=Store(), chunks=chunks)
        assert events[0].lifted == {} and contents(out) == text
