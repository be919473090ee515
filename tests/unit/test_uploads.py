"""The R2 upload queue and the console actions, on a real SQLite file and an in-memory store."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from picgate.config import Settings
from picgate.db.models import R2_FAILED, R2_NONE, R2_PENDING, R2_UPLOADED
from picgate.library.actions import test_r2
from picgate.library.records import ImageOrigin, StoredImage, utcnow
from picgate.library.uploads import (
    MAX_FAST_ATTEMPTS,
    MISSING_LOCAL,
    backoff_delay,
    new_owner,
)
from picgate.services import Services
from picgate.storage.memory_store import MemoryObjectStore
from picgate.storage.object_store import DEFAULT_CACHE_CONTROL
from picgate.storage.s3_store import S3ObjectStore
from tests import orm
from tests.orm import Image, LogEntry
from tests.support.images import make_image

MakeServices = Callable[..., Services]
LATER = timedelta(days=1)


def store_images(services: Services, count: int) -> list[StoredImage]:
    return [
        services.library.save_sync(make_image("PNG", 1_000, seed=i + 1), origin=ImageOrigin("test"))
        for i in range(count)
    ]


def row(services: Services, image_id: str) -> Image:
    found = orm.read(services.db, lambda s: s.get(Image, image_id))
    assert found is not None
    return found


def fail_row(services: Services, image_id: str) -> None:
    """Put a row in the failed state with its slow retry far away."""

    def work(session: Any) -> None:
        found = session.get(Image, image_id)
        found.r2_state, found.r2_attempts = R2_FAILED, MAX_FAST_ATTEMPTS
        found.r2_next_attempt_at = utcnow() + LATER

    orm.write(services.db, work)


def log_lines(services: Services) -> list[str]:
    services.events.flush()
    return list(orm.read(services.db, lambda s: s.scalars(select(LogEntry.message)).all()))


def test_backoff_delay_doubles_within_jitter_band() -> None:
    rng = random.Random(7)
    for failures, step in ((1, 2.0), (2, 4.0), (3, 8.0), (20, 300.0)):
        for _ in range(50):
            delay = backoff_delay(failures, rng=rng)
            assert step / 2 <= delay <= step


def test_upload_due_pending_rows_uploaded_once_with_headers(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    images = store_images(services, 3)
    assert {row(services, i.id).r2_state for i in images} == {R2_PENDING}

    assert services.library.uploads.upload_due() == {
        "uploaded": 3,
        "failed": 0,
        "retried": 0,
        "skipped": 0,
    }
    assert services.library.uploads.upload_due()["uploaded"] == 0
    for image in images:
        stored = store.objects[f"images/{image.id}.png"]
        assert stored.data == services.cache.read(image.id, "png")
        assert stored.content_type == "image/png"
        assert stored.cache_control == DEFAULT_CACHE_CONTROL
        assert row(services, image.id).r2_state == R2_UPLOADED
        assert row(services, image.id).r2_lease_owner is None
    assert set(store.put_counts.values()) == {1}
    assert sum("☁️ 已上传到 R2: " in line for line in log_lines(services)) == 3


def test_upload_due_store_down_backs_off_then_fails_keeping_error(
    make_services: MakeServices,
) -> None:
    store = MemoryObjectStore()
    store.fail = True
    services = make_services(objects=store)
    (image,) = store_images(services, 1)
    now = utcnow()
    for attempt in range(1, MAX_FAST_ATTEMPTS):
        assert services.library.uploads.upload_due(now=now)["retried"] == 1
        current = row(services, image.id)
        assert (current.r2_state, current.r2_attempts) == (R2_PENDING, attempt)
        assert current.r2_next_attempt_at is not None and current.r2_next_attempt_at > now
        assert services.library.uploads.upload_due(now=now)["uploaded"] == 0  # not due yet
        now = current.r2_next_attempt_at
    assert services.library.uploads.upload_due(now=now)["failed"] == 1
    failed = row(services, image.id)
    assert failed.r2_state == R2_FAILED
    assert failed.r2_last_error and "store is down" in failed.r2_last_error
    assert any(line.startswith("❌ R2 上传失败") for line in log_lines(services))

    # the slow retry comes by itself, without include_failed: an outage never strands a row
    store.fail = False
    assert services.library.uploads.upload_due(now=now + timedelta(minutes=5))["uploaded"] == 0
    assert services.library.uploads.upload_due(now=now + LATER)["uploaded"] == 1
    assert row(services, image.id).r2_state == R2_UPLOADED


def test_upload_due_include_failed_retries_failed_rows_now(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    (image,) = store_images(services, 1)
    fail_row(services, image.id)
    assert services.library.uploads.upload_due()["uploaded"] == 0
    assert services.library.uploads.upload_due(include_failed=True)["uploaded"] == 1


def test_upload_due_missing_local_file_marks_failed(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    (image,) = store_images(services, 1)
    services.cache.delete(image.id, image.ext)
    assert services.library.uploads.upload_due()["failed"] == 1
    current = row(services, image.id)
    assert (current.r2_state, current.r2_last_error) == (R2_FAILED, MISSING_LOCAL)
    assert store.put_counts == {}


def test_upload_due_row_leased_elsewhere_is_skipped(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    store_images(services, 2)
    tasks, held = services.library.uploads.claim(owner=new_owner(), now=utcnow(), limit=1)
    assert (len(tasks), held) == (1, 0)
    counts = services.library.uploads.upload_due()
    assert (counts["uploaded"], counts["skipped"]) == (1, 1)


def test_upload_due_two_services_one_database_upload_each_image_once(
    make_services: MakeServices,
) -> None:
    store = MemoryObjectStore(delay=0.002)
    first = make_services(objects=store)
    second = make_services(objects=store)
    images = store_images(first, 30)
    totals = [0, 0]
    start = threading.Barrier(2)

    def drain(services: Services, slot: int) -> None:
        start.wait()
        for _ in range(50):
            counts = services.library.uploads.upload_due(limit=4)
            totals[slot] += counts["uploaded"]
            if counts["uploaded"] == 0 and counts["skipped"] == 0:
                return

    threads = [threading.Thread(target=drain, args=(s, n)) for n, s in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(totals) == 30
    assert all(totals), totals  # both really worked
    assert len(store.put_counts) == 30 and set(store.put_counts.values()) == {1}
    assert {row(first, i.id).r2_state for i in images} == {R2_UPLOADED}


def test_upload_due_without_r2_does_nothing(make_services: MakeServices) -> None:
    services = make_services()
    (image,) = store_images(services, 1)
    assert row(services, image.id).r2_state == R2_NONE
    assert services.library.uploads.upload_due(include_failed=True) == dict.fromkeys(
        ("uploaded", "failed", "retried", "skipped"), 0
    )


def test_remote_objects_rebuilt_only_when_r2_settings_change(make_services: MakeServices) -> None:
    services = make_services()
    assert services.archive.objects() is None
    r2 = {"r2_endpoint_url": "http://127.0.0.1:9", "r2_access_key_id": "ak"}
    services.config.save(r2 | {"r2_secret_access_key": "sk", "r2_bucket_name": "first"})
    store = services.archive.objects()
    assert isinstance(store, S3ObjectStore) and store.bucket == "first"
    assert services.archive.objects() is store
    services.config.save({"local_cache_ttl_hours": 5})
    assert services.archive.objects() is store
    services.config.save({"r2_bucket_name": "second"})
    rebuilt = services.archive.objects()
    assert isinstance(rebuilt, S3ObjectStore) and rebuilt.bucket == "second"
    assert services.archive.upload_objects() is not rebuilt  # the single-attempt upload client


def test_upload_pending_ignores_backoff(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    store_images(services, 3)
    store.fail = True
    assert services.library.uploads.upload_due()["retried"] == 3
    store.fail = False
    assert services.library.uploads.upload_due()["uploaded"] == 0
    counts = services.library.actions.upload_pending()
    assert (counts["uploaded"], counts["remaining"]) == (3, 0)


def test_archive_local_uploads_images_stored_before_r2(make_services: MakeServices) -> None:
    before = make_services()  # no R2 yet: rows stay r2_state "none" and are never queued
    images = store_images(before, 3)
    assert {row(before, i.id).r2_state for i in images} == {R2_NONE}
    before.cache.delete(images[2].id, images[2].ext)  # no local copy left: nothing to archive
    orm.write(before.db, lambda s: s.get(Image, images[2].id).__setattr__("local", False))
    store = MemoryObjectStore()
    services = make_services(objects=store)  # the same data folder, now with R2
    assert services.library.actions.upload_pending()["uploaded"] == 0  # not queued by themselves
    counts = services.library.actions.archive_local()
    assert (counts["queued"], counts["uploaded"], counts["remaining"]) == (2, 2, 0)
    for image in images[:2]:
        assert row(services, image.id).r2_state == R2_UPLOADED
        assert store.objects[f"images/{image.id}.{image.ext}"].data == services.cache.read(
            image.id, image.ext
        )
    assert row(services, images[2].id).r2_state == R2_NONE
    assert (
        services.library.actions.archive_local()["queued"] == 0
    )  # uploaded rows are not queued again
    assert any(
        line.startswith("☁️ 未归档的本地图片已排队上传到 R2: 2 张") for line in log_lines(services)
    )


def test_archive_local_without_r2_does_nothing(make_services: MakeServices) -> None:
    services = make_services()
    image = store_images(services, 1)[0]
    assert services.library.actions.archive_local()["queued"] == 0
    assert row(services, image.id).r2_state == R2_NONE


def test_retry_failed_resets_and_uploads(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    images = store_images(services, 2)
    for image in images:
        fail_row(services, image.id)
    counts = services.library.actions.retry_failed()
    assert (counts["reset"], counts["uploaded"], counts["remaining"]) == (2, 2, 0)
    assert row(services, images[0].id).r2_attempts == 0


def test_delete_images_everything_removes_object_file_and_row(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    keep, gone = store_images(services, 2)
    services.library.uploads.upload_due()
    counts = services.library.actions.delete_images(
        [gone.id, "x" * 22],
        local=True,
        remote=True,
        forget=True,
    )
    assert counts == {
        "requested": 2,
        "local": 1,
        "remote": 1,
        "forgotten": 1,
        "not_found": 1,
        "failed": 0,
    }
    assert list(store.objects) == [f"images/{keep.id}.png"]
    assert orm.write(services.db, lambda s: s.get(Image, gone.id)) is None
    assert not services.cache.exists(gone.id, "png")
    assert services.library.rows.cached_record(gone.id) is None


def test_delete_images_local_only_of_unarchived_image_marks_expired(
    make_services: MakeServices,
) -> None:
    services = make_services(objects=MemoryObjectStore())
    (image,) = store_images(services, 1)
    # its local copy is its only one: refused unless forced (test_delete_only_copy.py)
    services.library.actions.delete_images(
        [image.id],
        local=True,
        remote=False,
        forget=False,
        force=True,
    )
    current = row(services, image.id)
    assert (current.local, current.expired) == (False, True)


def test_delete_images_r2_down_keeps_row_for_another_try(make_services: MakeServices) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    (image,) = store_images(services, 1)
    services.library.uploads.upload_due()
    store.fail = True
    counts = services.library.actions.delete_images(
        [image.id],
        local=False,
        remote=True,
        forget=True,
    )
    assert (counts["failed"], counts["forgotten"]) == (1, 0)
    assert row(services, image.id).r2_state == R2_UPLOADED
    assert any(line.startswith("❌ R2 删除失败") for line in log_lines(services))


def test_record_success_after_remote_delete_removes_written_object(
    make_services: MakeServices,
) -> None:
    store = MemoryObjectStore()
    services = make_services(objects=store)
    (image,) = store_images(services, 1)
    owner = new_owner()
    (task,), _ = services.library.uploads.claim(owner=owner, now=utcnow())
    key = services.archive.key(image.id, image.ext)
    store.put(key, b"written while the admin deleted it", content_type="image/png")
    services.library.actions.delete_images(
        [image.id],
        local=False,
        remote=True,
        forget=False,
    )
    services.library.uploads.record_success(store, task, owner=owner, key=key)
    assert key not in store.objects
    assert row(services, image.id).r2_state == R2_NONE


def test_test_r2_missing_settings_names_them(make_settings: Callable[..., Settings]) -> None:
    (check,) = test_r2(make_settings())
    assert (check.step, check.ok) == ("config", False)
    assert "R2_BUCKET_NAME" in check.detail and "R2_ENDPOINT_URL" in check.detail
