"""The cleanup job over 100,000 image rows and 10,000 local files: seconds and peak memory.

Builds a data folder (rows inserted with bulk SQL, small files written directly), then runs
``Cleanup.run`` once in a fresh child process, so the child's peak RSS is the job's own (plus
imports). A second child reruns on a fresh copy with tracemalloc for the Python heap peak.

The data set makes every step work: R2 on (an in-memory store), 1% of the local rows pending
upload (a backlog after an outage); 3,000 local rows past the TTL; a size cap below the folder's size; 5,000 rows past
retention; 200 orphan files, 200 rows whose file is gone, 100 stale temporary files; 7,000 log
lines over the 5,000 cap; 1,000 expired admin sessions.

    .venv/bin/python -m bench.cleanup [--rows 100000] [--files 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

REPO = Path(__file__).resolve().parents[1]
FILE_BYTES = 1024
CAP_MB = 5


def settings_for(data: Path) -> Any:
    from picgate.config import Settings

    return Settings(
        data_dir=data,
        database_url=f"sqlite:///{data}/db/picgate.db",
        images_dir=data / "images",
        gateway_api_key="pg-bench-key-0123456789",
        secret_key="bench-secret-key-0123456789",
        runtime_mode="server",
        max_local_cache_mb=CAP_MB,
    )


def build(data: Path, rows: int, files: int) -> None:
    from picgate.db.models import R2_PENDING, R2_UPLOADED
    from picgate.eventlog import new_log_id
    from picgate.library.records import utcnow
    from picgate.services import Services
    from picgate.storage.memory_store import MemoryObjectStore
    from tests import orm
    from tests.orm import AdminSession, Image, LogEntry

    services = Services(settings_for(data), objects=MemoryObjectStore())
    services.prepare()
    now = utcnow()
    payload = b"\x89PNG\r\n\x1a\n" + os.urandom(FILE_BYTES - 8)
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            orm.write(services.db, lambda s: s.execute(insert(Image), batch))
            batch.clear()

    for i in range(rows):
        image_id = secrets.token_urlsafe(16)
        local = i < files
        old_access = local and i < 3_000
        retired = not local and i < files + 5_000
        batch.append(
            {
                "id": image_id,
                "ext": "png",
                "mime": "image/png",
                "size": FILE_BYTES,
                "sha256": "0" * 64,
                "created_at": now - timedelta(days=400 if retired else 10),
                "accessed_at": now - timedelta(hours=100 if old_access else 1, seconds=i),
                "source": "bench",
                "local": local,
                "expired": False,
                "r2_state": R2_PENDING if local and i % 100 == 0 else R2_UPLOADED,
                "r2_attempts": 0,
                "r2_next_attempt_at": now if local and i % 100 == 0 else None,
            }
        )
        if local and i >= files - 200:
            pass  # a row whose file is gone
        elif local:
            path = services.cache.path(image_id, "png")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        if len(batch) == 5_000:
            flush()
    flush()
    old = time.time() - 7200
    for _ in range(200):
        path = services.cache.path(secrets.token_urlsafe(16), "png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        os.utime(path, (old, old))
    shard = next(p for p in (data / "images").iterdir() if p.is_dir())
    for _ in range(100):
        tmp = shard / f".tmp-{secrets.token_hex(8)}"
        tmp.write_bytes(b"half")
        os.utime(tmp, (old, old))
    logs = [
        {"id": new_log_id(), "created_at": now, "level": "INFO", "message": f"line {i}"}
        for i in range(7_000)
    ]
    sessions = [
        {
            "id": secrets.token_hex(32),
            "user_id": "u",
            "csrf_token": "c",
            "created_at": now - timedelta(days=30),
            "last_seen_at": now - timedelta(days=20),
            "expires_at": now - timedelta(days=1),
        }
        for _ in range(1_000)
    ]

    def extras(session: Any) -> None:
        session.execute(insert(LogEntry), logs)
        session.execute(insert(AdminSession), sessions)

    orm.write(services.db, extras)
    services.db.dispose()


def run_child(data: Path, *, trace: bool) -> dict[str, Any]:
    """In this (fresh) process: run the job once; report seconds and memory."""
    import tracemalloc

    from picgate.services import Services
    from picgate.storage.memory_store import MemoryObjectStore

    services = Services(settings_for(data), objects=MemoryObjectStore())
    services.prepare()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    report = services.cleanup.run()
    seconds = time.perf_counter() - started
    heap_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "rss_before_mb": rss_before / 1024,
        "rss_peak_mb": rss_after / 1024,
        "heap_peak_mb": heap_peak / 2**20,
        "report": report.to_dict(),
    }


def spawn(data: Path, *, trace: bool) -> dict[str, Any]:
    os.sync()  # the copy just written must not be flushed to disk while the job runs
    args = [sys.executable, "-m", "bench.cleanup", "--child", str(data)]
    if trace:
        args.append("--trace")
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, trace=args.trace)))
        return
    with tempfile.TemporaryDirectory(prefix="picgate-bench-") as tmp:
        data = Path(tmp) / "data"
        started = time.perf_counter()
        build(data, args.rows, args.files)
        print(
            f"built {args.rows:,} rows, {args.files:,} files in {time.perf_counter() - started:.1f} s"
        )
        pristine = Path(tmp) / "pristine"
        shutil.copytree(data, pristine)
        timed = spawn(data, trace=False)
        shutil.rmtree(data)
        shutil.copytree(pristine, data)
        traced = spawn(data, trace=True)
    r = timed["report"]
    print(
        f"cleanup: {timed['seconds']:.2f} s | peak RSS {timed['rss_peak_mb']:.0f} MB "
        f"(after imports and start-up {timed['rss_before_mb']:.0f} MB) | "
        f"Python heap peak during the job {traced['heap_peak_mb']:.1f} MB (tracemalloc run: "
        f"{traced['seconds']:.2f} s)"
    )
    print(
        f"  uploaded {r['uploaded']}, TTL removed {r['ttl_removed']}, cap removed "
        f"{r['cap_removed']}, rows deleted {r['rows_deleted']}, logs trimmed "
        f"{r['logs_trimmed']}, sessions {r['sessions_deleted']}, orphans "
        f"{r['orphans_removed']}, missing {r['missing_marked']}, tmp {r['tmp_removed']}, "
        f"errors {len(r['errors'])}"
    )
    print("  seconds per step: " + ", ".join(f"{k} {v:.2f}" for k, v in r["seconds"].items()))


if __name__ == "__main__":
    main()
