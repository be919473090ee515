"""SSE parser: line endings, chunk boundaries, comments, long lines, and the captured streams."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picgate.gateway.sse import SSEEvent, SSEParser, encode_comment, encode_event
from tests.support.fixtures import FIXTURES

STREAM_FIXTURES = [
    "openai_chat_stream_chunks.txt",
    "openrouter_stream_chunks.txt",
    "newapi_markdown_stream_chunks.txt",
    "openai_stream_error_chunk.txt",
]


def fixtures_dir() -> Path:
    return FIXTURES


def wire_bytes(name: str) -> bytes:
    """A captured stream as sent on the wire: the fixture's '#' notes are not part of it."""
    lines = (fixtures_dir() / name).read_bytes().split(b"\n")
    return b"\n".join(line for line in lines if not line.startswith(b"#"))


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.close()


def datas(events: list[SSEEvent]) -> list[str | None]:
    return [event.data for event in events]


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_sse_parser_captured_stream_yields_json_payloads_then_done(name: str) -> None:
    events = [e for e in parse(wire_bytes(name)) if e.data is not None]

    assert events[-1].is_done
    for event in events[:-1]:
        assert isinstance(json.loads(event.data or ""), dict)


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_sse_parser_captured_stream_byte_by_byte_equals_whole(name: str) -> None:
    raw = wire_bytes(name)

    assert parse(*(raw[i : i + 1] for i in range(len(raw)))) == parse(raw)


def test_sse_parser_openrouter_keepalive_yields_comment_only_event() -> None:
    events = parse(wire_bytes("openrouter_stream_chunks.txt"))

    assert events[0] == SSEEvent(data=None, comments=["OPENROUTER PROCESSING"])
    assert all(not e.comments for e in events[1:])


def test_sse_parser_comment_block_dispatched_before_stream_continues() -> None:
    parser = SSEParser()

    assert parser.feed(b": ping\n\ndata: {") == [SSEEvent(comments=["ping"])]


def test_sse_parser_comment_inside_event_kept_with_its_data() -> None:
    events = parse(b":keep-alive\ndata: x\n:  two spaces\n\n")

    assert events == [SSEEvent(data="x", comments=["keep-alive", " two spaces"])]


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_sse_parser_any_line_ending_parses_alike(newline: bytes) -> None:
    raw = b"data: a\nevent: e\ndata: b\n\ndata: [DONE]\n\n".replace(b"\n", newline)

    assert parse(raw) == [SSEEvent(data="a\nb", event="e"), SSEEvent(data="[DONE]")]


def test_sse_parser_crlf_split_between_chunks_is_one_line_break() -> None:
    events = parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")

    assert datas(events) == ["a\nb"]


def test_sse_parser_cr_at_chunk_end_releases_line_at_once() -> None:
    parser = SSEParser()

    assert datas(parser.feed(b"data: a\r\r")) == ["a"]
    assert parser.feed(b"\ndata: b\n\n") == [SSEEvent(data="b")]


def test_sse_parser_utf8_split_inside_character_decodes() -> None:
    raw = "data: 你好 🎨 ü\n\n".encode()

    assert datas(parse(*(raw[i : i + 1] for i in range(len(raw))))) == ["你好 🎨 ü"]


def test_sse_parser_invalid_utf8_replaced_not_raised() -> None:
    assert datas(parse(b"data: \xff\xfe ok\n\n")) == ["\ufffd\ufffd ok"]


def test_sse_parser_space_after_colon_optional_and_single() -> None:
    events = parse(b"data:a\n\ndata:  b\n\ndata\n\ndata:\n\n")

    assert datas(events) == ["a", " b", "", ""]


def test_sse_parser_event_id_retry_fields_parsed() -> None:
    events = parse(b"event: image\nid: 7\nretry: 1500\ndata: {}\n\n")

    assert events == [SSEEvent(data="{}", event="image", id="7", retry=1500)]


def test_sse_parser_bad_retry_and_nul_id_ignored() -> None:
    events = parse(b"retry: 1.5\nid: a\x00b\ndata: x\n\n")

    assert events == [SSEEvent(data="x")]


def test_sse_parser_unknown_fields_only_block_yields_nothing() -> None:
    assert parse(b"foo: bar\nbaz\n\n\n\n") == []


def test_sse_parser_close_flushes_event_without_blank_line() -> None:
    parser = SSEParser()

    assert parser.feed(b"data: a\n\ndata: [DONE]") == [SSEEvent(data="a")]
    assert parser.close() == [SSEEvent(data="[DONE]")]
    assert parser.close() == []


def test_sse_parser_close_after_trailing_newline_flushes_event() -> None:
    assert datas(parse(b"data: last\n")) == ["last"]


def test_sse_parser_leading_bom_dropped_even_when_split() -> None:
    assert datas(parse(b"\xef", b"\xbb", b"\xbfdata: x\n\n")) == ["x"]


def test_sse_parser_multi_megabyte_line_in_small_chunks_parsed() -> None:
    payload = b"A" * (4 * 1024 * 1024)
    raw = b'data: {"b64":"' + payload + b'"}\n\n'
    parser = SSEParser()
    events: list[SSEEvent] = []
    for i in range(0, len(raw), 4096):
        events += parser.feed(raw[i : i + 4096])

    assert len(events) == 1
    assert json.loads(events[0].data or "")["b64"] == payload.decode()


def test_encode_event_multiline_data_one_data_line_each() -> None:
    assert encode_event('{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event("a\nb\r\nc") == b"data: a\ndata: b\ndata: c\n\n"


def test_encode_comment_keepalive_parses_back_as_comment() -> None:
    raw = encode_comment("OPENROUTER PROCESSING")

    assert raw == b": OPENROUTER PROCESSING\n\n"
    assert parse(raw) == [SSEEvent(comments=["OPENROUTER PROCESSING"])]


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r")))
def test_encode_event_any_text_parses_back_equal(text: str) -> None:
    assert datas(parse(encode_event(text))) == [text]


def test_encode_event_lone_surrogate_replaced_not_raised() -> None:
    assert encode_event("a\ud800b") == b"data: a?b\n\n"


_line_value = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=12,
)
_line = st.one_of(
    st.builds(lambda v: "data: " + v, _line_value),
    st.builds(lambda v: "data:" + v, _line_value),
    st.builds(lambda v: ": " + v, _line_value),
    st.builds(lambda v: "event: " + v, _line_value),
    st.just("data: [DONE]"),
    st.just(""),
)


@st.composite
def _stream_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    lines = draw(st.lists(_line, max_size=20))
    endings = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines)))
    raw = "".join(line + end for line, end in zip(lines, endings, strict=False)).encode()
    cuts = draw(st.lists(st.integers(0, len(raw)), max_size=30))
    return raw, sorted(cuts)


@settings(max_examples=200, deadline=None)
@given(_stream_and_cuts())
def test_sse_parser_any_chunking_equals_unsplit_parse(
    case: tuple[bytes, list[int]],
) -> None:
    raw, cuts = case
    bounds = [0, *cuts, len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]

    assert parse(*chunks) == parse(raw)


@settings(max_examples=100, deadline=None)
@given(_stream_and_cuts())
def test_sse_parser_crlf_and_cr_parse_like_lf(case: tuple[bytes, list[int]]) -> None:
    raw, _ = case
    lf = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    assert parse(raw) == parse(lf)


_byte_value = st.lists(
    st.sampled_from([b"a", b"\xc3\xbc", b"\xe4\xbd", b"\xff", b"\xf0\x9f\x8e\xa8", b" ", b":"]),
    max_size=8,
).map(b"".join)


@st.composite
def _byte_stream_and_cuts(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    heads = st.sampled_from([b"data: ", b"data:", b": ", b"event: ", b"id: ", b""])
    lines = draw(st.lists(st.builds(bytes.__add__, heads, _byte_value), max_size=12))
    raw = b"\n".join(lines) + b"\n"
    return lines, sorted(draw(st.lists(st.integers(0, len(raw)), max_size=10)))


@settings(max_examples=200, deadline=None)
@given(_byte_stream_and_cuts())
def test_sse_parser_lf_fast_path_equals_line_by_line_path(
    case: tuple[list[bytes], list[int]],
) -> None:
    # LF-only chunks take the decode-at-once path (falling back on invalid UTF-8); CRLF chunks
    # always take the line-by-line path.
    lines, cuts = case
    lf = b"\n".join(lines) + b"\n"
    bounds = [0, *cuts, len(lf)]

    assert parse(*(lf[a:b] for a, b in itertools.pairwise(bounds))) == parse(
        b"\r\n".join(lines) + b"\r\n"
    )


def test_sse_parser_invalid_utf8_among_valid_lines_replaced_in_its_line_only() -> None:
    raw = b"data: ok\n\ndata: \xe4\xbd\ndata: \xff\n\ndata: \xe4\xbd\xa0\n\n"

    assert datas(parse(raw)) == ["ok", "\ufffd\n\ufffd", "你"]
    assert datas(parse(raw[:20], raw[20:])) == ["ok", "\ufffd\n\ufffd", "你"]


def test_sse_parser_lf_chunk_after_cr_chunk_keeps_crlf_as_one_break() -> None:
    parser = SSEParser()

    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\ndata: b\n") == [SSEEvent(data="a")]
    assert parser.feed(b"\n") == [SSEEvent(data="b")]


def test_sse_parser_line_without_newline_over_max_event_raises_and_frees() -> None:
    from picgate.gateway.sse import EventTooLarge

    parser = SSEParser(max_event=1_000_000)
    piece = b"x" * 65_536
    parser.feed(b"data: ")
    with pytest.raises(EventTooLarge):
        for _ in range(100):  # 6.5 MB offered; the buffer never passes the cap by a chunk
            parser.feed(piece)
            assert len(parser._buf) <= 1_000_000 + len(piece)
    assert len(parser._buf) == 0


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_sse_parser_event_of_many_lines_over_max_event_raises(ending: bytes) -> None:
    from picgate.gateway.sse import EventTooLarge

    parser = SSEParser(max_event=100_000)
    line = b"data: " + b"y" * 1000 + ending  # each line is short; the event is not
    with pytest.raises(EventTooLarge):
        for _ in range(200):
            parser.feed(line)


def test_sse_parser_event_at_max_event_passes() -> None:
    parser = SSEParser(max_event=100_000)
    events = parser.feed(b"data: " + b"z" * 100_000 + b"\n\n")
    assert [len(e.data or "") for e in events] == [100_000]
