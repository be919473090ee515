"""Real image bytes for tests, made with Pillow (cached per shape)."""

from __future__ import annotations

import base64
import functools
import io
import os

from PIL import Image

ONE_PIXEL_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@functools.lru_cache(maxsize=64)
def make_image(fmt: str = "PNG", approx_bytes: int = 20_000, seed: int = 0) -> bytes:
    """An image in ``fmt`` of roughly ``approx_bytes`` (noise compresses badly, as wanted)."""
    fmt = fmt.upper()
    # noise: ~3 bytes per pixel for PNG/WebP-lossless, fewer for JPEG at q=95
    per_pixel = {"PNG": 3.0, "JPEG": 1.6, "WEBP": 3.0, "GIF": 1.0}[fmt]
    side = max(8, int((approx_bytes / per_pixel) ** 0.5))
    rnd = os.urandom(side * side * 3) if seed == 0 else _seeded(side * side * 3, seed)
    img = Image.frombytes("RGB", (side, side), rnd)
    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, "JPEG", quality=95)
    elif fmt == "WEBP":
        img.save(out, "WEBP", lossless=True)
    elif fmt == "GIF":
        img.convert("P").save(out, "GIF")
    else:
        img.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _seeded(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def png_with_empty_chunks(count: int, *, between: bytes = b"") -> bytes:
    """A valid PNG with ``count`` empty ancillary chunks after its header (12 bytes each; 3.75
    million of them make a 45 MB file), then ``between`` raw, then the image data and IEND."""
    import struct
    import zlib

    png = make_image("PNG", 300, seed=9)
    empty = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    return png[:33] + empty * count + between + png[33:]
