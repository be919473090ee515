"""Small WebP previews for the image grid, made with Pillow and kept on disk.

Decoding refuses images over ``MAX_PIXELS`` (decompression bombs), whatever Pillow's default:
measured from the headers of the image and of every frame (GIF, APNG, animated WebP), then
enforced again by Pillow as a hard ``DecompressionBombError``.
Thumbnails live in ``{images dir}/../thumbs/{id[:2]}/{id}.webp`` and are written atomically;
a thumbnail is derived data, so losing the folder costs only the time to make them again.
"""

from __future__ import annotations

import io
import os
import secrets
import warnings
from pathlib import Path

from picgate.errors import PicGateError, UnsupportedMediaType
from picgate.storage.codec import decoded_size, sniff
from picgate.storage.local import ID_PATTERN

# 4096×4096: above every size current image models produce. Decoding costs ~8 bytes a pixel
# at its peak (a 4096² PNG: ~130 MB RSS; the former 64 M-pixel cap let one preview take ~500 MB,
# measured in docs/RELIABILITY.md), and the grid asks for several previews at once.
MAX_PIXELS = 4096 * 4096
SIZE = 320
QUALITY = 78


def thumbs_dir(images_dir: Path) -> Path:
    return images_dir.parent / "thumbs"


def thumb_path(root: Path, image_id: str) -> Path:
    if not ID_PATTERN.match(image_id):
        raise ValueError("invalid image id")
    return root / image_id[:2] / f"{image_id}.webp"


def make_thumbnail(data: bytes, *, size: int = SIZE) -> bytes:
    """A WebP no larger than ``size``×``size``; UnsupportedMediaType for undecodable or huge input."""
    # the size from the headers of the image and of every frame, before Pillow decodes
    # anything; checked here rather than with warnings.catch_warnings, whose filter swap is
    # process-wide and races between threads
    try:
        dims = decoded_size(data, sniff(data))
    except PicGateError as exc:
        raise UnsupportedMediaType("image cannot be decoded") from exc
    if dims is None or dims[0] * dims[1] > MAX_PIXELS:
        raise UnsupportedMediaType("image is too large to preview")
    # imported here: only the admin grid decodes images, and Lambda's cold start need not wait
    from PIL import Image, ImageOps

    # Pillow's own check, should a header still lie to us: it *warns* above MAX_IMAGE_PIXELS and
    # raises DecompressionBombError only above twice that. Half our limit makes the error
    # start exactly at MAX_PIXELS; the warning below it is noise for images already measured.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
            img.seek(0)
            frame = ImageOps.exif_transpose(img)
            frame.thumbnail((size, size), Image.Resampling.LANCZOS)
            mode = "RGBA" if frame.mode in ("RGBA", "LA", "P", "PA") else "RGB"
            out = io.BytesIO()
            frame.convert(mode).save(out, "WEBP", quality=QUALITY, method=4)
            return out.getvalue()
    except Image.DecompressionBombError as exc:
        raise UnsupportedMediaType("image is too large to preview") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of saying "not an image"
        raise UnsupportedMediaType("image cannot be decoded") from exc


def cached_thumbnail(root: Path, image_id: str) -> bytes | None:
    try:
        return thumb_path(root, image_id).read_bytes()
    except FileNotFoundError:
        return None


def save_thumbnail(root: Path, image_id: str, data: bytes) -> None:
    path = thumb_path(root, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{secrets.token_hex(6)}"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def drop_thumbnail(root: Path, image_id: str) -> None:
    thumb_path(root, image_id).unlink(missing_ok=True)
