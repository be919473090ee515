"""``GET``/``HEAD`` ``/images/{id}[.{ext}]``: strong ETag, 304, ranges, immutable caching.

Ranges follow ``picgate.images.ranges``: a malformed header is ignored (200, whole image), an
unsatisfiable one is a 416 in OpenAI's error shape with ``Content-Range: bytes */size``.

With ``SENDFILE_HEADER`` set (``picgate.library.sendfile``), a local file (original or variant)
is answered with the same status and headers but an empty body and the header naming the file:
the proxy in front sends the bytes and answers ranges itself. Redirects, 304, 404 and 410 are
unchanged; an image only in R2 is fetched into the local cache first, then handed off.
"""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from picgate.deps import LibraryDep
from picgate.errors import NotFound
from picgate.images.ranges import RangedFileResponse, check_ranges
from picgate.library.records import parse_image_name
from picgate.library.sendfile import Sendfile
from picgate.library.serving import Located
from picgate.library.variant_cache import VariantCache
from picgate.storage.codec import BY_EXT
from picgate.storage.variants import VariantSpec, parse_variant_query

router = APIRouter()

CACHE_CONTROL = "public, max-age=31536000, immutable"
WHOLE_READ_MAX = 2 * 1024 * 1024


def _read_if_size(path: Path, size: int) -> bytes | None:
    """The file's bytes, or None when it changed or vanished since it was located."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data if len(data) == size else None


class ImageFileResponse(RangedFileResponse):
    # most images fit in one read: fewer thread hops per request than the 64 KB default
    chunk_size = 1024 * 1024


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = [c.strip() for c in header.split(",")]
    return any(c == etag or c == "W/" + etag for c in candidates)


# two decorators rather than api_route(methods=[GET, HEAD]): one route with two methods gives
# both the same OpenAPI operation id, and FastAPI warns on every /openapi.json
@router.get("/images/{name}", operation_id="get_image")
@router.head("/images/{name}", operation_id="head_image")
async def get_image(name: str, request: Request, library: LibraryDep) -> Response:
    parsed = parse_image_name(name)
    if parsed is None:
        raise NotFound("No such image.")
    image_id, ext = parsed
    spec = parse_variant_query(request.query_params.multi_items())
    located = await library.serving.locate(image_id, ext)
    image = located.image
    library.touch(image_id)
    if spec is not None and not spec.is_identity(BY_EXT[image.ext]):
        return await _variant(request, library.variants, located, spec, library.serving.sendfile)
    headers = {
        "ETag": image.etag,
        "Cache-Control": CACHE_CONTROL,
        "Content-Disposition": f'inline; filename="{image.id}.{image.ext}"',
    }
    if located.redirect is not None:
        return RedirectResponse(
            located.redirect, status_code=302, headers={"Cache-Control": "no-store"}
        )
    if etag_matches(request.headers.get("if-none-match"), image.etag):
        return Response(status_code=304, headers=headers)
    assert located.path is not None
    sendfile = library.serving.sendfile
    if sendfile is not None:
        return _handoff(sendfile, located.path, image.mime, headers)
    size = located.stat.st_size if located.stat is not None else None
    check_ranges(
        request.headers.get("range"),
        request.headers.get("if-range"),
        image.etag,
        image.size if size is None else size,
    )
    if (
        request.method == "GET"
        and "range" not in request.headers
        and size is not None
        and size <= WHOLE_READ_MAX
    ):
        # one thread hop for the whole body instead of FileResponse's open/read/close hops
        data = await anyio.to_thread.run_sync(_read_if_size, located.path, size)
        if data is not None:
            headers["Accept-Ranges"] = "bytes"
            return Response(data, media_type=image.mime, headers=headers)
    return ImageFileResponse(
        located.path, media_type=image.mime, headers=headers, stat_result=located.stat
    )


def _handoff(sendfile: Sendfile, path: Path, mime: str, headers: dict[str, str]) -> Response:
    """An empty 200 naming ``path`` to the proxy, which sends the bytes (and any range)."""
    return Response(media_type=mime, headers=headers | sendfile.headers(path))


async def _variant(
    request: Request,
    variants: VariantCache,
    located: Located,
    spec: VariantSpec,
    sendfile: Sendfile | None,
) -> Response:
    """A sized or converted variant: its own strong ETag, the same immutable caching, no
    ranges (variants are small)."""
    image = located.image
    original = BY_EXT[image.ext]
    out = spec.output_type(original)
    etag = spec.etag(image.sha256, original)
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Content-Disposition": f'inline; filename="{image.id}.{out.ext}"',
    }
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if sendfile is not None:
        path = await variants.file(located, spec)
        return _handoff(sendfile, path, out.mime, headers)
    variant = await variants.get(located, spec)
    return Response(variant.data, media_type=variant.type.mime, headers=headers)
