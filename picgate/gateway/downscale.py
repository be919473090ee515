"""Smaller copies of older history images, sent upstream when the full ones do not fit.

``downscaled(data)`` gives a JPEG no larger than ``MAX_SIDE`` pixels on its longest side, or
None when the image cannot be made smaller safely. JPEG because every vision API accepts it and
it is the smallest of the common types for photographs and renders; transparency is flattened
onto white (an older image is context for the model, not a layer to composite).

Decoding refuses images over ``MAX_PIXELS`` (decompression bombs): measured from the headers of
the image and of every frame before Pillow decodes anything, then enforced again by Pillow as a
hard ``DecompressionBombError``. The work is CPU-bound: callers run it off the event loop.
"""

from __future__ import annotations

import io
import warnings

from picgate.errors import PicGateError
from picgate.storage.codec import decoded_size, sniff

__all__ = ["MAX_PIXELS", "MAX_SIDE", "QUALITY", "downscaled"]

# enough for a model to tell what an earlier image showed; a 4 MB 1024² render becomes ~100 KB
MAX_SIDE = 768
QUALITY = 75
# the admin previews' limit: above every size current image models produce
MAX_PIXELS = 4096 * 4096


def downscaled(data: bytes) -> bytes | None:
    """A JPEG of ``data`` at most ``MAX_SIDE`` on its longest side; None when undecodable or huge.

    Only the first frame of an animation is kept.
    """
    try:
        dims = decoded_size(data, sniff(data))
    except PicGateError:
        return None
    if dims is None or dims[0] * dims[1] > MAX_PIXELS:
        return None
    # imported here: only trimming a long history decodes pixels on the gateway's side
    from PIL import Image, ImageOps

    # as in the admin previews: Pillow errors above twice MAX_IMAGE_PIXELS, so half our limit
    # makes the error start at MAX_PIXELS; its warning below that is noise for measured images
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale
            img.seek(0)
            frame = ImageOps.exif_transpose(img)
            frame.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            if frame.mode in ("RGBA", "LA", "P", "PA"):
                rgba = frame.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                frame = flat
            out = io.BytesIO()
            frame.convert("RGB").save(out, "JPEG", quality=QUALITY, optimize=True)
            return out.getvalue()
    except Image.DecompressionBombError:
        return None
    except (OSError, ValueError, SyntaxError):  # Pillow's ways of saying "not an image"
        return None
