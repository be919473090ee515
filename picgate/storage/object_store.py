"""The object store contract: a flat key → bytes store, its errors, and the image key.

Backends: ``picgate.storage.s3_store`` (S3/R2 over HTTP) and ``picgate.storage.memory_store``
(an in-memory fake for tests); ``tests/integration/test_object_store_contract.py`` runs one
suite against both.

Every method is synchronous; async callers run them in a worker thread. Every backend failure
leaves as ``ObjectStoreError`` (``ObjectNotFound`` for a missing key) with a short message that
never holds a secret; the original exception is kept as ``__cause__`` for the logs.

Retries with backoff for uploads live above this module (the upload queue); the S3 client only
retries a request a few times within one call (botocore "standard" mode).
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

__all__ = [
    "DEFAULT_CACHE_CONTROL",
    "ConnectionCheck",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "object_key",
]

DEFAULT_CACHE_CONTROL = "public, max-age=31536000, immutable"
# SigV4 presigned URLs are valid for at most 7 days (S3 and R2 alike).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


class ObjectStoreError(Exception):
    """A backend failed: unreachable, timed out, refused the credentials, bucket missing..."""


class ObjectNotFound(ObjectStoreError):
    """The bucket answered, and the key is not in it."""


@dataclass
class ConnectionCheck:
    """One step of ``ObjectStore.test_connection``, as shown on the admin settings page."""

    step: str
    ok: bool
    millis: float
    detail: str


def object_key(image_id: str, ext: str, prefix: str = "images/") -> str:
    """The object key of an image: ``images/{id}.{ext}``."""
    return f"{prefix}{image_id}.{ext.lstrip('.')}"


class ObjectStore(ABC):
    """A flat key → bytes store. Implementations wrap all their failures in ObjectStoreError."""

    @abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        """Store ``data`` under ``key``, replacing any previous object."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectNotFound when the key is missing."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the key is present (errors other than "missing" still raise)."""

    @abstractmethod
    def presigned_url(self, key: str, *, expires: int = 300) -> str:
        """A URL that fetches the object without credentials for ``expires`` seconds."""

    @abstractmethod
    def check_bucket(self) -> str:
        """Raise ObjectStoreError unless the bucket is reachable with these credentials.

        Returns a short human description for the connection test.
        """

    def test_connection(self, *, prefix: str = "") -> list[ConnectionCheck]:
        """Check bucket access, then put, get (bytes compared) and delete a small probe object.

        The probe lives under ``{prefix}_picgate_probe/``. Stops at the first failing step; the
        failing step is the last one in the list.
        """
        key = f"{prefix}_picgate_probe/{uuid.uuid4().hex}.txt"
        payload = f"picgate connection probe {uuid.uuid4().hex}\n".encode()
        checks: list[ConnectionCheck] = []

        def step(name: str, action: Callable[[], str]) -> bool:
            started = time.perf_counter()
            try:
                detail = action()
                ok = True
            except ObjectStoreError as exc:
                detail, ok = str(exc), False
            millis = round((time.perf_counter() - started) * 1000, 1)
            checks.append(ConnectionCheck(step=name, ok=ok, millis=millis, detail=detail))
            return ok

        def put() -> str:
            self.put(key, payload, content_type="text/plain", cache_control="no-store")
            return f"wrote {len(payload)} bytes to {key}"

        def get() -> str:
            if self.get(key) != payload:
                raise ObjectStoreError("read back different bytes than were written")
            return f"read back {len(payload)} identical bytes"

        def delete() -> str:
            self.delete(key)
            return f"deleted {key}"

        if not step("bucket", self.check_bucket) or not step("put", put):
            return checks
        if not step("get", get):
            # The probe was written; do not leave it behind. The report already says what failed.
            with suppress(ObjectStoreError):
                self.delete(key)
            return checks
        step("delete", delete)
        return checks
