"""The remote copy of the images (Cloudflare R2 or any S3 server): the store, and reading from it.

``Remote`` is ``services.remote``. It builds the ``S3ObjectStore`` for the *current* effective
settings (the admin console can change them while PicGate runs) and rebuilds it only when the
endpoint, keys or bucket change. Two stores are kept: one for serving, whose client retries a
request a few times, and one for uploads, whose client tries once, because the upload queue
(``picgate.storage.upload_queue``) owns the retries and an outage must fail fast there.

Serving an image with no local copy (``locate_remote``):

- ``R2_PUBLIC_BASE_URL`` set and the object uploaded → redirect to the public URL;
- larger than the runtime can return (serverless: 4.5 MB raw) → redirect to a short-lived
  presigned URL;
- otherwise fetch it (once per id, however many requests miss at the same time), write it back to
  the local cache atomically, and serve the file;
- missing from the bucket → None (the caller answers 410); the bucket unreachable →
  ``StorageUnavailable`` (503 with ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import update

from picgate.config import Settings
from picgate.db.models import R2_NONE, R2_UPLOADED, Image
from picgate.errors import StorageUnavailable
from picgate.storage.image_store import StoredImage
from picgate.storage.object_store import ObjectNotFound, ObjectStore, ObjectStoreError, object_key
from picgate.storage.s3_store import S3ObjectStore

if TYPE_CHECKING:
    from picgate.images.serving import Located
    from picgate.services import Services

# Lambda returns at most 6 MB of payload, and binary bodies travel as base64 (4/3).
SERVERLESS_MAX_BODY = 4_500_000
PRESIGN_SECONDS = 300
RETRY_AFTER_SECONDS = 30

StoreSignature = tuple[str | None, str | None, str | None, str | None]


def build_object_store(settings: Settings, *, max_attempts: int = 3) -> S3ObjectStore | None:
    """An S3ObjectStore for these settings, or None when R2 is not (fully) configured.

    Building opens no connection: the boto3 client is made on first use.
    """
    if not settings.r2_configured or not settings.r2_endpoint:
        return None
    assert settings.r2_bucket_name and settings.r2_access_key_id and settings.r2_secret_access_key
    return S3ObjectStore(
        bucket=settings.r2_bucket_name,
        access_key_id=settings.r2_access_key_id,
        secret_access_key=settings.r2_secret_access_key,
        endpoint_url=settings.r2_endpoint,
        region="auto",
        max_attempts=max_attempts,
    )


def missing_r2_settings(settings: Settings) -> list[str]:
    """The R2 variables still needed before PicGate can talk to a bucket."""
    needed = {
        "R2_BUCKET_NAME": settings.r2_bucket_name,
        "R2_ACCESS_KEY_ID": settings.r2_access_key_id,
        "R2_SECRET_ACCESS_KEY": settings.r2_secret_access_key,
        "R2_ACCOUNT_ID or R2_ENDPOINT_URL": settings.r2_endpoint,
    }
    return [name for name, value in needed.items() if not value]


def storage_unavailable(detail: str) -> StorageUnavailable:
    return StorageUnavailable(
        f"The image store (R2) is unreachable and this image has no local copy: {detail}. "
        "Try again shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class Remote:
    """The object store for the current settings, plus single-flight reads into the cache."""

    def __init__(
        self, settings: Callable[[], Settings], *, forced: ObjectStore | None = None
    ) -> None:
        self._settings = settings
        self._forced = forced
        self._lock = threading.Lock()
        self._signature: StoreSignature | None = None
        self._serving: ObjectStore | None = None
        self._uploading: ObjectStore | None = None
        self._inflight: dict[str, Future[Path | None]] = {}

    # -- the stores ------------------------------------------------------------------------

    def configured(self) -> bool:
        """Whether images should be archived remotely (cheap: builds nothing)."""
        return self._forced is not None or self._settings().r2_configured

    def objects(self) -> ObjectStore | None:
        """The store for serving (retrying client); None when R2 is not configured."""
        return self._stores()[0]

    def upload_objects(self) -> ObjectStore | None:
        """The store for uploads (single-attempt client: the queue retries with backoff)."""
        return self._stores()[1]

    def _stores(self) -> tuple[ObjectStore | None, ObjectStore | None]:
        if self._forced is not None:
            return self._forced, self._forced
        settings = self._settings()
        signature: StoreSignature = (
            settings.r2_endpoint,
            settings.r2_access_key_id,
            settings.r2_secret_access_key,
            settings.r2_bucket_name,
        )
        with self._lock:
            if signature != self._signature:
                self._serving = build_object_store(settings)
                self._uploading = build_object_store(settings, max_attempts=1)
                self._signature = signature
            return self._serving, self._uploading

    def key(self, image_id: str, ext: str) -> str:
        return object_key(image_id, ext, self._settings().r2_key_prefix)

    def public_url(self, image_id: str, ext: str) -> str | None:
        base = self._settings().r2_public_base_url
        if not base:
            return None
        return f"{base.rstrip('/')}/{self.key(image_id, ext)}"

    # -- reading ---------------------------------------------------------------------------

    def fetch_to_cache(self, services: Services, row: Image) -> Path | None:
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
            path = self._fetch_and_cache(services, row)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(path)
            return path
        finally:
            with self._lock:
                self._inflight.pop(row.id, None)

    def _fetch_and_cache(self, services: Services, row: Image) -> Path | None:
        path = services.cache.path(row.id, row.ext)
        if path.is_file():  # a previous flight finished just before this one started
            return path
        store = self.objects()
        if store is None:
            return None
        try:
            data = self._get(store, row.id, row.ext)
        except StorageUnavailable:
            services.events.warning(f"⚠️ R2 不可用，无法取回图片: {row.id[:8]}...")
            raise
        if data is None:
            return None
        if hashlib.sha256(data).hexdigest() != row.sha256:
            services.events.error(f"❌ R2 对象内容校验失败: {row.id[:8]}...")
            raise storage_unavailable("the stored object does not match its checksum")
        path = services.cache.write(row.id, row.ext, data)
        services.db.call(
            lambda s: s.execute(
                update(Image).where(Image.id == row.id).values(local=True, expired=False)
            )
        )
        services.events.info(f"📥 已从 R2 取回并缓存: {row.id[:8]}...")
        return path

    def _get(self, store: ObjectStore, image_id: str, ext: str) -> bytes | None:
        try:
            return store.get(self.key(image_id, ext))
        except ObjectNotFound:
            return None
        except ObjectStoreError as exc:
            raise storage_unavailable(str(exc)) from exc

    def fetch_bytes(self, image: StoredImage) -> bytes | None:
        """The object's bytes straight from R2 (no caching); None when it is not there."""
        store = self.objects()
        if store is None:
            return None
        return self._get(store, image.id, image.ext)

    def redirect_url(self, row: Image, *, max_body: int | None) -> str | None:
        """Where to send the client instead of serving the bytes ourselves, if anywhere."""
        if row.r2_state == R2_UPLOADED:
            public = self.public_url(row.id, row.ext)
            if public is not None:
                return public
        if max_body is not None and row.size > max_body:
            store = self.objects()
            if store is None:
                return None
            try:
                return store.presigned_url(self.key(row.id, row.ext), expires=PRESIGN_SECONDS)
            except ObjectStoreError as exc:
                raise storage_unavailable(str(exc)) from exc
        return None


# -- the Services hooks ----------------------------------------------------------------------


async def locate_remote(services: Services, row: Image) -> Located | None:
    """Serve an image with no local copy from R2 (see the module docstring for the rules)."""
    from picgate.images.serving import Located

    remote = services.remote
    if row.r2_state == R2_NONE:
        return None
    # everything below reads the settings (maybe from the database): in worker threads
    image = StoredImage(row.id, row.ext, row.mime, row.size, row.sha256)
    max_body = SERVERLESS_MAX_BODY if services.serverless else None
    redirect = await anyio.to_thread.run_sync(lambda: remote.redirect_url(row, max_body=max_body))
    if redirect is not None:
        return Located(image, redirect=redirect)
    path = await anyio.to_thread.run_sync(remote.fetch_to_cache, services, row)
    if path is None:
        return None
    return Located(image, path=path)


async def oversize_redirect(services: Services, image: StoredImage) -> Located | None:
    """Serverless: a redirect for an image too large for a Lambda answer, even with a /tmp copy.

    For ``images/serving.py``'s ``locate``, before it serves a local file: Lambda refuses
    answers over 6 MB, so such an image must leave by redirect (public URL, else presigned).
    None when the image can be served directly.
    """
    from picgate.images.serving import Located

    if not services.serverless or image.size <= SERVERLESS_MAX_BODY:
        return None
    remote = services.remote

    def url() -> str | None:
        public = remote.public_url(image.id, image.ext)
        if public is not None:
            return public
        store = remote.objects()
        if store is None:
            return None
        try:
            return store.presigned_url(remote.key(image.id, image.ext), expires=PRESIGN_SECONDS)
        except ObjectStoreError as exc:
            raise storage_unavailable(str(exc)) from exc

    target = await anyio.to_thread.run_sync(url)
    return None if target is None else Located(image, redirect=target)


async def fetch_remote_bytes(services: Services, image: StoredImage) -> bytes | None:
    """The bytes of an image that is served by redirect (for inlining into upstream requests)."""
    return await anyio.to_thread.run_sync(services.remote.fetch_bytes, image)
