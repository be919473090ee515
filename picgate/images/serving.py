"""Finding the bytes of an image: local cache first, then the remote store (R2)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from picgate.errors import Gone, NotFound
from picgate.services import Services
from picgate.storage.image_store import StoredImage


@dataclass(frozen=True)
class Located:
    image: StoredImage
    path: Path | None = None  # a local file to send
    redirect: str | None = None  # or a URL to send the client to
    stat: os.stat_result | None = None  # of ``path``, so the response need not stat again


def _stat_file(path: Path, size: int) -> os.stat_result | None:
    """The file's stat, or None when it is missing or not the size of its row (a power loss
    can leave a file cut short: it is treated as no copy, never served as if whole)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st if stat.S_ISREG(st.st_mode) and st.st_size == size else None


async def _local(
    services: Services, record: StoredImage, path: Path, st: os.stat_result
) -> Located:
    if services.serverless:
        # Lambda refuses answers over ~6 MB: a large image leaves by redirect even from /tmp
        from picgate.storage.archive import oversize_redirect

        redirect = await oversize_redirect(services, record)
        if redirect is not None:
            return redirect
    return Located(record, path=path, stat=st)


async def locate(services: Services, image_id: str, ext: str | None) -> Located:
    """Where to get ``image_id``'s bytes; NotFound (unknown id, wrong extension) or Gone."""
    record = services.images.cached_record(image_id)
    if record is not None and (ext is None or ext == record.ext):
        path = services.cache.path(image_id, record.ext)
        st = await anyio.to_thread.run_sync(_stat_file, path, record.size)
        if st is not None:
            return await _local(services, record, path, st)
    row = await anyio.to_thread.run_sync(services.images.load_row, image_id)
    if row is None or (ext is not None and ext != row.ext):
        raise NotFound("No such image.")
    record = StoredImage(row.id, row.ext, row.mime, row.size, row.sha256)
    path = services.cache.path(image_id, row.ext)
    st = await anyio.to_thread.run_sync(_stat_file, path, row.size)
    if st is not None:
        return await _local(services, record, path, st)
    remote = await services.locate_remote(row)
    if remote is not None:
        return remote
    raise Gone("This image has expired and is no longer stored anywhere.")


async def read_image_bytes(services: Services, image_id: str) -> bytes:
    """The bytes of a stored image (for inlining into upstream requests)."""
    located = await locate(services, image_id, None)
    if located.path is not None:
        return await anyio.to_thread.run_sync(located.path.read_bytes)
    data = await services.fetch_remote_bytes(located.image)
    if data is None:
        raise Gone("This image has expired and is no longer stored anywhere.")
    return data
