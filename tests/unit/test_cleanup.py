"""The cleanup job on a real SQLite file and image folder, with an injected clock.

R2 is an in-memory object store forced into Services (``objects=``) where a test needs one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from picgate.db.models import R2_FAILED, R2_NONE, R2_PENDING, R2_UPLOADED
from picgate.eventlog import new_log_id
from picgate.jobs.cleanup import JobReport
from picgate.jobs.scheduler import run_scheduled
from picgate.library.records import ImageOrigin, StoredImage, utcnow
from picgate.library.repair import repair
from picgate.services import Services
from picgate.storage.memory_store import MemoryObjectStore
from tests import orm
from tests.orm import AdminSession, Image, LogEntry, LoginAttempt
from tests.support.images import make_image

MakeServices = Callable[..., Services]
TTL = timedelta(hours=72)
SECOND = timedelta(seconds=1)


def store(services: Services, count: int, *, size: int = 1_000, seed: int = 0) -> list[StoredImage]:
    return [
        services.library.save_sync(
            make_image("PNG", size, seed=seed + i + 1), origin=ImageOrigin("test")
        )
        for i in range(count)
    ]


def set_row(services: Services, image_id: str, **values: Any) -> None:
    orm.write(
        services.db, lambda s: s.execute(update(Image).where(Image.id == image_id).values(**values))
    )


def row(services: Services, image_id: str) -> Image:
    found = orm.read(services.db, lambda s: s.get(Image, image_id))
    assert found is not None
    return found


def has_file(services: Services, image: StoredImage) -> bool:
    return services.cache.exists(image.id, image.ext)


def log_lines(services: Services) -> list[str]:
    services.events.flush()
    return list(orm.read(services.db, lambda s: s.scalars(select(LogEntry.message)).all()))


# -- TTL ------------------------------------------------------------------------------------


def test_run_jobs_ttl_boundary_just_under_kept_just_over_removed(
    make_services: MakeServices,
) -> None:
    services = make_services()
    fresh, old = store(services, 2)
    now = utcnow()
    set_row(services, fresh.id, accessed_at=now - TTL + SECOND)
    set_row(services, old.id, accessed_at=now - TTL - SECOND)

    report = services.cleanup.run(now=now)

    assert report.ok, report.errors
    assert report.ttl_removed == 1 and report.expired_for_good == 1
    assert report.bytes_freed == old.size
    assert has_file(services, fresh) and row(services, fresh.id).local
    assert not has_file(services, old)
    gone = row(services, old.id)
    assert (gone.local, gone.expired) == (False, True)
    assert any(line.startswith("🧹 过期清理: 删除 1 张") for line in log_lines(services))


def test_run_jobs_ttl_uses_buffered_access_times(make_services: MakeServices) -> None:
    services = make_services()
    (image,) = store(services, 1)
    set_row(services, image.id, accessed_at=utcnow() - TTL - TTL)
    services.library.rows.touch(image.id)  # served a moment ago; not yet written to the table

    report = services.cleanup.run(now=utcnow() + SECOND)

    assert report.ttl_removed == 0 and has_file(services, image)


def test_run_jobs_ttl_zero_means_never(make_services: MakeServices) -> None:
    services = make_services(local_cache_ttl_hours=0)
    (image,) = store(services, 1)
    report = services.cleanup.run(now=utcnow() + timedelta(days=300))
    assert report.ttl_removed == 0 and has_file(services, image)


# the safety rule: (R2 configured, r2_state) → (local copy removed, row marked expired)
SAFETY = [
    (True, R2_NONE, False, False),
    (True, R2_PENDING, False, False),
    (True, R2_FAILED, False, False),
    (True, R2_UPLOADED, True, False),
    (False, R2_NONE, True, True),
    (False, R2_PENDING, False, False),  # queued while R2 was on: the only copy
    (False, R2_FAILED, False, False),
    (False, R2_UPLOADED, True, False),
]


@pytest.mark.parametrize(("r2_on", "state", "removed", "expired"), SAFETY)
def test_clean_expired_safety_rule_by_r2_state(
    make_services: MakeServices, r2_on: bool, state: str, removed: bool, expired: bool
) -> None:
    services = make_services(objects=MemoryObjectStore() if r2_on else None)
    (image,) = store(services, 1)
    now = utcnow()
    set_row(services, image.id, r2_state=state, accessed_at=now - TTL - SECOND)

    result = services.library.actions.clean_expired(now=now)

    assert result["removed"] == int(removed)
    assert result["kept"] == int(not removed)
    assert has_file(services, image) is not removed
    after = row(services, image.id)
    assert (after.local, after.expired) == (not removed, expired)


@pytest.mark.parametrize(("r2_on", "state", "removed", "expired"), SAFETY)
def test_evict_to_cap_safety_rule_by_r2_state(
    make_services: MakeServices, r2_on: bool, state: str, removed: bool, expired: bool
) -> None:
    services = make_services(objects=MemoryObjectStore() if r2_on else None)
    images = store(services, 3, size=400_000)
    for image in images:
        set_row(services, image.id, r2_state=state)

    result = services.library.copies.evict_to_cap(
        cap_bytes=2**20,
    )

    assert (result.removed > 0) is removed
    assert bool(result.kept) is not removed
    for image in images[: result.removed]:
        after = row(services, image.id)
        assert (after.local, after.expired) == (False, expired)
    if not removed:
        assert all(has_file(services, image) for image in images)


# -- size cap -------------------------------------------------------------------------------


def test_run_jobs_cap_evicts_least_recently_accessed_first(make_services: MakeServices) -> None:
    services = make_services()
    images = store(services, 5, size=300_000)
    services.config.save({"max_local_cache_mb": 1})  # as the admin would, after the stores
    now = utcnow()
    # access order, oldest first: 3, 1, 4, 0, 2
    order = [3, 1, 4, 0, 2]
    for rank, index in enumerate(order):
        set_row(services, images[index].id, accessed_at=now - timedelta(minutes=10 - rank))
    total = sum(i.size for i in images)
    expected = 0
    while total > 2**20:
        total -= images[order[expected]].size
        expected += 1

    report = services.cleanup.run(now=now)

    assert report.cap_removed == expected >= 1
    gone = {images[i].id for i in order[:expected]}
    for image in images:
        assert has_file(services, image) is (image.id not in gone)
    assert services.cache.usage() <= 2**20
    assert f"🧹 自动清理: 删除 {expected} 张最早的图片，保持在 1MB 限制内" in log_lines(services)


def test_store_over_cap_evicts_oldest_and_spares_new_image(make_services: MakeServices) -> None:
    services = make_services(max_local_cache_mb=1)
    first = store(services, 3, size=300_000)
    for age, image in enumerate(first):
        set_row(services, image.id, accessed_at=utcnow() - timedelta(minutes=10 - age))
    assert services.cache.usage() <= 2**20

    (new,) = store(services, 1, size=400_000, seed=10)  # the hook runs inside store_bytes

    assert services.cache.usage() <= 2**20
    assert has_file(services, new)
    assert not has_file(services, first[0])
    assert has_file(services, first[2])


def test_store_over_cap_keeps_images_not_yet_in_r2(make_services: MakeServices) -> None:
    store_ = MemoryObjectStore()
    services = make_services(objects=store_, max_local_cache_mb=1)
    images = store(services, 5, size=300_000)  # all pending: the only copies

    assert all(has_file(services, image) for image in images)
    assert services.cache.usage() > 2**20
    assert any("暂不删除" in line for line in log_lines(services))


# -- uploads --------------------------------------------------------------------------------


def test_run_jobs_uploads_pending_before_ttl(make_services: MakeServices) -> None:
    objects = MemoryObjectStore()
    services = make_services(objects=objects)
    (image,) = store(services, 1)
    now = utcnow()
    set_row(services, image.id, accessed_at=now - TTL - SECOND)

    report = services.cleanup.run(now=now)

    assert report.uploaded == 1 and report.ttl_removed == 1
    assert f"images/{image.id}.png" in objects.objects
    after = row(services, image.id)
    assert (after.r2_state, after.local, after.expired) == (R2_UPLOADED, False, False)


@pytest.mark.parametrize("include_failed", [False, True])
def test_run_jobs_failed_uploads_only_when_asked(
    make_services: MakeServices, include_failed: bool
) -> None:
    services = make_services(objects=MemoryObjectStore())
    (image,) = store(services, 1)
    set_row(services, image.id, r2_state=R2_FAILED, r2_next_attempt_at=utcnow() + TTL)

    report = services.cleanup.run(include_failed=include_failed)

    assert report.uploaded == int(include_failed)
    assert row(services, image.id).r2_state == (R2_UPLOADED if include_failed else R2_FAILED)


def test_run_jobs_r2_down_keeps_only_copy_and_reports_retry(make_services: MakeServices) -> None:
    objects = MemoryObjectStore()
    objects.fail = True
    services = make_services(objects=objects)
    (image,) = store(services, 1)
    now = utcnow()
    set_row(services, image.id, accessed_at=now - TTL - SECOND)

    report = services.cleanup.run(now=now)

    assert report.uploaded == 0 and report.upload_retried == 1
    assert report.ttl_removed == 0 and report.kept_unsafe == 1
    assert has_file(services, image)


# -- metadata retention ---------------------------------------------------------------------


@pytest.mark.parametrize("delete_remote", [False, True])
def test_run_jobs_retention_deletes_old_rows_files_and_objects(
    make_services: MakeServices, delete_remote: bool
) -> None:
    objects = MemoryObjectStore()
    services = make_services(
        objects=objects, metadata_retention_days=30, delete_r2_on_metadata_expire=delete_remote
    )
    young, old = store(services, 2)
    services.cleanup.run()  # uploads both
    now = utcnow()
    set_row(services, young.id, created_at=now - timedelta(days=29))
    set_row(services, old.id, created_at=now - timedelta(days=31))

    report = services.cleanup.run(now=now)

    assert report.rows_deleted == 1 and report.ok
    assert orm.write(services.db, lambda s: s.get(Image, old.id)) is None
    assert not has_file(services, old) and has_file(services, young)
    assert (f"images/{old.id}.png" in objects.objects) is not delete_remote
    assert f"images/{young.id}.png" in objects.objects
    assert report.r2_objects_deleted == int(delete_remote)


def test_run_jobs_retention_r2_down_keeps_row_and_fails(make_services: MakeServices) -> None:
    objects = MemoryObjectStore()
    services = make_services(
        objects=objects, metadata_retention_days=30, delete_r2_on_metadata_expire=True
    )
    (image,) = store(services, 1)
    services.cleanup.run()
    set_row(services, image.id, created_at=utcnow() - timedelta(days=31))
    objects.fail = True

    report = services.cleanup.run()

    assert not report.ok and report.rows_deleted == 0
    assert row(services, image.id).r2_state == R2_UPLOADED
    assert has_file(services, image)


# -- logs, sessions -------------------------------------------------------------------------


def test_run_jobs_trims_logs_and_expires_sessions(make_services: MakeServices) -> None:
    services = make_services(log_max_entries=100)
    now = utcnow()

    def seed(session: Any) -> None:
        for i in range(150):
            session.add(LogEntry(id=new_log_id(), created_at=now, level="INFO", message=f"x{i}"))
        for name, expires in (("dead", now - SECOND), ("live", now + TTL)):
            session.add(
                AdminSession(
                    id=name,
                    user_id="u",
                    csrf_token="c",
                    created_at=now - TTL,
                    last_seen_at=now - TTL,
                    expires_at=expires,
                )
            )
        old = now - timedelta(days=2)
        session.add(LoginAttempt(key="ip:stale", failures=3, window_start=old))
        session.add(
            LoginAttempt(key="ip:locked", failures=9, window_start=old, locked_until=now + TTL)
        )
        session.add(LoginAttempt(key="ip:recent", failures=1, window_start=now))

    orm.write(services.db, seed)

    report = services.cleanup.run(now=now)

    assert report.logs_trimmed >= 50
    assert (report.sessions_deleted, report.login_attempts_deleted) == (1, 1)
    left = orm.read(services.db, lambda s: s.scalar(select(func.count()).select_from(LogEntry)))
    assert left is not None and left <= 101  # the cap, plus the job's own summary line
    keys = orm.read(services.db, lambda s: set(s.scalars(select(LoginAttempt.key))))
    assert keys == {"ip:locked", "ip:recent"}
    assert orm.write(services.db, lambda s: set(s.scalars(select(AdminSession.id)))) == {"live"}


# -- repair ---------------------------------------------------------------------------------


def age(path: Path, hours: float) -> None:
    when = path.stat().st_mtime - hours * 3600
    os.utime(path, (when, when))


def test_repair_orphans_missing_files_and_temp_files(make_services: MakeServices) -> None:
    services = make_services(objects=MemoryObjectStore())
    kept, lost_uploaded, lost_pending, relinked = store(services, 4)
    set_row(services, lost_uploaded.id, r2_state=R2_UPLOADED)
    services.cache.path(lost_uploaded.id, "png").unlink()
    services.cache.path(lost_pending.id, "png").unlink()
    set_row(services, relinked.id, local=False, expired=True)
    old_orphan = services.cache.write("orphanorphanorphan01", "png", b"x" * 10)
    young_orphan = services.cache.write("orphanorphanorphan02", "png", b"y" * 10)
    age(old_orphan, 2)
    old_tmp = old_orphan.parent / ".tmp-deadbeef"
    old_tmp.write_bytes(b"half")
    age(old_tmp, 2)
    young_tmp = old_orphan.parent / ".tmp-cafebabe"
    young_tmp.write_bytes(b"half")

    result = repair(rows=services.library.rows, cache=services.cache, now=utcnow())

    assert (result.orphans_removed, result.missing_marked) == (1, 2)
    assert (result.relinked, result.tmp_removed) == (1, 1)
    assert not old_orphan.exists() and young_orphan.exists()
    assert not old_tmp.exists() and young_tmp.exists()
    uploaded = row(services, lost_uploaded.id)
    assert (uploaded.local, uploaded.expired) == (False, False)
    pending = row(services, lost_pending.id)
    assert (pending.local, pending.expired) == (False, True)
    back = row(services, relinked.id)
    assert (back.local, back.expired) == (True, False)
    assert row(services, kept.id).local and has_file(services, kept)
    assert services.cache.usage() == sum(f.size for f in services.cache.scan())


# -- manual operations and stats ------------------------------------------------------------


def test_clear_local_removes_only_images_in_r2(make_services: MakeServices) -> None:
    services = make_services(objects=MemoryObjectStore())
    uploaded, pending = store(services, 2)
    set_row(services, uploaded.id, r2_state=R2_UPLOADED)

    result = services.library.actions.clear_local()

    assert (result["removed"], result["kept"], result["r2_configured"]) == (1, 1, True)
    assert not has_file(services, uploaded) and has_file(services, pending)


def test_clear_local_without_r2_keeps_everything(make_services: MakeServices) -> None:
    services = make_services()
    images = store(services, 2)
    result = services.library.actions.clear_local()
    assert (result["removed"], result["kept"], result["r2_configured"]) == (0, 2, False)
    assert all(has_file(services, image) for image in images)


def test_cache_stats_counts_every_state(make_services: MakeServices) -> None:
    services = make_services(objects=MemoryObjectStore(), max_local_cache_mb=5)
    a, b, c, d = store(services, 4)
    set_row(services, a.id, r2_state=R2_UPLOADED, local=False)
    set_row(services, b.id, r2_state=R2_FAILED)
    set_row(services, c.id, r2_state=R2_NONE, local=False, expired=True)
    services.cache.delete(a.id, a.ext)
    services.cache.delete(c.id, c.ext)

    stats = services.library.stats.cache_stats(
        services.config.current(),
    )

    expected = {"total": 4, "local": 2, "r2": 1, "pending": 1, "failed": 1, "expired": 1}
    assert {k: stats[k] for k in expected} == expected
    assert stats["disk_bytes"] == b.size + d.size == stats["local_bytes"]
    assert stats["cap_bytes"] == 5 * 2**20


def test_dashboard_stats_today_counters_and_last_run(make_services: MakeServices) -> None:
    services = make_services()
    services.events.count("requests", 3)
    services.events.error("❌ test")
    assert (
        services.library.stats.dashboard_stats(
            services.config.current(),
        )["last_cleanup"]
        is None
    )

    result = run_scheduled(services.cleanup)
    stats = services.library.stats.dashboard_stats(
        services.config.current(),
    )

    assert result["ran"] is True
    assert (stats["requests_today"], stats["errors_today"]) == (3, 1)
    last = stats["last_cleanup"]
    assert last["running"] is False and last["report"]["ok"] is True
    assert last["last_run_at"] == result["started_at"]


def test_dashboard_stats_images_today_counts_rows_created_since_utc_midnight(
    make_services: MakeServices,
) -> None:
    services = make_services()
    now = datetime(2026, 12, 5, 10, 30)  # naive UTC, as the rows store it
    midnight = datetime(2026, 12, 5)
    created = [
        midnight - timedelta(microseconds=1),  # yesterday's last instant
        midnight,
        now,
        midnight + timedelta(days=1) - timedelta(microseconds=1),
        midnight + timedelta(days=1),  # tomorrow (a clock set back): not today
    ]
    for image, when in zip(store(services, len(created)), created, strict=True):
        set_row(services, image.id, created_at=when)

    def images_today(at: datetime) -> int:
        stats = services.library.stats.dashboard_stats(
            services.config.current(),
            now=at,
        )
        return int(stats["images_today"])

    assert images_today(now) == 3
    # an aware time is taken in UTC: 01:30 at UTC+3 on the 6th is still the 5th in UTC
    assert images_today(datetime(2026, 12, 6, 1, 30, tzinfo=timezone(timedelta(hours=3)))) == 3
    assert images_today(midnight - timedelta(hours=1)) == 1


def test_job_report_to_dict_is_json_and_summary_chinese() -> None:
    report = JobReport(started_at=utcnow(), ttl_removed=2, bytes_freed=3 * 2**20)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ttl_removed"] == 2 and data["ok"] is True
    assert "过期删除 2 张" in report.summary() and "3.0 MB" in report.summary()
