"""The archive: the remote copy of the images (Cloudflare R2 or any S3 server).

``Archive`` builds the ``S3ObjectStore`` for the *current* effective settings (the admin console
can change them while PicGate runs) and rebuilds it only when the endpoint, keys or bucket
change. Two stores are kept: one for serving, whose client retries a request a few times, and
one for uploads, whose client tries once, because the upload queue
(``picgate.library.uploads``) owns the retries and an outage must fail fast there.

It also names things: an image's object key, its public URL (``R2_PUBLIC_BASE_URL``) and a
short-lived presigned URL. When to use which is the serving policy of ``picgate.library.serving``.
Reading fails as ``StorageUnavailable`` (503 with ``Retry-After``) when the bucket is unreachable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from picgate.config import Settings
from picgate.errors import StorageUnavailable
from picgate.storage.object_store import ObjectNotFound, ObjectStore, ObjectStoreError, object_key
from picgate.storage.s3_store import S3ObjectStore

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


class Archive:
    """The object store for the current settings, and the names of an image in it."""

    def __init__(
        self, settings: Callable[[], Settings], *, forced: ObjectStore | None = None
    ) -> None:
        self._settings = settings
        self._forced = forced
        self._lock = threading.Lock()
        self._signature: StoreSignature | None = None
        self._serving: ObjectStore | None = None
        self._uploading: ObjectStore | None = None

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

    def get(self, image_id: str, ext: str) -> bytes | None:
        """The object's bytes from the serving store; None when R2 is off or the key is missing.

        StorageUnavailable when the bucket cannot be read.
        """
        store = self.objects()
        if store is None:
            return None
        try:
            return store.get(self.key(image_id, ext))
        except ObjectNotFound:
            return None
        except ObjectStoreError as exc:
            raise storage_unavailable(str(exc)) from exc

    def presigned_url(self, image_id: str, ext: str) -> str | None:
        """A URL valid for PRESIGN_SECONDS; None when R2 is off, StorageUnavailable on failure."""
        store = self.objects()
        if store is None:
            return None
        try:
            return store.presigned_url(self.key(image_id, ext), expires=PRESIGN_SECONDS)
        except ObjectStoreError as exc:
            raise storage_unavailable(str(exc)) from exc
