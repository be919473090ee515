"""The serving policy: where the bytes of ``/images/{id}`` come from.

``ImageServing.locate`` decides, in this order:

- a local copy whose size matches its row → serve the file, unless the redirect rule says
  otherwise (only for an image larger than the runtime can return);
- no local copy, the row never archived (``r2_state = none``) → 410;
- the redirect rule names a URL → redirect there;
- otherwise fetch it back from R2 (once per id, however many requests miss at the same time),
  write it to the local cache atomically, and serve the file;
- missing from the bucket → 410; the bucket unreachable → ``StorageUnavailable`` (503); bytes
  whose SHA-256 is not the row's → 502 ``storage_checksum_mismatch``, nothing cached (also for
  ``fetch_bytes``).

The redirect rule (``redirect_url``), the one place that sends a client to the bucket: only an
object known to be there (``r2_state = uploaded``) is ever a redirect target, so a client is
never sent to a URL that answers 404 while the upload is pending or failed. Then: with a local
copy, only an image larger than the runtime can return (serverless: Lambda's 6 MB answer) is
redirected; the target is ``R2_PUBLIC_BASE_URL`` when set, else a short-lived presigned URL for
an oversize image, else no redirect (the bytes are fetched and served).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from picgate.db.models import R2_NONE, R2_UPLOADED, ImageRow
from picgate.errors import Gone, NotFound, PicGateError, StorageUnavailable
from picgate.eventlog import EventLog
from picgate.library.records import StoredImage
from picgate.library.rows import ImageRows
from picgate.library.sendfile import Sendfile
from picgate.storage.archive import SERVERLESS_MAX_BODY, Archive
from picgate.storage.local import LocalCache

log = logging.getLogger("picgate")


def digest_matches(data: bytes, sha256: str, image_id: str) -> bool:
    """Whether ``data`` is the image its row describes; logs an error when it is not.

    What R2 hands back is checked before it is cached or served: an object overwritten in the
    bucket (by hand, another tool, a key collision between deployments) must never be served,
    with the immutable caching of ``/images``, as if it were this image.
    """
    if hashlib.sha256(data).hexdigest() == sha256:
        return True
    log.error("R2 object for image %s does not match its SHA-256; not served", image_id)
    return False


def checksum_mismatch() -> PicGateError:
    """502: the store answered, with the wrong bytes. Not 503 with ``Retry-After``: trying again
    would fetch the same object."""
    return PicGateError(
        "The image store (R2) returned bytes that do not match this image's checksum.",
        status_code=502,
        code="storage_checksum_mismatch",
    )


@dataclass(frozen=True)
class Located:
    """``fd``: the local file, already open (the caller closes it, or hands it to a response
    that does): the size cap may unlink the path at any moment, and an open file still reads
    whole. ``stat`` is the open file's."""

    image: StoredImage
    path: Path | None = None  # a local file to send
    redirect: str | None = None  # or a URL to send the client to
    stat: os.stat_result | None = None  # of ``fd``, so the response need not stat again
    fd: int | None = None


Opened = tuple[int, os.stat_result]


def _open_file(path: Path, size: int) -> Opened | None:
    """The file opened, with its stat; None when it is missing (deleted by the size cap or the
    TTL between lookup and open: no local copy) or not the size of its row (a power loss can
    leave a file cut short: it is treated as no copy, never served as if whole)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if stat.S_ISREG(st.st_mode) and st.st_size == size:
        return fd, st
    os.close(fd)
    return None


def read_fd(fd: int, size: int) -> bytes:
    """``size`` bytes from the start of ``fd`` (its position untouched)."""
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _read_and_close(fd: int, size: int) -> bytes:
    try:
        return read_fd(fd, size)
    finally:
        os.close(fd)


def _record(row: ImageRow) -> StoredImage:
    return StoredImage(row.id, row.ext, row.mime, row.size, row.sha256)


class ImageServing:
    """Finds an image's bytes: the local cache first, then the archive (see the module doc)."""

    def __init__(
        self,
        *,
        rows: ImageRows,
        cache: LocalCache,
        archive: Archive,
        events: EventLog,
        serverless: bool,
        sendfile: Sendfile | None = None,
    ) -> None:
        self.rows = rows
        # SENDFILE_HEADER: local files leave through the proxy in front (picgate.library.sendfile)
        self.sendfile = sendfile
        self.cache = cache
        self.archive = archive
        self.events = events
        # Lambda refuses answers over ~6 MB: larger images leave by redirect
        self.max_body = SERVERLESS_MAX_BODY if serverless else None
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[Path | None]] = {}

    def oversize(self, image: StoredImage) -> bool:
        """Whether ``image`` is larger than this runtime can return in an answer."""
        return self.max_body is not None and image.size > self.max_body

    def redirect_url(self, image: StoredImage, r2_state: str, *, local: bool) -> str | None:
        """The redirect rule (see the module docstring); synchronous, it may read the settings
        and presign: call it from a worker thread. StorageUnavailable when presigning fails."""
        if r2_state != R2_UPLOADED:
            return None
        oversize = self.oversize(image)
        if local and not oversize:
            return None
        public = self.archive.public_url(image.id, image.ext)
        if public is not None:
            return public
        if oversize:
            return self.archive.presigned_url(image.id, image.ext)
        return None

    async def redirect(self, image: StoredImage, r2_state: str, *, local: bool) -> str | None:
        """``redirect_url`` in a worker thread."""
        return await anyio.to_thread.run_sync(
            lambda: self.redirect_url(image, r2_state, local=local)
        )

    async def locate(self, image_id: str, ext: str | None) -> Located:
        """Where to get ``image_id``'s bytes; NotFound (unknown id, wrong extension) or Gone."""
        record = self.rows.cached_record(image_id)
        if record is not None and (ext is None or ext == record.ext) and not self.oversize(record):
            path = self.cache.path(image_id, record.ext)
            opened = await anyio.to_thread.run_sync(_open_file, path, record.size)
            if opened is not None:
                return Located(record, path=path, stat=opened[1], fd=opened[0])
        row = await anyio.to_thread.run_sync(self.rows.load, image_id)
        if row is None or (ext is not None and ext != row.ext):
            raise NotFound("No such image.")
        record = _record(row)
        path = self.cache.path(image_id, row.ext)
        opened = await anyio.to_thread.run_sync(_open_file, path, row.size)
        if opened is not None:
            return await self._local(record, row.r2_state, path, opened)
        remote = await self.locate_remote(row)
        if remote is not None:
            return remote
        raise Gone("This image has expired and is no longer stored anywhere.")

    async def read_bytes(self, image_id: str) -> bytes:
        """The bytes of a stored image (for inlining into upstream requests)."""
        located = await self.locate(image_id, None)
        if located.fd is not None:
            return await anyio.to_thread.run_sync(_read_and_close, located.fd, located.image.size)
        data = await self.fetch_bytes(located.image)
        if data is None:
            raise Gone("This image has expired and is no longer stored anywhere.")
        return data

    async def fetch_bytes(self, image: StoredImage) -> bytes | None:
        """The object's bytes straight from the archive (no caching); None when not there."""
        data = await anyio.to_thread.run_sync(self.archive.get, image.id, image.ext)
        if data is not None and not digest_matches(data, image.sha256, image.id):
            raise checksum_mismatch()
        return data

    async def _local(
        self, record: StoredImage, r2_state: str, path: Path, opened: Opened
    ) -> Located:
        """The opened local copy, unless the redirect rule sends the client elsewhere (then the
        file is closed again, as it is when the rule fails)."""
        fd, st = opened
        try:
            target = await self.redirect(record, r2_state, local=True)
        except BaseException:
            os.close(fd)
            raise
        if target is not None:
            os.close(fd)
            return Located(record, redirect=target)
        return Located(record, path=path, stat=st, fd=fd)

    async def locate_remote(self, row: ImageRow) -> Located | None:
        """Serve an image with no local copy from the archive (None: not there)."""
        if row.r2_state == R2_NONE:
            return None
        image = _record(row)
        target = await self.redirect(image, row.r2_state, local=False)
        if target is not None:
            return Located(image, redirect=target)
        path = await anyio.to_thread.run_sync(self.fetch_to_cache, row)
        opened = (
            None if path is None else await anyio.to_thread.run_sync(_open_file, path, row.size)
        )
        if path is None or opened is None:
            return None  # not in R2, or evicted again before it could be opened
        return Located(image, path=path, stat=opened[1], fd=opened[0])

    def fetch_to_cache(self, row: ImageRow) -> Path | None:
        """Fetch ``row``'s object into the local cache; the file path, or None if not in R2.

        Synchronous (call from a worker thread). Concurrent calls for the same id share one
        fetch: the first caller does the work, the others wait for its result.
        """
        with self._lock:
            flight = self._inflight.get(row.id)
            leader = flight is None
            if flight is None:
                flight = Future()
                self._inflight[row.id] = flight
        if not leader:
            return flight.result()
        try:
            path = self._fetch_and_cache(row)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(path)
            return path
        finally:
            with self._lock:
                self._inflight.pop(row.id, None)

    def _fetch_and_cache(self, row: ImageRow) -> Path | None:
        path = self.cache.path(row.id, row.ext)
        if path.is_file():  # a previous flight finished just before this one started
            return path
        try:
            data = self.archive.get(row.id, row.ext)
        except StorageUnavailable:
            self.events.warning(f"⚠️ R2 不可用，无法取回图片: {row.id[:8]}...")
            raise
        if data is None:
            return None
        if not digest_matches(data, row.sha256, row.id):
            self.events.error(f"❌ R2 对象内容校验失败: {row.id[:8]}...")
            raise checksum_mismatch()
        path = self.cache.write(row.id, row.ext, data)
        self.rows.mark_cached(row.id)
        self.events.info(f"📥 已从 R2 取回并缓存: {row.id[:8]}...")
        return path
