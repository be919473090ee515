"""An in-process object store for tests: thread-safe, and can fail or be slow on demand."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from picgate.storage.object_store import (
    DEFAULT_CACHE_CONTROL,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
)


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
