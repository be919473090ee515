"""Database URLs, pragmas and migrations on the embedded SQLite default."""

from __future__ import annotations

import os
import stat
import threading
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, inspect, text
from sqlalchemy.exc import OperationalError

from picgate.db.engine import HEAD_REVISION, Database, normalize_url


def test_default_aiosqlite_url_works_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = Database("sqlite+aiosqlite:///./data/db/picgate.db")
    db.migrate()
    assert (tmp_path / "data" / "db" / "picgate.db").is_file()
    assert db.current_revision() == HEAD_REVISION
    tables = set(inspect(db.engine).get_table_names())
    assert {
        "images",
        "settings",
        "log_entries",
        "admin_users",
        "admin_sessions",
        "login_attempts",
        "job_leases",
        "daily_stats",
    } <= tables
    db.dispose()


def test_sqlite_wal_and_busy_timeout_set(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/x.db")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    db.dispose()


def test_database_files_are_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    """The database holds password hashes and saved secrets: 0600 for it, its WAL and its
    shared-memory file, however loose the umask; an existing 0644 file is tightened."""
    old = os.umask(0o000)
    try:
        db = Database(f"sqlite:///{tmp_path / 'picgate.db'}")
        db.migrate()
        db.write(lambda s: s.execute(text("CREATE TABLE t (x)")))
        files = sorted(tmp_path.glob("picgate.db*"))
        assert [f.name for f in files] == ["picgate.db", "picgate.db-shm", "picgate.db-wal"]
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == dict.fromkeys(
            (f.name for f in files), 0o600
        )
        db.dispose()

        loose = tmp_path / "old.db"
        loose.write_bytes(b"")
        loose.chmod(0o644)
        Database(f"sqlite:///{loose}").ping()
        assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_migrate_twice_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    Database(url).migrate()
    again = Database(url)
    again.migrate()
    assert again.current_revision() == HEAD_REVISION


def test_concurrent_writers_do_not_lock(tmp_path: Path) -> None:
    from picgate.db.models import DAILY_STATS

    db = Database(f"sqlite:///{tmp_path}/x.db")
    db.migrate()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                stat = insert(DAILY_STATS).values(day=f"d{n}", name=f"k{i}", value=i)
                db.write(partial(Connection.execute, statement=stat))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert db.write(lambda s: s.execute(text("select count(*) from daily_stats")).scalar()) == 320
    db.dispose()


def test_database_write_waits_for_another_write_and_read_does_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    first, second = Database(url), Database(url, write_timeout=0.2)
    holding, release = threading.Event(), threading.Event()

    def hold(session: Connection) -> None:
        holding.set()
        release.wait(10)

    writer = threading.Thread(target=first.write, args=(hold,))
    writer.start()
    assert holding.wait(10)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            second.write(lambda s: s.execute(text("select 1")))
        assert second.read(lambda s: s.execute(text("select 1")).scalar()) == 1
    finally:
        release.set()
        writer.join(10)
    assert second.write(lambda s: s.execute(text("select 2")).scalar()) == 2
    first.dispose()
    second.dispose()


def test_database_write_lock_released_when_the_work_raises(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/x.db", write_timeout=0.2)

    def boom(session: Connection) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        db.write(boom)
    assert db.write(lambda s: s.execute(text("select 3")).scalar()) == 3
    db.dispose()


@pytest.mark.parametrize(
    "raw,driver",
    [
        ("sqlite+aiosqlite:///./a.db", "sqlite"),
        ("sqlite:///a.db", "sqlite"),
        ("sqlite+aiolibsql://x.turso.io?secure=true", "sqlite+libsql"),
        ("postgresql+asyncpg://u:p@h/db", "postgresql+psycopg"),
    ],
)
def test_normalize_url_maps_async_spellings(raw: str, driver: str) -> None:
    assert normalize_url(raw).drivername == driver
