"""Image variants: the ``?w=&h=&format=&q=`` query of ``/images/{id}`` and the Pillow work.

Pure: bytes in, bytes out, no rows and no files. ``parse_variant_query`` turns a query into a
``VariantSpec`` (the grammar, sizes snapped to a ladder, is ``picgate.variant_query``) and
``render_variant`` makes the variant's bytes. A variant is never larger than its original:
asked sizes at or above the original's keep the original's size. ``w`` and ``h`` together fit
the image inside that box, keeping its aspect ratio.

Decoding refuses images over ``MAX_PIXELS`` (decompression bombs): measured from the headers of
the image and of every frame before Pillow decodes anything, then enforced again by Pillow as a
hard ``DecompressionBombError``. Animated images (GIF, APNG, animated WebP) are refused with a
400: resizing them frame by frame is not offered.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from picgate import variant_query
from picgate.errors import BadRequest, PicGateError, UnsupportedMediaType
from picgate.storage.codec import GIF, JPEG, PNG, WEBP, ImageType, decoded_size, sniff
from picgate.variant_query import VariantQuery

# 4096×4096: above every size current image models produce. Decoding costs ~8 bytes a pixel at
# its peak (a 4096² PNG: ~130 MB RSS; a 64 M-pixel cap let one resize take ~500 MB, measured in
# docs/RELIABILITY.md)
MAX_PIXELS = 4096 * 4096
AVIF = ImageType("image/avif", "avif")
FORMATS: dict[str, ImageType] = {"webp": WEBP, "avif": AVIF, "jpeg": JPEG, "png": PNG}
# what each lossy encoder uses when the query has no ``q``
DEFAULT_QUALITY: dict[str, int] = {"webp": 80, "avif": 60, "jpg": 82}
# bumped when rendering changes, so the ETags of variants made before differ
RENDER_VERSION = "1"


@dataclass(frozen=True)
class VariantSpec(VariantQuery):
    """A parsed variant query and what it means for one original: its output type, its file
    name in the cache, its ETag."""

    @classmethod
    def of(cls, query: VariantQuery) -> VariantSpec:
        return cls(query.width, query.height, query.format, query.quality)

    def output_type(self, original: ImageType) -> ImageType:
        return FORMATS[self.format] if self.format is not None else original

    def is_identity(self, original: ImageType) -> bool:
        """Whether the variant would be the original itself (no size, same type, no q)."""
        return (
            self.width is None
            and self.height is None
            and self.output_type(original) == original
            and (self.quality is None or original.ext not in DEFAULT_QUALITY)
        )

    def file_name(self, original: ImageType) -> str:
        """A name that differs for every distinct variant of one image, e.g. ``w512h0q80.webp``."""
        out = self.output_type(original)
        quality = self.effective_quality(out)
        q = f"q{quality}" if quality is not None else ""
        return f"w{self.width or 0}h{self.height or 0}{q}.{out.ext}"

    def effective_quality(self, out: ImageType) -> int | None:
        if out.ext not in DEFAULT_QUALITY:
            return None
        return self.quality if self.quality is not None else DEFAULT_QUALITY[out.ext]

    def etag(self, original_sha256: str, original: ImageType) -> str:
        """A strong ETag: the original's content hash, the variant's name and the renderer."""
        key = f"{RENDER_VERSION}:{original_sha256}:{self.file_name(original)}"
        return f'"{hashlib.sha256(key.encode()).hexdigest()}"'


def parse_variant_query(items: Iterable[tuple[str, str]]) -> VariantSpec | None:
    """``picgate.variant_query.parse_variant_query`` as a ``VariantSpec`` (None: no variant)."""
    query = variant_query.parse_variant_query(items)
    return None if query is None else VariantSpec.of(query)


def target_size(size: tuple[int, int], spec: VariantSpec) -> tuple[int, int]:
    """The variant's pixel size: inside the asked box, aspect ratio kept, never upscaled."""
    width, height = size
    scale = 1.0
    if spec.width is not None:
        scale = min(scale, spec.width / width)
    if spec.height is not None:
        scale = min(scale, spec.height / height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def too_large() -> PicGateError:
    return UnsupportedMediaType(
        f"This image is too large to resize (over {MAX_PIXELS} pixels); "
        "ask for it without w, h, format and q.",
        code="image_too_large",
    )


def render_variant(data: bytes, spec: VariantSpec) -> tuple[bytes, ImageType]:
    """The variant's bytes and type. Blocking and CPU-heavy: call from a worker thread.

    UnsupportedMediaType (415) for bytes Pillow cannot decode or images over ``MAX_PIXELS``;
    BadRequest (400, ``animated_image``) for animated images.
    """
    try:
        original = sniff(data)
        dims = decoded_size(data, original)
    except PicGateError as exc:
        raise UnsupportedMediaType(
            "The stored image cannot be decoded.", code="invalid_image"
        ) from exc
    # the size from the headers of the image and of every frame, before Pillow decodes
    # anything; checked here rather than with warnings.catch_warnings, whose filter swap is
    # process-wide and races between threads
    if dims is None or dims[0] * dims[1] > MAX_PIXELS:
        raise too_large()
    out_type = spec.output_type(original)
    # imported here: only variants decode images, and Lambda's cold start need not wait
    from PIL import Image, ImageOps

    # Pillow's own check, should a header still lie: it *warns* above MAX_IMAGE_PIXELS and
    # raises DecompressionBombError only above twice that. Half our limit makes the error start
    # exactly at MAX_PIXELS; the warning below it is noise for images already measured.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if getattr(img, "is_animated", False):
                raise BadRequest(
                    "Animated images have no resized or converted variants; "
                    "ask for the image without w, h, format and q.",
                    code="animated_image",
                )
            exif_size = _oriented_size(img)
            size = target_size(exif_size, spec)
            img.draft("RGB", size)  # JPEG: decode at a reduced scale where it can
            frame = ImageOps.exif_transpose(img)
            if frame.mode not in ("RGB", "RGBA", "L", "LA"):
                # palette images resize with nearest-neighbour only: give LANCZOS real colours
                frame = frame.convert("RGBA" if _has_alpha(frame) else "RGB")
            if frame.size != size:
                frame = frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            return _encode(frame, out_type, spec.effective_quality(out_type)), out_type
    except Image.DecompressionBombError as exc:
        raise too_large() from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of saying "not an image"
        raise UnsupportedMediaType(
            "The stored image cannot be decoded.", code="invalid_image"
        ) from exc


def _oriented_size(img: object) -> tuple[int, int]:
    """The image's size as shown, after its EXIF orientation (5-8 swap the sides)."""
    from PIL import Image

    assert isinstance(img, Image.Image)
    width, height = img.size
    orientation = img.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _has_alpha(frame: object) -> bool:
    from PIL import Image

    assert isinstance(frame, Image.Image)
    return frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info


def _encode(frame: object, out: ImageType, quality: int | None) -> bytes:
    from PIL import Image

    assert isinstance(frame, Image.Image)
    alpha = _has_alpha(frame)
    buffer = io.BytesIO()
    if out == JPEG:
        if alpha:
            # JPEG has no alpha: transparent pixels go white, as a browser shows them on a page
            rgba = frame.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            frame = flat
        frame.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True)
    elif out == PNG:
        frame.convert("RGBA" if alpha else "RGB").save(buffer, "PNG")
    elif out == GIF:
        frame.save(buffer, "GIF")
    elif out == WEBP:
        frame.convert("RGBA" if alpha else "RGB").save(buffer, "WEBP", quality=quality, method=4)
    else:
        frame.convert("RGBA" if alpha else "RGB").save(buffer, "AVIF", quality=quality)
    return buffer.getvalue()
