"""The cleanup job through its three callers: a running gateway, the lease, ``picgate cleanup``.

Real parts only: PicGate under uvicorn on 127.0.0.1, moto's S3 server as R2, SQLite files shared
by several ``Services`` (as replicas share a database), and the CLI as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select, update

from picgate.config import Settings
from picgate.db.models import R2_FAILED, R2_PENDING, R2_UPLOADED
from picgate.jobs.scheduler import CleanupScheduler, acquire_lease, run_scheduled
from picgate.library.eviction import SizeCap
from picgate.library.records import ImageOrigin, StoredImage, utcnow
from picgate.services import Services
from picgate.storage.memory_store import MemoryObjectStore
from picgate.storage.object_store import DEFAULT_CACHE_CONTROL
from picgate.storage.s3_store import S3ObjectStore
from tests import orm
from tests.conftest import GATEWAY_KEY, Gateway
from tests.orm import Image, JobLease
from tests.s3_fixtures import S3_TEST_BUCKET
from tests.support.admin import signed_in
from tests.support.images import make_image
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
PAST_TTL = timedelta(hours=72, minutes=1)
MakeServices = Callable[..., Services]


def row(services: Services, image_id: str) -> Image:
    found = orm.read(services.db, lambda s: s.get(Image, image_id))
    assert found is not None
    return found


def store_one(services: Services, seed: int = 1) -> StoredImage:
    return services.library.save_sync(
        make_image("PNG", 2_000, seed=seed), origin=ImageOrigin("test")
    )


# -- serving after cleanup ------------------------------------------------------------------


def test_image_past_ttl_without_r2_is_410_gone(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway()
    image = store_one(gateway.services)
    url = f"{gateway.url}/images/{image.id}.png"
    assert httpx.get(url).status_code == 200

    report = gateway.services.cleanup.run(now=utcnow() + PAST_TTL)

    assert report.ttl_removed == 1 and report.expired_for_good == 1
    resp = httpx.get(url)
    assert resp.status_code == 410
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    after = row(gateway.services, image.id)
    assert (after.local, after.expired) == (False, True)


def test_image_past_ttl_with_r2_is_fetched_back(
    start_gateway: Callable[..., Gateway], r2_settings: dict[str, Any], s3_store: S3ObjectStore
) -> None:
    gateway = start_gateway(**r2_settings)
    image = store_one(gateway.services, seed=2)
    for _ in range(100):  # the gateway's own upload worker may hold the row for a moment
        gateway.services.cleanup.run()
        if row(gateway.services, image.id).r2_state == R2_UPLOADED:
            break
        time.sleep(0.05)
    assert s3_store.exists(f"images/{image.id}.png")

    report = gateway.services.cleanup.run(now=utcnow() + PAST_TTL)

    assert report.ttl_removed == 1 and report.expired_for_good == 0
    assert not gateway.services.cache.exists(image.id, "png")
    resp = httpx.get(f"{gateway.url}/images/{image.id}.png")
    assert resp.status_code == 200
    assert resp.content == make_image("PNG", 2_000, seed=2)
    assert row(gateway.services, image.id).local is True


def test_pending_uploads_survive_r2_switched_off_then_the_cap(
    start_gateway: Callable[..., Gateway],
) -> None:
    """Images queued for R2 while it was on hold their only copy: switching R2 off in the admin
    must not let the size cap or the TTL delete them (before: 3 of 6 lost)."""
    gateway = start_gateway()
    client, token = signed_in(gateway.url)
    headers = {"X-CSRF-Token": token}
    dead = {  # R2 on, but nothing listens there: every upload fails and stays queued
        "r2_endpoint_url": f"http://127.0.0.1:{free_port()}",
        "r2_access_key_id": "testing",
        "r2_secret_access_key": "testing",
        "r2_bucket_name": "picgate-dead",
    }
    answer = client.put("/admin/api/settings", json={"values": dead}, headers=headers)
    assert answer.status_code == 200, answer.text
    images = [
        gateway.services.library.save_sync(
            make_image("PNG", 400_000, seed=30 + i), origin=ImageOrigin("t")
        )
        for i in range(6)
    ]
    assert {row(gateway.services, i.id).r2_state for i in images} <= {R2_PENDING, R2_FAILED}

    off = dict.fromkeys(dead) | {"max_local_cache_mb": 1}
    answer = client.put("/admin/api/settings", json={"values": off}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert not gateway.services.config.current().r2_configured
    store_one(gateway.services, seed=40)  # the cap runs after this store
    gateway.services.cleanup.run(now=utcnow() + PAST_TTL)  # and the TTL with the cap

    for image in images:
        assert gateway.services.cache.exists(image.id, "png"), image.id
        served = httpx.get(f"{gateway.url}/images/{image.id}.png")
        assert served.status_code == 200
        assert served.content == make_image("PNG", 400_000, seed=30 + images.index(image))
    client.close()


# -- one runner at a time -------------------------------------------------------------------


class GatedStore(MemoryObjectStore):
    """Holds every put until ``release`` is set: keeps the lease holder inside the job."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        self.entered.set()
        self.release.wait(timeout=30)
        super().put(key, data, content_type=content_type, cache_control=cache_control)


def test_two_runners_on_one_database_exactly_one_works(make_services: MakeServices) -> None:
    objects = GatedStore()
    first = make_services(objects=objects)
    second = make_services(objects=objects)  # same SQLite file and image folder: a replica
    image = store_one(first)
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []
    done = threading.Condition()

    def runner(services: Services) -> None:
        barrier.wait()
        result = run_scheduled(services.cleanup)
        with done:
            results.append(result)
            done.notify_all()

    threads = [threading.Thread(target=runner, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    assert objects.entered.wait(timeout=30)  # one runner holds the lease, inside the job
    with done:
        assert done.wait_for(lambda: len(results) == 1, timeout=30)  # the other gave up
    assert results[0]["ran"] is False
    objects.release.set()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(r["ran"] for r in results) == [False, True]
    assert objects.put_counts == {f"images/{image.id}.png": 1}
    lease = orm.read(first.db, lambda s: s.get(JobLease, "cleanup"))
    assert lease is not None and lease.owner is None and lease.last_report


def test_run_scheduled_crashed_runners_lease_expires(make_services: MakeServices) -> None:
    services = make_services()
    now = utcnow()
    assert acquire_lease(services.db, owner="crashed-runner", now=now)

    assert run_scheduled(services.cleanup, now=now + timedelta(minutes=10))["ran"] is False
    result = run_scheduled(services.cleanup, now=now + timedelta(minutes=31))

    assert result["ran"] is True
    json.dumps(result)  # what handler.cleanup returns to Lambda


def test_run_scheduled_min_interval_skips_recent_run(make_services: MakeServices) -> None:
    services = make_services()
    now = utcnow()
    hour = timedelta(hours=1)
    assert run_scheduled(services.cleanup, now=now, min_interval=hour)["ran"] is True
    assert run_scheduled(services.cleanup, now=now + hour / 2, min_interval=hour)["ran"] is False
    assert run_scheduled(services.cleanup, now=now + hour, min_interval=hour)["ran"] is True


async def test_cleanup_scheduler_runs_when_due_then_waits(make_services: MakeServices) -> None:
    services = make_services()
    scheduler = CleanupScheduler(services.cleanup, interval_minutes=60, first_delay=0, poll=0.02)
    task = asyncio.create_task(scheduler.run())
    try:
        for _ in range(1000):
            last = scheduler.last_result
            if scheduler.runs and last is not None and last["ran"] is False:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert scheduler.runs == 1  # polled again, but the next run is an hour away
    assert scheduler.last_result is not None
    assert scheduler.last_result == {"ran": False, "reason": scheduler.last_result["reason"]}


@pytest.mark.parametrize(("mode", "scheduled"), [("server", True), ("serverless", False)])
def test_services_register_scheduler_only_in_server_mode(
    make_settings: Callable[..., Settings], mode: str, scheduled: bool
) -> None:
    r2 = {  # serverless mode requires R2; nothing connects to it here
        "r2_endpoint_url": "http://127.0.0.1:9",
        "r2_access_key_id": "testing",
        "r2_secret_access_key": "testing",
        "r2_bucket_name": S3_TEST_BUCKET,
    }
    services = Services(make_settings(runtime_mode=mode, **r2))
    try:
        owners = [getattr(job, "__self__", None) for job in services.background]
        assert any(isinstance(o, CleanupScheduler) for o in owners) is scheduled
        assert isinstance(services.library.size_cap, SizeCap)  # save() applies it in both modes
    finally:
        anyio.run(services.http.aclose)


# -- picgate cleanup ------------------------------------------------------------------------


def cli_settings(data: Path, **extra: Any) -> dict[str, str]:
    """Environment for the subprocess (the same values build the Services that seed it)."""
    env = {
        "DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data}/db/picgate.db",
        "IMAGES_DIR": str(data / "images"),
        "GATEWAY_API_KEY": GATEWAY_KEY,
        "SECRET_KEY": "test-secret-key-0123456789",
        "RUNTIME_MODE": "server",
    }
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


def seed(env: dict[str, str], count: int) -> tuple[Services, list[StoredImage]]:
    services = Services(Settings.model_validate({k.lower(): v for k, v in env.items()}))
    services.prepare()
    images = [store_one(services, seed=30 + i) for i in range(count)]
    return services, images


def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picgate.cli", "cleanup"],
        env={**os.environ, **env, "PYTHONIOENCODING": "utf-8"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_cleanup_expires_old_copy_and_prints_report(tmp_path: Path) -> None:
    env = cli_settings(tmp_path / "data")
    services, (old, fresh) = seed(env, 2)
    stale = utcnow() - timedelta(hours=100)
    orm.write(
        services.db,
        lambda s: s.execute(update(Image).where(Image.id == old.id).values(accessed_at=stale)),
    )

    proc = run_cli(env)

    assert proc.returncode == 0, proc.stderr
    assert "picgate cleanup: ok" in proc.stdout
    assert "local copies past the TTL removed" in proc.stdout
    assert (row(services, old.id).local, row(services, old.id).expired) == (False, True)
    assert row(services, fresh.id).local is True
    lease = orm.read(services.db, lambda s: s.get(JobLease, "cleanup"))
    assert lease is not None and json.loads(lease.last_report or "{}")["ttl_removed"] == 1
    anyio.run(services.http.aclose)
    services.db.dispose()


def test_cli_cleanup_uploads_pending_and_failed_at_once(
    tmp_path: Path, r2_settings: dict[str, Any], s3_store: S3ObjectStore
) -> None:
    env = cli_settings(tmp_path / "data", **r2_settings)
    services, (pending, failed) = seed(env, 2)
    later = utcnow() + timedelta(hours=1)  # its slow retry is not due yet
    orm.write(
        services.db,
        lambda s: s.execute(
            update(Image)
            .where(Image.id == failed.id)
            .values(r2_state=R2_FAILED, r2_next_attempt_at=later)
        ),
    )

    proc = run_cli(env)

    assert proc.returncode == 0, proc.stderr
    states = orm.read(services.db, lambda s: set(s.scalars(select(Image.r2_state))))
    assert states == {R2_UPLOADED}
    assert s3_store.exists(f"images/{pending.id}.png") and s3_store.exists(
        f"images/{failed.id}.png"
    )
    anyio.run(services.http.aclose)
    services.db.dispose()
