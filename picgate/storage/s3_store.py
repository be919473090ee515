"""The S3/R2 object store over HTTP (boto3), with botocore failures wrapped once.

The client retries a request a few times within one call (botocore "standard" mode); retries
with backoff across calls live above it, in the upload queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from picgate.storage.object_store import (
    DEFAULT_CACHE_CONTROL,
    MAX_PRESIGN_SECONDS,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
)

_T = TypeVar("_T")


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
