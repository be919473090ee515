"""Reading an Images API answer as it arrives: long base64 strings cut out, written, put back.

Real ``IncomingImage``s on a real ``LocalCache`` in a temporary folder: the bytes that land in
the temporary files are compared with the images that were encoded, and every test checks that
no ``.tmp-`` file outlives an image that was given up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import picgate.storage.local as local_module
from picgate.gateway.image_answer import STREAM_FROM, ImageAnswerReader, placeholders_in
from picgate.library.records import new_image_id
from picgate.storage.codec import decode_base64
from picgate.storage.incoming import IncomingImage, Received
from picgate.storage.local import TMP_PREFIX, LocalCache
from tests.support.images import b64, make_image

MAX_BYTES = 16 * 2**20
# raw bytes whose base64 is exactly STREAM_FROM characters (65536 is a multiple of 4)
AT_STREAM_FROM = STREAM_FROM * 3 // 4


class Recorder:
    """``start_image`` for a reader: real IncomingImages on ``cache``, remembered in order."""

    def __init__(self, cache: LocalCache, max_bytes: int = MAX_BYTES) -> None:
        self.cache = cache
        self.max_bytes = max_bytes
        self.started: list[IncomingImage] = []

    def __call__(self) -> IncomingImage:
        image = IncomingImage(self.cache, new_image_id(), max_bytes=self.max_bytes)
        self.started.append(image)
        return image


def make_reader(
    cache: LocalCache, max_bytes: int = MAX_BYTES
) -> tuple[ImageAnswerReader, Recorder]:
    recorder = Recorder(cache, max_bytes)
    return ImageAnswerReader(recorder), recorder


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"{TMP_PREFIX}*"))


def split_at(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``body`` cut at every offset in ``cuts`` (offsets out of range or repeated are dropped)."""
    points = sorted({c for c in cuts if 0 < c < len(body)})
    chunks, last = [], 0
    for point in points:
        chunks.append(body[last:point])
        last = point
    chunks.append(body[last:])
    return chunks


def every(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def feed_all(reader: ImageAnswerReader, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        reader.feed(chunk)


def answer_with(*texts: str, **extra: Any) -> dict[str, Any]:
    return {"created": 1700000000, "data": [{"b64_json": t} for t in texts], **extra}


async def results_of(images: Iterable[IncomingImage]) -> list[Received | None]:
    return [await image.result() for image in images]


@pytest.fixture
def cache(tmp_path: Path) -> LocalCache:
    cache = LocalCache(tmp_path / "images")
    cache.ensure()
    return cache


# -- the property: any answer, any chunking ---------------------------------------------------

# pieces of text that JSON escapes or that need care: quotes, backslashes, a literal "\u00e9"
SPECIALS = ['"', "\\", "/", "\u00e9", "\n", "\t", "\x00", "\u2028", "中", "\U0001f98a", "\\u00e9"]


def texts(max_pieces: int) -> st.SearchStrategy[str]:
    piece = st.sampled_from(SPECIALS) | st.characters(codec="utf-8")
    return st.lists(piece, max_size=max_pieces).map("".join)


PROMPTS = st.none() | texts(40)
EXTRA_VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
    texts(20),
    st.lists(st.integers(0, 9), max_size=3),
)
EXTRA_KEYS = (
    st.lists(st.sampled_from([*SPECIALS, "k", "x"]), min_size=1, max_size=4)
    .map("".join)
    .filter(lambda k: k not in ("b64_json", "url", "revised_prompt"))
)
# approximate image sizes: inline (< 48 KB of bytes, < 64 KiB of text), around the threshold,
# and up to ~300 KB (400 KB of text)
IMAGE_SIZES = st.one_of(
    st.integers(300, 40_000), st.integers(46_000, 52_000), st.integers(52_000, 300_000)
)
ITEMS = st.lists(
    st.fixed_dictionaries(
        {"size": IMAGE_SIZES, "seed": st.integers(1, 4)},
        optional={
            "revised_prompt": PROMPTS,
            "extra": st.dictionaries(EXTRA_KEYS, EXTRA_VALUES, max_size=3),
        },
    ),
    min_size=1,
    max_size=3,
)
DUMPS = st.sampled_from(
    [
        {},
        {"separators": (",", ":")},
        {"ensure_ascii": False},
        {"separators": (",", ":"), "ensure_ascii": False},
        {"indent": 1, "ensure_ascii": False},
    ]
)


def build_answer(items: list[dict[str, Any]], top_extra: dict[str, Any]) -> dict[str, Any]:
    data = []
    for i, item in enumerate(items):
        entry: dict[str, Any] = dict(item.get("extra", {}))
        # a seed of its own: each image's text occurs once in the body
        entry["b64_json"] = b64(make_image("PNG", item["size"], seed=item["seed"] * 10 + i))
        if "revised_prompt" in item:
            entry["revised_prompt"] = item["revised_prompt"]
        data.append(entry)
    return {"created": 1700000000, **top_extra, "data": data, "usage": {"total_tokens": 7}}


def decoded(answer: Any, streamed: dict[str, bytes]) -> Any:
    """``answer`` with placeholders replaced by their bytes and every data[].b64_json decoded."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return streamed.get(value, value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    out = walk(answer)
    for item in out["data"]:
        if isinstance(item["b64_json"], str):
            item["b64_json"] = base64.b64decode(item["b64_json"], validate=True)
    return out


def draw_cuts(data: st.DataObject, body: bytes, long_strings: list[tuple[int, int]]) -> list[int]:
    """Chunk boundaries: random ones, often one inside a long string past its STREAM_FROM mark,
    some right at quotes and backslashes, a run of 1-byte chunks (often across a long string's
    STREAM_FROM mark)."""
    cuts = data.draw(st.lists(st.integers(1, len(body) - 1), max_size=30), label="random cuts")
    for start, length in long_strings:
        if data.draw(st.booleans(), label="a chunk ends in this long string"):
            cuts.append(data.draw(st.integers(start + STREAM_FROM, start + length)))
    specials = [i for i, byte in enumerate(body) if byte in b'"\\']
    if specials:
        at = data.draw(st.lists(st.sampled_from(specials), max_size=12), label="special bytes")
        shift = data.draw(st.sampled_from([-1, 0, 1]), label="shift")
        cuts += [i + shift for i in at]
    window_starts = [max(0, start + STREAM_FROM - 100) for start, _ in long_strings]
    start = data.draw(
        st.sampled_from(window_starts) if window_starts else st.integers(0, len(body)),
        label="1-byte run start",
    )
    width = data.draw(st.integers(0, 300), label="1-byte run width")
    cuts += range(start, start + width)
    return cuts


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    items=ITEMS,
    top_extra=st.dictionaries(EXTRA_KEYS, EXTRA_VALUES, max_size=2),
    dumps=DUMPS,
    data=st.data(),
)
def test_reader_any_answer_any_chunking_restores_same_answer(
    items: list[dict[str, Any]],
    top_extra: dict[str, Any],
    dumps: dict[str, Any],
    data: st.DataObject,
) -> None:
    answer = build_answer(items, top_extra)
    body = json.dumps(answer, **dumps).encode("utf-8")
    texts = [item["b64_json"] for item in answer["data"]]
    starts: list[int] = []
    for text in texts:
        starts.append(body.index(text.encode("ascii"), starts[-1] + 1 if starts else 0))
    long_strings = [
        (s, len(t)) for s, t in zip(starts, texts, strict=True) if len(t) >= STREAM_FROM
    ]
    chunks = split_at(body, draw_cuts(data, body, long_strings))
    ends = set()  # offsets in the body where a chunk ends (the body's own end excluded)
    offset = 0
    for chunk in chunks[:-1]:
        offset += len(chunk)
        ends.add(offset)

    with tempfile.TemporaryDirectory() as folder:
        cache = LocalCache(Path(folder))
        reader, recorder = make_reader(cache)
        feed_all(reader, chunks)
        parsed = reader.finish()
        assert reader.body == body
        assert reader.usable
        results = asyncio.run(_results_by_key(reader))
        assert all(r is not None for r in results.values()), "a plain base64 image was refused"
        received = {k: r for k, r in results.items() if r is not None}

        # every placeholder is one data[i].b64_json, standing nowhere else
        assert sorted(placeholders_in(parsed, reader.images)) == sorted(reader.images)
        cut = {i for i, item in enumerate(parsed["data"]) if item["b64_json"] in reader.images}
        # a string is cut out when a chunk ends inside it after STREAM_FROM bytes of its text
        expected_cut = {
            i
            for i, (s, t) in enumerate(zip(starts, texts, strict=True))
            if any(s + STREAM_FROM <= e <= s + len(t) for e in ends)
        }
        assert cut == expected_cut
        event(f"{len(cut)} of {len(texts)} images cut out")
        assert len(recorder.started) == len(cut)

        streamed = {k: r.data for k, r in received.items()}
        assert decoded(parsed, streamed) == decoded(json.loads(body), {})
        for r in received.values():
            assert r.temp.parent == cache.root / r.image_id[:2]
            assert r.temp.name.startswith(TMP_PREFIX)
            assert r.temp.read_bytes() == r.data
            assert r.sha256 == hashlib.sha256(r.data).hexdigest()
            r.discard()
        assert temp_files(cache.root) == []


async def _results_by_key(reader: ImageAnswerReader) -> dict[str, Received | None]:
    return {key: await image.result() for key, image in reader.images.items()}


# -- where the cut happens ----------------------------------------------------------------------


async def test_reader_one_byte_chunks_cuts_image_and_writes_same_bytes(cache: LocalCache) -> None:
    image = make_image("PNG", 70_000, seed=7)
    body = json.dumps(answer_with(b64(image), revised_prompt='a "fox" \\ caf\u00e9')).encode()
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, 1))
    parsed = reader.finish()
    assert reader.usable and reader.body == body
    [key] = reader.images
    assert parsed["data"][0]["b64_json"] == key
    assert parsed["revised_prompt"] == 'a "fox" \\ caf\u00e9'
    [received] = await results_of(recorder.started)
    assert received is not None and received.data == image
    received.discard()
    assert temp_files(cache.root) == []


def test_reader_whole_answer_in_one_chunk_keeps_strings_inline(cache: LocalCache) -> None:
    image = make_image("PNG", 200_000, seed=8)
    body = json.dumps(answer_with(b64(image))).encode()
    reader, recorder = make_reader(cache)
    reader.feed(body)
    assert reader.finish() == json.loads(body)
    assert reader.images == {} and recorder.started == []


@pytest.mark.parametrize(
    "length,cut", [(STREAM_FROM - 4, False), (STREAM_FROM, True), (STREAM_FROM + 4, True)]
)
async def test_reader_string_length_at_stream_from_decides_cut(
    cache: LocalCache, length: int, cut: bool
) -> None:
    raw = random.Random(length).randbytes(length * 3 // 4)
    text = b64(raw)
    assert len(text) == length
    body = json.dumps(answer_with(text)).encode()
    closing = body.index(text.encode()) + len(text)  # the chunk ends right before the quote
    reader, recorder = make_reader(cache)
    feed_all(reader, split_at(body, [closing]))
    parsed = reader.finish()
    assert (parsed["data"][0]["b64_json"] in reader.images) is cut
    assert len(recorder.started) == int(cut)
    if cut:
        [received] = await results_of(recorder.started)
        assert received is not None and received.data == raw
        received.discard()
    else:
        assert parsed == json.loads(body)


async def test_reader_long_key_becomes_placeholder_in_keys(cache: LocalCache) -> None:
    key_text = b64(random.Random(3).randbytes(AT_STREAM_FROM * 2))
    body = json.dumps({"data": [], key_text: 1}).encode()
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, 4096))
    parsed = reader.finish()
    [placeholder] = reader.images
    assert parsed == {"data": [], placeholder: 1}
    assert placeholders_in(parsed, reader.images) == [placeholder]
    reader.discard()
    assert await results_of(recorder.started) == [None]
    assert temp_files(cache.root) == []


# -- escapes: the reader gives up, the whole body still parses ---------------------------------


async def test_reader_every_slash_escaped_keeps_string_inline(cache: LocalCache) -> None:
    image = make_image("PNG", 300_000, seed=9)
    body = json.dumps(answer_with(b64(image))).replace("/", "\\/").encode()  # as PHP writes it
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, 8192))
    parsed = reader.finish()
    assert reader.body == body
    # the first ``\/`` comes long before STREAM_FROM: the string is never cut out
    assert recorder.started == []
    assert parsed == json.loads(body)
    assert decode_base64(parsed["data"][0]["b64_json"]) == image


def _escaped_after(text: str, start: int, escape: str) -> str:
    """``text`` as JSON string content, escaped (``\\/`` or ``\\n`` line breaks) past ``start``."""
    head, tail = text[:start], text[start:]
    if escape == "slash":
        return head + tail.replace("/", "\\/")
    return head + "\\n".join(tail[i : i + 76] for i in range(0, len(tail), 76))


@pytest.mark.parametrize("escape", ["slash", "newline"])
@pytest.mark.parametrize("chunk", [1000, 4096, 65536])
async def test_reader_escape_after_cut_gives_up_and_body_parses(
    cache: LocalCache, escape: str, chunk: int
) -> None:
    image = make_image("PNG", 150_000, seed=10)
    text = b64(image)
    start = 140_000  # past the first chunk end beyond STREAM_FROM, for every chunk size here
    assert "/" in text[start:]
    content = _escaped_after(text, start, escape)
    body = ('{"created":1,"data":[{"b64_json":"' + content + '"}]}').encode()
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, chunk))
    assert len(recorder.started) == 1  # it was cut out before the first escape arrived
    assert not reader.usable
    parsed = reader.finish()
    assert reader.body == body
    assert parsed == json.loads(body)
    assert decode_base64(parsed["data"][0]["b64_json"]) == image  # what the ordinary path does
    assert await results_of(recorder.started) == [None]
    assert temp_files(cache.root) == []


@pytest.mark.parametrize("where", ["before", "after"])
async def test_reader_chunk_boundary_at_backslash_after_cut_gives_up(
    cache: LocalCache, where: str
) -> None:
    text = b64(random.Random(5).randbytes(AT_STREAM_FROM * 2))
    content = text[:100_000] + "\\/" + text[100_000:]
    body = ('{"data":[{"b64_json":"' + content + '"}]}').encode()
    backslash = body.index(b"\\")
    boundary = backslash if where == "before" else backslash + 1
    reader, recorder = make_reader(cache)
    feed_all(reader, split_at(body, [STREAM_FROM + 100, boundary]))
    assert not reader.usable
    assert reader.finish() == json.loads(body)
    assert await results_of(recorder.started) == [None]


async def test_reader_escape_in_second_image_discards_written_first(cache: LocalCache) -> None:
    first = make_image("PNG", 2_000_000, seed=11)
    second = b64(make_image("PNG", 150_000, seed=12))
    content = second[:90_000] + "\\n" + second[90_000:]
    body = ('{"data":[{"b64_json":"' + b64(first) + '"},{"b64_json":"' + content + '"}]}').encode()
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, 16384))
    # the first image was complete (closed, being written) before the escape arrived
    assert len(recorder.started) == 2 and not reader.usable
    parsed = reader.finish()
    assert parsed == json.loads(body)
    assert await results_of(recorder.started) == [None, None]
    assert temp_files(cache.root) == []


async def test_reader_escaped_quote_in_long_prompt_stays_inline(cache: LocalCache) -> None:
    prompt = 'say "cheese" ' * 10_000
    image = make_image("PNG", 30_000, seed=13)
    body = json.dumps({"data": [{"b64_json": b64(image), "revised_prompt": prompt}]}).encode()
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, 1024))
    assert reader.finish() == json.loads(body)
    assert recorder.started == []


# -- long strings that are not plain base64 ------------------------------------------------------

NOT_BASE64 = {
    "prose with spaces": "lorem ipsum dolor sit amet " * 4000,
    "data URL": "data:image/png;base64," + b64(make_image("PNG", 100_000, seed=14)),
    "URL-safe alphabet": base64.urlsafe_b64encode(bytes(range(256)) * 400).decode(),
    "no padding": b64(random.Random(15).randbytes(AT_STREAM_FROM * 2 + 1)).rstrip("="),
    "non-ASCII": "caf\u00e9 \u4e2d\u6587 " * 10_000,
    "padding in the middle": b64(b"ab") * 30_000,
    "junk after padding": b64(random.Random(16).randbytes(AT_STREAM_FROM * 2 + 2)) + "QQ",
}


@pytest.mark.parametrize("name", sorted(NOT_BASE64))
async def test_reader_long_string_not_base64_gives_no_image_no_temp(
    cache: LocalCache, name: str
) -> None:
    text = NOT_BASE64[name]
    assert "\\" not in text and '"' not in text
    body = json.dumps(answer_with(text), ensure_ascii=False).encode()
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, 8192))
    parsed = reader.finish()
    assert reader.usable  # nothing in the text itself is unusual
    [key] = reader.images
    assert parsed["data"][0]["b64_json"] == key
    assert await results_of(recorder.started) == [None]
    assert temp_files(cache.root) == []
    assert json.loads(reader.body)["data"][0]["b64_json"] == text


# -- IncomingImage on its own ------------------------------------------------------------------


async def test_incoming_text_in_pieces_writes_temp_with_bytes_and_hash(cache: LocalCache) -> None:
    data = make_image("PNG", 500_000, seed=17)
    text = b64(data).encode()
    image = IncomingImage(cache, new_image_id(), max_bytes=MAX_BYTES)
    for piece in split_at(text, [1, 2, 3, 1000, 65536, 300_001]):
        image.feed(piece)
    received = await image.result()
    assert received is not None
    assert received.image_id == image.image_id
    assert received.data == data
    assert received.sha256 == hashlib.sha256(data).hexdigest()
    assert received.temp.parent == cache.root / image.image_id[:2]
    assert received.temp.name.startswith(TMP_PREFIX)
    assert received.temp.read_bytes() == data
    assert await image.result() is received  # asking twice gives the same answer
    received.discard()
    received.discard()  # already gone: no error
    assert temp_files(cache.root) == []


@pytest.mark.parametrize("text", [b"", None])
async def test_incoming_empty_or_never_fed_is_none(cache: LocalCache, text: bytes | None) -> None:
    image = IncomingImage(cache, new_image_id(), max_bytes=MAX_BYTES)
    if text is not None:
        image.feed(text)
    assert await image.result() is None
    assert list(cache.root.iterdir()) == []


@settings(max_examples=50, deadline=None)
@given(raw=st.binary(min_size=1, max_size=3000), cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_incoming_padded_standard_base64_any_pieces_gives_bytes(
    raw: bytes, cuts: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        image = IncomingImage(LocalCache(Path(folder)), new_image_id(), max_bytes=MAX_BYTES)
        for piece in split_at(base64.b64encode(raw), cuts):
            image.feed(piece)
        received = asyncio.run(image.result())
        assert received is not None and received.data == raw
        assert received.temp.read_bytes() == raw
        received.discard()


def _stdlib_strict(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from("AQgw+/=-_ \n\u00e9"), max_size=16))
def test_incoming_accepts_only_what_ordinary_decoding_reads_the_same(text: str) -> None:
    # the contract: whatever the fast path accepts, the ordinary path decodes to the same bytes
    with tempfile.TemporaryDirectory() as folder:
        image = IncomingImage(LocalCache(Path(folder)), new_image_id(), max_bytes=MAX_BYTES)
        image.feed(text.encode())
        received = asyncio.run(image.result())
        if received is not None:
            assert received.data
            assert received.data == decode_base64(text) == _stdlib_strict(text.encode())
            received.discard()
        assert temp_files(Path(folder)) == []


async def test_incoming_text_over_limit_is_none_and_writes_nothing(cache: LocalCache) -> None:
    max_bytes = 3000  # text limit: 3000 * 4 // 3 + 4 = 4004
    image = IncomingImage(cache, new_image_id(), max_bytes=max_bytes)
    text = b64(random.Random(18).randbytes(3006)).encode()  # 4008 characters
    image.feed(text[:4000])
    image.feed(text[4000:])
    assert await image.result() is None
    assert list(cache.root.iterdir()) == []


async def test_incoming_text_at_limit_is_accepted(cache: LocalCache) -> None:
    raw = random.Random(19).randbytes(3003)  # 4004 characters: exactly the limit
    image = IncomingImage(cache, new_image_id(), max_bytes=3000)
    image.feed(b64(raw).encode())
    received = await image.result()
    assert received is not None and received.data == raw
    received.discard()


async def test_incoming_abort_before_close_is_none_and_writes_nothing(cache: LocalCache) -> None:
    image = IncomingImage(cache, new_image_id(), max_bytes=MAX_BYTES)
    image.feed(b64(make_image("PNG", 200_000, seed=20)).encode())
    image.abort()
    image.close()
    image.feed(b"QUJD")
    assert await image.result() is None
    assert list(cache.root.iterdir()) == []


async def test_incoming_abort_right_after_close_is_none_and_removes_temp(
    cache: LocalCache,
) -> None:
    image = IncomingImage(cache, new_image_id(), max_bytes=MAX_BYTES)
    image.feed(b64(make_image("PNG", 6_000_000, seed=21)).encode())
    image.close()  # the write is under way in a pool thread
    image.abort()
    assert await image.result() is None
    assert temp_files(cache.root) == []


async def test_incoming_abort_after_result_removes_written_temp(cache: LocalCache) -> None:
    image = IncomingImage(cache, new_image_id(), max_bytes=MAX_BYTES)
    image.feed(b64(make_image("PNG", 20_000, seed=22)).encode())
    received = await image.result()
    assert received is not None and received.temp.exists()
    image.abort()
    assert not received.temp.exists()
    assert await image.result() is None


async def test_incoming_feed_after_close_is_ignored(cache: LocalCache) -> None:
    data = make_image("PNG", 5_000, seed=23)
    image = IncomingImage(cache, new_image_id(), max_bytes=MAX_BYTES)
    image.feed(b64(data).encode())
    image.close()
    image.feed(b"QUJD")
    received = await image.result()
    assert received is not None and received.data == data
    received.discard()


async def test_incoming_write_fails_midway_is_none_and_removes_temp(
    cache: LocalCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, data: bytes | memoryview) -> None:
        os.write(fd, bytes(data[:1000]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_module, "write_all", disk_full)
    image = IncomingImage(cache, new_image_id(), max_bytes=MAX_BYTES)
    image.feed(b64(make_image("PNG", 50_000, seed=24)).encode())
    assert await image.result() is None
    assert temp_files(cache.root) == []


async def test_incoming_shard_folder_unusable_is_none(cache: LocalCache) -> None:
    image_id = new_image_id()
    (cache.root / image_id[:2]).write_bytes(b"not a folder")
    image = IncomingImage(cache, image_id, max_bytes=MAX_BYTES)
    image.feed(b64(make_image("PNG", 5_000, seed=25)).encode())
    assert await image.result() is None


# -- answers cut short ---------------------------------------------------------------------------

TRUNCATED_IMAGE = make_image("PNG", 300_000, seed=26)
TRUNCATED_BODY = json.dumps(
    {"data": [{"b64_json": b64(TRUNCATED_IMAGE), "revised_prompt": "a fox in the snow"}]},
    separators=(",", ":"),
).encode()
IMAGE_START = TRUNCATED_BODY.index(b"iVBOR")
IMAGE_END = TRUNCATED_BODY.index(b'"', IMAGE_START)
PROMPT_AT = TRUNCATED_BODY.index(b"a fox")


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(0, id="empty"),
        pytest.param(IMAGE_START + 1000, id="in the image before the cut"),
        pytest.param(IMAGE_START + 200_000, id="in the image after the cut"),
        pytest.param(IMAGE_END, id="before the image's closing quote"),
        pytest.param(PROMPT_AT + 3, id="in a later string"),
        pytest.param(len(TRUNCATED_BODY) - 2, id="before the closing brackets"),
    ],
)
async def test_reader_truncated_answer_raises_json_error_and_leaves_no_temp(
    cache: LocalCache, length: int
) -> None:
    body = TRUNCATED_BODY[:length]
    reader, recorder = make_reader(cache)
    feed_all(reader, every(body, 4096))
    with pytest.raises(json.JSONDecodeError):
        reader.finish()
    assert not reader.usable and reader.body == body
    reader.discard()
    assert await results_of(recorder.started) == [None] * len(recorder.started)
    assert temp_files(cache.root) == []


# -- placeholders_in -----------------------------------------------------------------------------


def test_placeholders_in_finds_keys_nested_lists_and_dicts(cache: LocalCache) -> None:
    images = {f"pgfeedn{i}": IncomingImage(cache, new_image_id(), max_bytes=10) for i in range(4)}
    answer = {
        "pgfeedn0": 1,
        "data": [
            {"b64_json": "pgfeedn1", "n": 3, "none": None},
            ["x", ["pgfeedn2", {"deep": ["pgfeedn1"]}]],
        ],
        "meta": {"pgfeedn3": "pgfeedn3", "other": "pgfeedn9", "num": 1.5, "flag": True},
        "pgfeedn": "not a placeholder either",
    }
    assert sorted(placeholders_in(answer, images)) == [
        "pgfeedn0",
        "pgfeedn1",
        "pgfeedn1",
        "pgfeedn2",
        "pgfeedn3",
        "pgfeedn3",
    ]


@pytest.mark.parametrize("value", ["pgfeedn0", ["pgfeedn0"], {"pgfeedn0": "pgfeedn0"}])
def test_placeholders_in_no_images_finds_nothing(value: Any) -> None:
    assert placeholders_in(value, {}) == []


JSON_TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(["p0", "p1", "p2", "q", ""]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["p0", "p1", "a", "b"]), inner, max_size=3)
    ),
    max_leaves=20,
)


def _count(value: Any, names: set[str]) -> list[str]:
    if isinstance(value, str):
        return [value] if value in names else []
    if isinstance(value, list):
        return [n for v in value for n in _count(v, names)]
    if isinstance(value, dict):
        keys = [k for k in value if k in names]
        return keys + [n for v in value.values() for n in _count(v, names)]
    return []


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=JSON_TREES)
def test_placeholders_in_any_tree_counts_every_occurrence(cache: LocalCache, tree: Any) -> None:
    images = {name: IncomingImage(cache, new_image_id(), max_bytes=10) for name in ("p0", "p1")}
    assert sorted(placeholders_in(tree, images)) == sorted(_count(tree, {"p0", "p1"}))
