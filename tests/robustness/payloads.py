"""Hostile inputs built byte by byte: script-carrying SVG, PNG polyglots, decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"

SVG_WITH_SCRIPT = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<script>alert(document.domain)</script><rect width="10" height="10"/></svg>'
)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, *, bit_depth: int = 8, color: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0))


def polyglot_png() -> bytes:
    """A structurally valid 1×1 PNG whose tEXt chunk is an HTML page with a script."""
    pixels = zlib.compress(b"\x00\x00")
    return (
        PNG_SIGNATURE
        + png_header(1, 1)
        + png_chunk(b"tEXt", b"Comment\x00" + HTML)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def fake_png_html() -> bytes:
    """Starts and ends like a PNG (signature, IHDR name, IEND trailer) but is an HTML page."""
    return PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR" + HTML + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit greyscale PNG of ``side``×``side`` pixels that compresses to a few KB."""
    row = b"\x00" + bytes((side + 7) // 8)
    packer = zlib.compressobj(9)
    block = row * 256
    parts = []
    for _ in range(side // 256):
        parts.append(packer.compress(block))
    parts.append(packer.compress(row * (side % 256)))
    parts.append(packer.flush())
    return (
        PNG_SIGNATURE
        + png_header(side, side, bit_depth=1, color=0)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def gif_bomb(width: int = 65_535, height: int = 65_535) -> bytes:
    """A tiny GIF whose logical screen and frame claim ``width``×``height`` pixels."""
    out = io.BytesIO()
    Image.new("P", (1, 1)).save(out, "GIF")
    data = bytearray(out.getvalue())
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    descriptor = data.index(b"\x2c")  # image descriptor: left, top, width, height
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def gif_frame_bomb(side: int = 5_700) -> bytes:
    """A GIF whose logical screen is 1×1 but whose one frame is ``side``×``side`` pixels of real
    (highly compressed) LZW data: the header passes any size check, and a decoder grows its
    canvas to the frame (5700²: ~32 M pixels, under twice Pillow's default limit)."""
    out = io.BytesIO()
    Image.new("P", (side, side)).save(out, "GIF")
    data = bytearray(out.getvalue())
    data[6:10] = struct.pack("<HH", 1, 1)
    return bytes(data)
