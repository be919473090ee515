"""``GET``/``HEAD`` ``/images/{id}[.{ext}]``: strong ETag, 304, ranges, immutable caching.

Ranges follow ``picgate.images.ranges``: a malformed header is ignored (200, whole image), an
unsatisfiable one is a 416 in OpenAI's error shape with ``Content-Range: bytes */size``.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from picgate.deps import LibraryDep
from picgate.errors import NotFound
from picgate.images.ranges import OpenedFileResponse, check_ranges
from picgate.library.records import parse_image_name
from picgate.library.sendfile import Sendfile
from picgate.library.serving import Located, read_fd
from picgate.library.variant_cache import VariantCache
from picgate.storage.codec import BY_EXT
from picgate.storage.variants import VariantSpec, parse_variant_query

router = APIRouter()

CACHE_CONTROL = "public, max-age=31536000, immutable"
WHOLE_READ_MAX = 2 * 1024 * 1024


class ImageFileResponse(OpenedFileResponse):
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
    library.touch(image_id)
    fd = located.fd  # open: closed here unless a response takes it over
    try:
        if spec is not None and not spec.is_identity(BY_EXT[located.image.ext]):
            return await _variant(
                request, library.variants, located, spec, library.serving.sendfile
            )
        response = _answer(request, located, library.serving.sendfile)
        if isinstance(response, ImageFileResponse):
            fd = None
        elif response is None:
            assert fd is not None and located.stat is not None
            size = located.stat.st_size
            # one thread hop for the whole body instead of FileResponse's open/read/close hops
            data = await anyio.to_thread.run_sync(read_fd, fd, size)
            response = Response(data, media_type=located.image.mime, headers=_headers(located))
            response.headers["Accept-Ranges"] = "bytes"
    finally:
        if fd is not None:
            os.close(fd)
    return response


def _headers(located: Located) -> dict[str, str]:
    image = located.image
    return {
        "ETag": image.etag,
        "Cache-Control": CACHE_CONTROL,
        "Content-Disposition": f'inline; filename="{image.id}.{image.ext}"',
    }


def _answer(request: Request, located: Located, sendfile: Sendfile | None) -> Response | None:
    """The answer for ``located``; None: read the whole (small) file into the body. With
    ``SENDFILE_HEADER`` the proxy sends the bytes (and any range) of the file named."""
    image = located.image
    headers = _headers(located)
    if located.redirect is not None:
        return RedirectResponse(
            located.redirect, status_code=302, headers={"Cache-Control": "no-store"}
        )
    if etag_matches(request.headers.get("if-none-match"), image.etag):
        return Response(status_code=304, headers=headers)
    assert located.path is not None and located.fd is not None and located.stat is not None
    if sendfile is not None:
        return _handoff(sendfile, located.path, image.mime, headers)
    size = located.stat.st_size
    check_ranges(request.headers.get("range"), request.headers.get("if-range"), image.etag, size)
    if request.method == "GET" and "range" not in request.headers and size <= WHOLE_READ_MAX:
        return None
    return ImageFileResponse(
        located.fd, located.path, media_type=image.mime, headers=headers, stat_result=located.stat
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
