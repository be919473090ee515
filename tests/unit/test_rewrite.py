"""Response rewriting: images in every upstream shape become links; everything else is untouched."""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import itertools
import json
import random
import re
import struct
import zlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picgate.gateway.rewrite import LEFT_OUT, StreamRewriter, rewrite_completion, rewrite_text
from picgate.gateway.sse import SSEEvent, SSEParser, encode_comment, encode_event
from tests.support.fixtures import FIXTURES

T = TypeVar("T")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ONE_PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
ONE_PIXEL_URL = f"data:image/png;base64,{ONE_PIXEL}"
LINK = re.compile(r"!\[[^\]\n]*\]\(http://gw/images/\d+\.png\)")


def fixtures_dir() -> Path:
    return FIXTURES


def load_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((fixtures_dir() / name).read_text())
    return data


def stream_payloads(name: str) -> list[str]:
    """The data payloads of a captured stream (its '#' notes are not part of the wire)."""
    lines = (fixtures_dir() / name).read_bytes().split(b"\n")
    parser = SSEParser()
    events = parser.feed(b"\n".join(line for line in lines if not line.startswith(b"#")))
    return [e.data for e in events + parser.close() if e.data is not None]


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    noise = random.Random(seed)
    rows = b"".join(b"\x00" + noise.randbytes(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_MAGIC
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


BIG_B64 = base64.b64encode(png_bytes(24, 24, seed=1)).decode()
BIG_URL = f"data:image/png;base64,{BIG_B64}"


def is_png(raw: bytes) -> bool:
    """A whole PNG: signature, then chunks with good CRCs, ending with IEND."""
    if not raw.startswith(PNG_MAGIC):
        return False
    at = len(PNG_MAGIC)
    while at + 12 <= len(raw):
        length = int.from_bytes(raw[at : at + 4])
        kind_and_data = raw[at + 4 : at + 8 + length]
        crc = int.from_bytes(raw[at + 8 + length : at + 12 + length])
        if zlib.crc32(kind_and_data) != crc:
            return False
        at += 12 + length
        if kind_and_data[:4] == b"IEND":
            return at == len(raw)
    return False


class RecordingSink:
    """Stores what decodes to a whole PNG (like the real store, which refuses non-raster data)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.stored = 0

    async def __call__(self, image: str) -> str | None:
        # a data URL or bare base64, as the sink's contract allows: recorded as its base64
        encoded = image.split(",", 1)[1] if image.startswith("data:") else image
        self.calls.append(encoded)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            return None
        if not is_png(raw):
            return None
        self.stored += 1
        return f"http://gw/images/{self.stored}.png"


async def failing_sink(image: str) -> str | None:
    return None


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def chunk(content: Any = None, *, index: int = 0, finish: str | None = None, **extra: Any) -> str:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    delta.update(extra)
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m"}
    return json.dumps({**body, "choices": [choice]})


async def run_stream(payloads: list[str], sink: Any) -> list[str]:
    rewriter = StreamRewriter(sink)
    out: list[str] = []
    for payload in payloads:
        out += await rewriter.feed(payload)
    return out + await rewriter.finish()


def deltas(out: list[str], *, index: int = 0, field: str = "content") -> list[str]:
    found: list[str] = []
    for payload in out:
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload).get("choices") or []:
            value = choice["delta"].get(field)
            if choice["index"] == index and isinstance(value, str):
                found.append(value)
    return found


def client_text(out: list[str], *, index: int = 0, field: str = "content") -> str:
    return "".join(deltas(out, index=index, field=field))


def split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# --- non-streaming -------------------------------------------------------------------------


def test_rewrite_completion_openai_body_without_images_returned_unchanged() -> None:
    body = load_json("openai_chat_completion.json")
    sink = RecordingSink()

    result = run(rewrite_completion(body, sink))

    assert result is body
    assert result == load_json("openai_chat_completion.json")
    assert sink.calls == []


def test_rewrite_completion_openrouter_images_appended_and_field_removed() -> None:
    body = load_json("openrouter_chat_images.json")
    sink = RecordingSink()

    result = run(rewrite_completion(body, sink))

    message = result["choices"][0]["message"]
    assert (
        message["content"] == "Here is a sunset over mountains.\n\n![image](http://gw/images/1.png)"
    )
    assert "images" not in message
    assert list(message) == ["role", "content", "refusal", "reasoning"]
    assert sink.calls == [ONE_PIXEL]
    assert result["usage"] == body["usage"]
    assert list(result) == list(body)


def test_rewrite_completion_newapi_markdown_replaced_in_place() -> None:
    body = load_json("newapi_markdown_image.json")

    result = run(rewrite_completion(body, RecordingSink()))

    expected = "Here is your image.\n![image](http://gw/images/1.png)"
    assert result["choices"][0]["message"]["content"] == expected
    assert {k: v for k, v in result.items() if k != "choices"} == {
        k: v for k, v in body.items() if k != "choices"
    }


def test_rewrite_completion_input_body_not_mutated() -> None:
    body = load_json("openrouter_chat_images.json")
    before = copy.deepcopy(body)

    run(rewrite_completion(body, RecordingSink()))

    assert body == before


def test_rewrite_completion_failing_sink_keeps_every_image() -> None:
    body = load_json("openrouter_chat_images.json")
    body["choices"][0]["message"]["content"] = f"a ![cat]({ONE_PIXEL_URL}) b"

    message = run(rewrite_completion(body, failing_sink))["choices"][0]["message"]

    assert message["content"] == f"a ![cat]({ONE_PIXEL_URL}) b\n\n![image]({ONE_PIXEL_URL})"
    assert "images" not in message


def test_rewrite_completion_b64_json_not_stored_gets_sniffed_data_url() -> None:
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0 not really").decode()
    body = {"choices": [{"message": {"content": None, "image": {"b64_json": jpeg}}}]}

    message = run(rewrite_completion(body, failing_sink))["choices"][0]["message"]

    assert message == {"content": f"![image](data:image/jpeg;base64,{jpeg})"}


def test_rewrite_completion_image_shapes_all_become_markdown() -> None:
    images = [
        {"type": "image_url", "image_url": ONE_PIXEL_URL},
        ONE_PIXEL_URL,
        {"url": ONE_PIXEL},
        {"type": "image_url", "image_url": {"url": "https://cdn.example/x.png"}},
    ]
    body = {"choices": [{"message": {"role": "assistant", "images": images, "x": 1}}]}
    sink = RecordingSink()

    message = run(rewrite_completion(body, sink))["choices"][0]["message"]

    links = [f"![image](http://gw/images/{n}.png)" for n in (1, 2, 3)]
    assert message == {
        "role": "assistant",
        "content": "\n\n".join([*links, "![image](https://cdn.example/x.png)"]),
        "x": 1,
    }
    assert list(message) == ["role", "content", "x"]
    assert sink.calls == [ONE_PIXEL, ONE_PIXEL, ONE_PIXEL]


def test_rewrite_completion_unknown_image_item_kept_in_images() -> None:
    odd = {"type": "image_url", "weird": True}
    body = {"choices": [{"message": {"content": "hi", "images": [odd, ONE_PIXEL_URL]}}]}

    message = run(rewrite_completion(body, RecordingSink()))["choices"][0]["message"]

    assert message == {
        "content": "hi\n\n![image](http://gw/images/1.png)",
        "images": [odd],
    }


def test_rewrite_completion_content_parts_joined_into_string() -> None:
    parts = [
        {"type": "text", "text": "Here:"},
        {"type": "image_url", "image_url": {"url": ONE_PIXEL_URL}},
        {"type": "text", "text": "done"},
    ]
    body = {"choices": [{"message": {"content": parts}}]}

    message = run(rewrite_completion(body, RecordingSink()))["choices"][0]["message"]

    assert message["content"] == "Here:\n\n![image](http://gw/images/1.png)\n\ndone"


def test_rewrite_completion_content_parts_with_unknown_part_kept_as_list() -> None:
    parts = [
        {"type": "thinking", "thinking": "hm"},
        {"type": "image_url", "image_url": BIG_URL},
    ]
    body = {"choices": [{"message": {"content": parts}}]}

    message = run(rewrite_completion(body, RecordingSink()))["choices"][0]["message"]

    assert message["content"] == [
        {"type": "thinking", "thinking": "hm"},
        {"type": "text", "text": "![image](http://gw/images/1.png)"},
    ]


def test_rewrite_completion_text_only_parts_returned_unchanged() -> None:
    body = {"choices": [{"message": {"content": [{"type": "text", "text": "plain"}]}}]}

    assert run(rewrite_completion(body, RecordingSink())) is body


def test_rewrite_completion_reasoning_content_image_replaced_in_reasoning() -> None:
    message = {"content": "", "reasoning_content": f"thinking {ONE_PIXEL_URL} done"}
    body = {"choices": [{"message": message}]}

    result = run(rewrite_completion(body, RecordingSink()))["choices"][0]["message"]

    assert result == {
        "content": "",
        "reasoning_content": "thinking ![image](http://gw/images/1.png) done",
    }


def test_rewrite_completion_several_choices_each_rewritten() -> None:
    body = {
        "choices": [
            {
                "index": i,
                "message": {"content": f"{i} ![p{i}]({BIG_URL})"},
                "finish_reason": "stop",
            }
            for i in range(3)
        ]
    }

    result = run(rewrite_completion(body, RecordingSink()))

    contents = [c["message"]["content"] for c in result["choices"]]
    assert contents == [f"{i} ![p{i}](http://gw/images/{i + 1}.png)" for i in range(3)]
    assert [list(c) for c in result["choices"]] == [list(c) for c in body["choices"]]


def test_rewrite_completion_other_fields_pass_through_in_order() -> None:
    message = {
        "role": "assistant",
        "content": f"x ![a]({ONE_PIXEL_URL})",
        "tool_calls": [
            {
                "id": "t",
                "type": "function",
                "function": {"name": "f", "arguments": "{}"},
            }
        ],
        "function_call": None,
        "refusal": None,
        "annotations": [],
    }
    body = {
        "id": "1",
        "choices": [{"index": 0, "message": message, "logprobs": None}],
        "usage": {},
    }

    result = run(rewrite_completion(body, RecordingSink()))

    out = result["choices"][0]["message"]
    assert list(out) == list(message)
    assert {k: v for k, v in out.items() if k != "content"} == {
        k: v for k, v in message.items() if k != "content"
    }
    assert out["content"] == "x ![a](http://gw/images/1.png)"


def test_rewrite_text_two_images_alt_kept_and_text_identical() -> None:
    text = f"A ![cat]({ONE_PIXEL_URL}) B {BIG_URL}. ![]({ONE_PIXEL_URL})"

    result = run(rewrite_text(text, RecordingSink()))

    expected = "A ![cat](http://gw/images/1.png) B ![image](http://gw/images/2.png). "
    assert result == expected + "![image](http://gw/images/3.png)"


@pytest.mark.parametrize(
    "text",
    [
        "![x](https://example.com/a.png) and ![y](/images/a.png)",
        "data:image/svg+xml;utf8,<svg></svg>",
        "![x](data:image/png;base64,) and data:image/png;base64, end",
        "data:image/;base64,AAAA data:image/png;charset=x,AAAA",
        "![unterminated alt ](data:text/plain;base64,AAAA)",
    ],
)
def test_rewrite_text_not_an_image_left_alone(text: str) -> None:
    sink = RecordingSink()

    assert run(rewrite_text(text, sink)) == text
    assert sink.calls == []


def test_rewrite_text_alt_longer_than_limit_replaces_data_url_only() -> None:
    alt = "a" * 201

    result = run(rewrite_text(f"![{alt}]({ONE_PIXEL_URL})", RecordingSink()))

    assert result == f"![{alt}](![image](http://gw/images/1.png))"


def test_rewrite_text_subtype_longer_than_limit_left_alone() -> None:
    text = f"data:image/{'x' * 65};base64,{ONE_PIXEL}"
    sink = RecordingSink()

    assert run(rewrite_text(text, sink)) == text
    assert sink.calls == []


def test_rewrite_completion_odd_shapes_pass_through() -> None:
    bodies: list[dict[str, Any]] = [
        {"object": "list"},
        {"choices": ["x", {"message": None}, {"message": {"images": [7], "image": 5}}]},
        {"choices": [{"message": {"content": None, "images": []}}]},
    ]
    for body in bodies:
        assert run(rewrite_completion(body, RecordingSink())) is body


def test_rewrite_text_markdown_without_closing_paren_replaces_data_url_only() -> None:
    text = f'![a]({ONE_PIXEL_URL} "title")'

    result = run(rewrite_text(text, RecordingSink()))

    assert result == '![a](![image](http://gw/images/1.png) "title")'


# --- streaming ---------------------------------------------------------------------------


def test_stream_rewriter_openai_fixture_forwarded_as_same_strings() -> None:
    payloads = stream_payloads("openai_chat_stream_chunks.txt")

    out = run(run_stream(payloads, RecordingSink()))

    assert out == payloads
    assert all(a is b for a, b in zip(out, payloads, strict=True))


def test_stream_rewriter_newapi_fixture_image_replaced_in_its_delta() -> None:
    payloads = stream_payloads("newapi_markdown_stream_chunks.txt")

    out = run(run_stream(payloads, RecordingSink()))

    assert len(out) == len(payloads)
    assert deltas(out) == ["", "Here is your image", "![image](http://gw/images/1.png)"]
    assert [a for a, b in zip(out, payloads, strict=True) if a != b] == [out[2]]
    assert json.loads(out[2])["id"] == json.loads(payloads[2])["id"]


def test_stream_rewriter_openrouter_fixture_images_delta_becomes_markdown() -> None:
    payloads = stream_payloads("openrouter_stream_chunks.txt")
    sink = RecordingSink()

    out = run(run_stream(payloads, sink))

    image_delta = json.loads(out[1])["choices"][0]["delta"]
    assert image_delta == {
        "role": "assistant",
        "content": "\n\n![image](http://gw/images/1.png)",
    }
    assert out[0] == payloads[0]
    assert out[2:] == payloads[2:]
    assert sink.calls == [ONE_PIXEL]


def test_stream_rewriter_openrouter_images_failing_sink_keeps_data_url() -> None:
    payloads = [chunk("", images=[{"type": "image_url", "image_url": {"url": ONE_PIXEL_URL}}])]

    out = run(run_stream(payloads, failing_sink))

    assert json.loads(out[0])["choices"][0]["delta"] == {"content": f"![image]({ONE_PIXEL_URL})"}


def test_stream_rewriter_data_url_split_every_char_yields_one_image_delta() -> None:
    text = f"Look: ![art]({BIG_URL}) nice"
    payloads = [chunk(piece) for piece in split(text, 1)] + [
        chunk(finish="stop"),
        "[DONE]",
    ]
    sink = RecordingSink()

    out = run(run_stream(payloads, sink))

    sent = deltas(out)
    assert "".join(sent) == "Look: ![art](http://gw/images/1.png) nice"
    assert [d for d in sent if "![" in d or "(" in d] == ["![art](http://gw/images/1.png)"]
    assert sink.calls == [BIG_B64]
    assert out[-1] == "[DONE]"


def test_stream_rewriter_plain_text_goes_out_at_once() -> None:
    rewriter = StreamRewriter(RecordingSink())
    payload = chunk("Hello there")

    assert run(rewriter.feed(payload)) == [payload]


def test_stream_rewriter_trailing_bang_held_until_decided() -> None:
    rewriter = StreamRewriter(RecordingSink())

    first = run(rewriter.feed(chunk("Wow!")))
    second = run(rewriter.feed(chunk(" Yes")))

    assert deltas(first) == ["Wow"]
    assert deltas(second) == ["! Yes"]


def test_stream_rewriter_held_text_sent_before_finish_reason_chunk() -> None:
    finish = chunk(finish="stop")
    payloads = [chunk("A ![alt"), finish, "[DONE]"]

    out = run(run_stream(payloads, RecordingSink()))

    assert deltas(out) == ["A ", "![alt"]
    synthesized = json.loads(out[1])
    assert {k: synthesized[k] for k in ("id", "object", "created", "model")} == {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
    }
    assert synthesized["choices"] == [
        {"index": 0, "delta": {"content": "![alt"}, "finish_reason": None}
    ]
    assert out[2:] == [finish, "[DONE]"]


def test_stream_rewriter_finish_chunk_with_text_carries_held_text() -> None:
    out = run(run_stream([chunk("x d"), chunk("one", finish="stop")], RecordingSink()))

    assert deltas(out) == ["x ", "done"]
    assert json.loads(out[1])["choices"][0]["finish_reason"] == "stop"


def test_stream_rewriter_two_images_in_one_delta() -> None:
    text = f"a ![one]({ONE_PIXEL_URL}) b {BIG_URL} c"
    sink = RecordingSink()

    out = run(run_stream([chunk(text)], sink))

    assert deltas(out) == ["a ![one](http://gw/images/1.png) b ![image](http://gw/images/2.png) c"]
    assert sink.calls == [ONE_PIXEL, BIG_B64]


def test_stream_rewriter_image_in_reasoning_content_replaced_there() -> None:
    reasoning = f"plan ![draft]({BIG_URL}) ok"
    payloads = [chunk(reasoning_content=p) for p in split(reasoning, 50)]
    payloads += [chunk("final"), chunk(finish="stop")]

    out = run(run_stream(payloads, RecordingSink()))

    assert client_text(out, field="reasoning_content") == "plan ![draft](http://gw/images/1.png) ok"
    assert client_text(out) == "final"


def test_stream_rewriter_several_choices_keep_state_per_index() -> None:
    texts = {0: f"zero {BIG_URL} end", 1: f"one ![b]({ONE_PIXEL_URL})!"}
    pieces = {i: split(t, 17) for i, t in texts.items()}
    payloads = []
    for n in range(max(len(p) for p in pieces.values())):
        for i in (1, 0):
            if n < len(pieces[i]):
                payloads.append(chunk(pieces[i][n], index=i))
    payloads += [chunk(index=0, finish="stop"), chunk(index=1, finish="stop")]
    sink = RecordingSink()

    out = run(run_stream(payloads, sink))

    assert sorted(sink.calls) == sorted([BIG_B64, ONE_PIXEL])
    url = {call: f"http://gw/images/{n}.png" for n, call in enumerate(sink.calls, 1)}
    assert client_text(out, index=0) == f"zero ![image]({url[BIG_B64]}) end"
    assert client_text(out, index=1) == f"one ![b]({url[ONE_PIXEL]})!"


def test_stream_rewriter_error_chunk_mid_stream_flushes_held_text_first() -> None:
    error = stream_payloads("openai_stream_error_chunk.txt")[0]

    out = run(run_stream([chunk("partial ![x](data:image/pn"), error, "[DONE]"], RecordingSink()))

    assert deltas(out) == ["partial ", "![x](data:image/pn"]
    assert out[2:] == [error, "[DONE]"]


def test_stream_rewriter_usage_chunk_passes_through_after_held_text() -> None:
    usage = json.dumps({"id": "c1", "choices": [], "usage": {"total_tokens": 3}})

    out = run(run_stream([chunk("the end"), usage, "[DONE]"], RecordingSink()))

    assert deltas(out) == ["the en", "d"]
    assert out[-2:] == [usage, "[DONE]"]


def test_stream_rewriter_stream_ending_inside_data_url_stores_it() -> None:
    out = run(run_stream([chunk("see "), *(chunk(p) for p in split(BIG_URL, 99))], RecordingSink()))

    assert deltas(out)[-1] == "![image](http://gw/images/1.png)"
    assert client_text(out) == "see ![image](http://gw/images/1.png)"


def test_stream_rewriter_failing_sink_sends_original_text() -> None:
    text = f"a ![x]({BIG_URL}) b"

    out = run(run_stream([chunk(p) for p in split(text, 7)], failing_sink))

    assert client_text(out) == text


def test_stream_rewriter_tool_call_and_role_chunks_pass_through() -> None:
    call = [
        {
            "index": 0,
            "id": "t1",
            "type": "function",
            "function": {"name": "f", "arguments": ""},
        }
    ]
    payloads = [
        chunk("", role="assistant"),
        chunk(tool_calls=call),
        chunk(finish="tool_calls"),
    ]

    out = run(run_stream(payloads, RecordingSink()))

    assert out == payloads


def test_stream_rewriter_content_parts_delta_joined() -> None:
    parts = [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": BIG_URL}},
    ]

    out = run(run_stream([chunk("ok!"), chunk(parts)], RecordingSink()))

    assert deltas(out) == ["ok", "!hi\n\n![image](http://gw/images/1.png)"]


def test_stream_rewriter_choice_without_delta_passes_through() -> None:
    payload = json.dumps({"id": "c1", "choices": [{"index": 0, "message": {"content": "d"}}]})

    assert run(run_stream([payload], RecordingSink())) == [payload]


def test_stream_rewriter_non_json_payload_passes_through() -> None:
    out = run(run_stream(["not json"], RecordingSink()))

    assert out == ["not json"]


def test_stream_rewriter_sse_pipeline_forwards_comments_and_images() -> None:
    raw = (fixtures_dir() / "openrouter_stream_chunks.txt").read_bytes()
    raw = b"\n".join(line for line in raw.split(b"\n") if not line.startswith(b"#"))

    async def pipeline() -> bytes:
        parser, rewriter, sent = SSEParser(), StreamRewriter(RecordingSink()), b""
        for i in range(0, len(raw), 100):
            for event in parser.feed(raw[i : i + 100]):
                sent += b"".join(encode_comment(c) for c in event.comments)
                if event.data is not None:
                    sent += b"".join(encode_event(p) for p in await rewriter.feed(event.data))
        return sent

    events = SSEParser().feed(run(pipeline()))

    assert events[0] == SSEEvent(comments=["OPENROUTER PROCESSING"])
    assert events[-1].is_done
    assert "base64" not in "".join(e.data or "" for e in events)


# --- properties ------------------------------------------------------------------------------

NOISE = [
    "!", "![", "](", "[", "]", "(", ")", "d", "da", "data:", "data:image/", "image/png",
    ";base64,", "iVBOR", "AAAA", "==", "+/", " ", "\n", "é", "🎨", "data:image/png;base64,",
    "![x](", "![x](data:image/png;base64,", "![a]b", "data:image/png;base64,iVBORw0KGgo",
]  # fmt: skip
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
_noise = st.lists(st.one_of(_text, st.sampled_from(NOISE)), max_size=14).map("".join)
_image = st.one_of(
    st.just(ONE_PIXEL_URL),
    st.builds(lambda alt: f"![{alt}]({ONE_PIXEL_URL})", st.text(alphabet="ab !-", max_size=4)),
)
_with_images = st.lists(st.one_of(_text, st.sampled_from(NOISE), _image), max_size=10).map("".join)


@st.composite
def _split_text(draw: st.DrawFn, text: st.SearchStrategy[str]) -> list[str]:
    whole = draw(text)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=20)))
    bounds = [0, *cuts, len(whole)]
    return [whole[a:b] for a, b in itertools.pairwise(bounds)]


def _stream_of(pieces: list[str]) -> list[str]:
    return [chunk(p) for p in pieces] + [chunk(finish="stop"), "[DONE]"]


@settings(max_examples=150, deadline=None)
@given(_split_text(_with_images))
def test_stream_rewriter_any_split_equals_unsplit_rewrite(pieces: list[str]) -> None:
    whole_sink, stream_sink = RecordingSink(), RecordingSink()
    expected = run(rewrite_text("".join(pieces), whole_sink))

    out = run(run_stream(_stream_of(pieces), stream_sink))

    assert client_text(out) == expected
    assert stream_sink.calls == whole_sink.calls
    links_per_delta = sum(len(LINK.findall(d)) for d in deltas(out))
    assert links_per_delta == len(LINK.findall(expected)) == stream_sink.stored


@settings(max_examples=150, deadline=None)
@given(_split_text(_noise))
def test_stream_rewriter_noise_not_an_image_passes_byte_identical(
    pieces: list[str],
) -> None:
    text = "".join(pieces)

    out = run(run_stream(_stream_of(pieces), RecordingSink()))

    assert client_text(out) == text
    assert run(rewrite_text(text, RecordingSink())) == text


@settings(max_examples=100, deadline=None)
@given(_split_text(_with_images))
def test_stream_rewriter_failing_sink_any_split_keeps_text(pieces: list[str]) -> None:
    out = run(run_stream(_stream_of(pieces), failing_sink))

    assert client_text(out) == "".join(pieces)


def test_stream_rewriter_image_over_max_image_in_small_chunks_raises_too_large() -> None:
    from picgate.errors import UpstreamError

    sink = RecordingSink()
    rewriter = StreamRewriter(sink, max_image=10_000)
    run(rewriter.feed(chunk("look: data:image/png;base64,")))
    with pytest.raises(UpstreamError) as caught:
        for _ in range(200):  # 200 x 100 characters: past the cap half way, never stored
            run(rewriter.feed(chunk("A" * 100)))
    assert caught.value.code == "upstream_image_too_large"
    assert caught.value.status_code == 502
    assert sink.calls == []


def test_stream_rewriter_image_at_max_image_is_stored() -> None:
    sink = RecordingSink()
    rewriter = StreamRewriter(sink, max_image=len(BIG_B64))
    pieces = [BIG_URL[i : i + 50] for i in range(0, len(BIG_URL), 50)]
    out: list[str] = []
    for piece in pieces:
        out += run(rewriter.feed(chunk(piece)))
    out += run(rewriter.finish())
    assert sink.calls == [BIG_B64]
    assert LINK.search("".join(deltas(out)))


def _left_out_after(first: int) -> Any:
    """A sink that links the first ``first`` images and leaves the rest out."""
    seen = 0

    async def sink(payload: str) -> str | None:
        nonlocal seen
        seen += 1
        return f"https://gw/images/{seen}.png" if seen <= first else LEFT_OUT

    return sink


PIXEL = "data:image/png;base64,iVBORw0KGgo="


def test_rewrite_completion_left_out_images_removed_text_kept() -> None:
    message = {
        "role": "assistant",
        "content": f"a ![x]({PIXEL}) b ![y]({PIXEL}) c",
        "images": [{"type": "image_url", "image_url": {"url": PIXEL}}],
    }
    body = {"choices": [{"index": 0, "message": message}]}
    out = asyncio.run(rewrite_completion(body, _left_out_after(1)))
    content = out["choices"][0]["message"]["content"]
    assert content == "a ![x](https://gw/images/1.png) b  c"
    assert "images" not in out["choices"][0]["message"]


def test_stream_rewriter_left_out_images_leave_no_markdown_or_separator() -> None:
    async def run() -> list[dict[str, Any]]:
        rewriter = StreamRewriter(_left_out_after(1))
        chunks = []
        for delta in (
            {"content": "hi"},
            {"images": [{"type": "image_url", "image_url": {"url": PIXEL}}]},
            {"images": [{"type": "image_url", "image_url": {"url": PIXEL}}]},
        ):
            event = {"choices": [{"index": 0, "delta": delta}]}
            chunks += [json.loads(p) for p in await rewriter.feed(json.dumps(event))]
        chunks += [json.loads(p) for p in await rewriter.finish()]
        return chunks

    texts = [
        c["choices"][0]["delta"].get("content", "") for c in asyncio.run(run()) if c["choices"]
    ]
    assert "".join(texts) == "hi\n\n![image](https://gw/images/1.png)"
