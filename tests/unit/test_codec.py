"""Strict base64 decoding and sniffing of real image types."""

from __future__ import annotations

import base64
import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from picgate.errors import BadRequest, UnsupportedMediaType
from picgate.storage.codec import (
    GIF,
    JPEG,
    MAX_CHUNKS,
    PNG,
    WEBP,
    decode_base64,
    decoded_size,
    image_size,
    sniff,
)
from tests.support.images import make_image, png_with_empty_chunks

PNG_BYTES = make_image("PNG", 2_000, seed=11)


def test_decode_base64_plain_returns_bytes() -> None:
    assert decode_base64(base64.b64encode(PNG_BYTES).decode()) == PNG_BYTES


def test_decode_base64_data_url_any_label_returns_bytes() -> None:
    text = "data:image/jpeg;base64," + base64.b64encode(PNG_BYTES).decode()
    assert decode_base64(text) == PNG_BYTES  # the label lies; sniffing decides later


def test_decode_base64_urlsafe_without_padding_returns_bytes() -> None:
    text = base64.urlsafe_b64encode(PNG_BYTES).decode().rstrip("=")
    assert decode_base64(text) == PNG_BYTES


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_decode_base64_any_whitespace_split_returns_same_bytes(data: st.DataObject) -> None:
    urlsafe = data.draw(st.booleans())
    enc = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(PNG_BYTES[:300]).decode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(enc)), max_size=12)))
    ws = data.draw(st.sampled_from([" ", "\n", "\r\n", "\t", "  \n"]))
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(enc[last:cut])
        last = cut
    pieces.append(enc[last:])
    assert decode_base64(ws.join(pieces)) == PNG_BYTES[:300]


@pytest.mark.parametrize(
    "text",
    ["not base64 at all!", "data:image/png,plain", "abcde", "ab+c-d__", "====", "QUJD====="],
)
def test_decode_base64_malformed_raises_bad_request(text: str) -> None:
    with pytest.raises(BadRequest):
        decode_base64(text)


@pytest.mark.parametrize("fmt,kind", [("PNG", PNG), ("JPEG", JPEG), ("WEBP", WEBP), ("GIF", GIF)])
def test_sniff_real_images_returns_type_and_size(fmt: str, kind: object) -> None:
    data = make_image(fmt, 5_000, seed=5)
    assert sniff(data) is kind
    size = image_size(data, sniff(data))
    assert size is not None and size[0] > 0 and size[1] > 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89",
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"<!DOCTYPE html><html><script>alert(1)</script></html>",
        b"%PDF-1.7\n" + b"x" * 100,
        b"BM" + b"\x00" * 100,
    ],
)
def test_sniff_non_raster_raises_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        sniff(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_sniff_truncated_image_raises_unsupported(fmt: str) -> None:
    data = make_image(fmt, 5_000, seed=6)
    with pytest.raises(UnsupportedMediaType):
        sniff(data[: len(data) // 2])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_sniff_random_bytes_never_accepted_without_magic(data: bytes) -> None:
    magic = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"GIF87a", b"GIF89a")
    if data.startswith(magic):
        return
    with pytest.raises(UnsupportedMediaType):
        sniff(data)


# -- every frame counts ------------------------------------------------------------------------


def animation(fmt: str) -> bytes:
    """Two 8×8 frames, as Pillow writes an animated ``fmt``."""
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def test_decoded_size_gif_frame_larger_than_logical_screen() -> None:
    out = io.BytesIO()
    Image.new("P", (300, 200)).save(out, "GIF")
    data = bytearray(out.getvalue())
    data[6:10] = struct.pack("<HH", 1, 1)  # the logical screen claims 1×1
    assert image_size(bytes(data), GIF) == (1, 1)
    assert decoded_size(bytes(data), GIF) == (300, 200)


def test_decoded_size_gif_later_frame_offset_grows_the_canvas() -> None:
    data = bytearray(animation("GIF"))
    last = data.rindex(b"\x2c")  # the second frame's image descriptor
    data[last + 1 : last + 9] = struct.pack("<HHHH", 4000, 10, 8, 8)
    assert decoded_size(bytes(data), GIF) == (4008, 18)


def test_decoded_size_apng_second_frame_counts() -> None:
    data = bytearray(animation("PNG"))
    second = data.index(b"fcTL", data.index(b"fcTL") + 4)
    data[second + 8 : second + 24] = struct.pack(">IIII", 5000, 6000, 0, 0)
    assert image_size(bytes(data), PNG) == (8, 8)
    assert decoded_size(bytes(data), PNG) == (5000, 6000)


def test_decoded_size_animated_webp_frame_counts() -> None:
    data = bytearray(animation("WEBP"))
    frame = data.rindex(b"ANMF")
    data[frame + 14 : frame + 20] = (4999).to_bytes(3, "little") + (2999).to_bytes(3, "little")
    assert image_size(bytes(data), WEBP) == (8, 8)
    assert decoded_size(bytes(data), WEBP) == (5000, 3000)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP", "GIF"])
def test_decoded_size_still_image_is_its_header_size(kind: str) -> None:
    data = make_image(kind, 4_000)
    assert decoded_size(data, sniff(data)) == image_size(data, sniff(data))


def test_decoded_size_truncated_gif_is_none() -> None:
    data = animation("GIF")
    assert decoded_size(data[: len(data) // 2] + b";", GIF) is None


def test_sniff_png_of_millions_of_empty_chunks_accepted_walk_bounded() -> None:
    """Valid, and no longer a walk over 3.75 million chunks: past MAX_CHUNKS the file is judged
    by the chunks walked and its exact IEND tail."""
    assert sniff(png_with_empty_chunks(MAX_CHUNKS * 3)) is PNG


def test_sniff_png_past_max_chunks_only_tail_checked() -> None:
    """What the bound gives up, stated: bytes past MAX_CHUNKS sound chunks are not walked (a
    full walk refused this file); served as image/png with nosniff, they are never markup."""
    assert sniff(png_with_empty_chunks(MAX_CHUNKS, between=b"<html>junk")) is PNG
    with pytest.raises(UnsupportedMediaType):  # within the bound, a broken chain is refused
        sniff(png_with_empty_chunks(MAX_CHUNKS - 10, between=b"<html>junk"))


def test_sniff_png_past_max_chunks_without_iend_tail_refused() -> None:
    data = png_with_empty_chunks(MAX_CHUNKS + 5)
    with pytest.raises(UnsupportedMediaType):
        sniff(data[:-12] + b"<html></html>")


def test_decoded_size_png_with_more_chunks_than_a_walk_is_none() -> None:
    """Previews and variants measure every frame first: a file too long to walk is "too large"."""
    assert decoded_size(png_with_empty_chunks(MAX_CHUNKS + 1), PNG) is None
    assert decoded_size(png_with_empty_chunks(10), PNG) is not None
