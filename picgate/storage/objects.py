"""Object stores for image bytes: S3/R2 over HTTP, and an in-memory fake for tests.

Every method is synchronous; async callers run them in a worker thread. Every backend failure
leaves as ``ObjectStoreError`` (``ObjectNotFound`` for a missing key) with a short message that
never holds a secret; the original exception is kept as ``__cause__`` for the logs.

Retries with backoff for uploads live above this module (the upload queue); the S3 client only
retries a request a few times within one call (botocore "standard" mode).
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_CACHE_CONTROL",
    "ConnectionCheck",
    "MemoryObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "StoredObject",
    "object_key",
]

DEFAULT_CACHE_CONTROL = "public, max-age=31536000, immutable"
# SigV4 presigned URLs are valid for at most 7 days (S3 and R2 alike).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

_T = TypeVar("_T")


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


class S3ObjectStore(ObjectStore):
    """Cloudflare R2 or any S3-compatible server (MinIO, AWS S3, moto), path-style, SigV4.

    boto3 is imported on first use, not at import time (it costs a noticeable part of a cold
    start). The client is built once, under a lock, and shared by all threads.
    """

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        endpoint_url: str | None = None,
        account_id: str | None = None,
        region: str = "auto",
        client: Any = None,
        connect_timeout: float = 5,
        read_timeout: float = 30,
        max_attempts: int = 3,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        if endpoint_url:
            self.endpoint_url = endpoint_url.rstrip("/")
        elif account_id:
            self.endpoint_url = f"https://{account_id}.r2.cloudflarestorage.com"
        else:
            raise ValueError("an S3 endpoint needs endpoint_url or an R2 account_id")
        self.bucket = bucket
        self.region = region
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._client: Any = client
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3ObjectStore(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r})"

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> Any:
        with _wrapped("client setup"):
            import boto3
            from botocore.config import Config

            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
            )
            # A private session: boto3's default session is not thread-safe.
            session = boto3.session.Session()
            return session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=config,
            )

    def _call(self, op: str, fn: Callable[[Any], _T], *, key_op: bool = True) -> _T:
        client = self.client
        with _wrapped(op, key_op=key_op):
            return fn(client)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        self._call(
            "put",
            lambda c: c.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=cache_control,
            ),
            key_op=False,
        )

    def get(self, key: str) -> bytes:
        def read(c: Any) -> bytes:
            body = c.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return self._call("get", read)

    def delete(self, key: str) -> None:
        # S3 DeleteObject succeeds for a missing key, which is the idempotence we promise.
        self._call(
            "delete",
            lambda c: c.delete_object(Bucket=self.bucket, Key=key),
            key_op=False,
        )

    def exists(self, key: str) -> bool:
        try:
            self._call("head", lambda c: c.head_object(Bucket=self.bucket, Key=key))
        except ObjectNotFound:
            return False
        return True

    def presigned_url(self, key: str, *, expires: int = 300) -> str:
        if not 1 <= expires <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires must be 1..{MAX_PRESIGN_SECONDS} seconds, got {expires}")
        url = self._call(
            "presign",
            lambda c: c.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=expires,
            ),
        )
        return str(url)

    def check_bucket(self) -> str:
        self._call("head_bucket", lambda c: c.head_bucket(Bucket=self.bucket), key_op=False)
        return f"bucket {self.bucket!r} reachable at {self.endpoint_url}"


@contextmanager
def _wrapped(op: str, *, key_op: bool = False) -> Iterator[None]:
    """Turn botocore failures into ObjectStoreError("S3 <op> failed: <code or class>").

    With ``key_op``, a 404 means the key is missing (ObjectNotFound); elsewhere a 404 can only
    mean the bucket is missing, which is a configuration problem, not a missing image. A HEAD
    answer has no body, so ``exists`` cannot tell a missing bucket from a missing key.
    """
    try:
        yield
    except ObjectStoreError:
        raise
    except ImportError as exc:
        raise ObjectStoreError(f"S3 {op} failed: boto3 is not installed") from exc
    except Exception as exc:
        # Imported only here: by now the client exists, so botocore is already loaded.
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = _client_error_code(exc.response)
            if code in ("404", "NoSuchKey", "NotFound"):
                if key_op:
                    raise ObjectNotFound(f"S3 {op} failed: NoSuchKey") from exc
                code = "NoSuchBucket"
            raise ObjectStoreError(f"S3 {op} failed: {code}") from exc
        if isinstance(exc, (BotoCoreError, ValueError)):
            raise ObjectStoreError(f"S3 {op} failed: {type(exc).__name__}") from exc
        raise


def _client_error_code(response: Mapping[str, Any]) -> str:
    code = response.get("Error", {}).get("Code")
    if code:
        return str(code)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status else "ClientError"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object held by MemoryObjectStore."""

    data: bytes
    content_type: str
    cache_control: str


class MemoryObjectStore(ObjectStore):
    """An in-process store for tests: thread-safe, counts puts, can fail or be slow on demand.

    ``fail = True`` makes every call raise ObjectStoreError (an outage); ``delay`` seconds are
    slept at the start of every call, outside the lock, so concurrent calls overlap.
    """

    def __init__(self, *, delay: float = 0.0) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.put_counts: dict[str, int] = {}
        self.fail = False
        self.delay = delay
        self._lock = threading.Lock()

    def _enter(self, op: str) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ObjectStoreError(f"memory {op} failed: store is down")

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        self._enter("put")
        with self._lock:
            self.objects[key] = StoredObject(bytes(data), content_type, cache_control)
            self.put_counts[key] = self.put_counts.get(key, 0) + 1

    def get(self, key: str) -> bytes:
        self._enter("get")
        with self._lock:
            stored = self.objects.get(key)
        if stored is None:
            raise ObjectNotFound(f"memory get failed: NoSuchKey {key}")
        return stored.data

    def delete(self, key: str) -> None:
        self._enter("delete")
        with self._lock:
            self.objects.pop(key, None)

    def exists(self, key: str) -> bool:
        self._enter("head")
        with self._lock:
            return key in self.objects

    def presigned_url(self, key: str, *, expires: int = 300) -> str:
        self._enter("presign")
        return f"memory://objects/{key}?expires={expires}"

    def check_bucket(self) -> str:
        self._enter("head_bucket")
        return "in-memory store"
