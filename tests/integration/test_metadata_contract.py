"""One contract for the metadata database, run against every backend PicGate supports: a SQLite
file, a real sqld (libSQL over Hrana) and a real PostgreSQL server, each fresh and empty.

Migrations reach head with every table; the rows PicGate keeps (images, settings, log lines,
admin sessions, login failure counters, the job lease) go in and come back with their types; several processes'
worth of first starts on one empty database all end at head; one job lease has one holder.
The sqld and PostgreSQL cases fail (never skip) when their server binaries are missing.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, inspect, select, update
from sqlalchemy.orm import Session

from picgate.admin import auth
from picgate.config import Settings
from picgate.db.engine import HEAD_REVISION, Database
from picgate.db.models import METADATA, R2_PENDING, R2_UPLOADED
from picgate.eventlog import EventLog, trim_logs
from picgate.jobs.scheduler import acquire_lease, release_lease
from picgate.settings_store import ConfigService, SecretBox
from tests import orm
from tests.orm import Image, LogEntry, Setting
from tests.postgres import PostgresServer
from tests.sqld import SqldServer

BACKENDS = ["sqlite", "sqld", "postgres"]
_names = itertools.count()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    start_sqld: Callable[..., SqldServer],
) -> str:
    """The URL of a new, empty database on the backend under test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/picgate.db"
    if request.param == "sqld":
        return start_sqld().database_url
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.database_url(f"contract_{next(_names)}")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def _image(image_id: str, *, created: datetime, **fields: object) -> Image:
    values: dict[str, object] = {
        "id": image_id,
        "ext": "png",
        "mime": "image/png",
        "size": 1234,
        "sha256": "ab" * 32,
        "created_at": created,
        "accessed_at": created,
        "source": "generations",
        "local": True,
        "expired": False,
        "r2_state": "none",
        "r2_attempts": 0,
    }
    values.update(fields)
    return Image(**values)


def test_metadata_migrations_reach_head_with_every_table(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert db.current_revision() is None  # a fresh, empty database
        db.migrate()
        assert db.current_revision() == HEAD_REVISION
        with db.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        assert tables == set(METADATA.tables) | {"alembic_version"}
        again = Database(database_url)  # another process's start: already at head
        again.migrate()
        assert again.current_revision() == HEAD_REVISION
        again.dispose()
    finally:
        db.dispose()


# the attribution columns at their caps (128, and 64 for the key name), in several scripts
ATTRIBUTION = {
    "user_id": "u" * 128,
    "user_name": "张三 Zoë " + "x" * 120,
    "chat_id": "4f3c2b1a-0000-4000-8000-00000000c4a7",
    "message_id": "m-1",
    "model": "gpt-image-1",
    "key_name": "k" * 64,
}


def test_metadata_image_row_round_trips_every_column(db: Database) -> None:
    created = datetime(2031, 5, 6, 7, 8, 9, 123456)  # naive UTC, microseconds kept
    prompt = "一只猫 🐱 " + "x" * 10_000
    full = _image(
        "img-full",
        created=created,
        width=1024,
        height=768,
        prompt=prompt,
        local=False,
        expired=True,
        r2_state=R2_PENDING,
        r2_attempts=3,
        r2_last_error="timeout\nsecond line",
        r2_next_attempt_at=created + timedelta(minutes=5),
        r2_lease_owner="host-1-abc",
        r2_lease_until=created + timedelta(minutes=1),
        size=2**31 - 1,  # the most a 32-bit INTEGER column holds on PostgreSQL
        **ATTRIBUTION,
    )
    bare = _image("img-bare", created=created - timedelta(days=1))
    orm.write(db, lambda s: s.add_all([full, bare]))

    def read(session: Session) -> list[Image]:
        return list(session.scalars(select(Image).order_by(Image.created_at.desc())))

    got_full, got_bare = orm.write(db, read)
    assert (got_full.id, got_bare.id) == ("img-full", "img-bare")
    assert got_full.created_at == created and got_full.created_at.tzinfo is None
    assert got_full.r2_next_attempt_at == created + timedelta(minutes=5)
    assert (got_full.width, got_full.height, got_full.size) == (1024, 768, 2**31 - 1)
    assert got_full.prompt == prompt and got_full.r2_last_error == "timeout\nsecond line"
    assert got_full.local is False and got_full.expired is True
    assert got_bare.local is True and got_bare.expired is False
    assert got_bare.prompt is None and got_bare.r2_next_attempt_at is None
    assert {name: getattr(got_full, name) for name in ATTRIBUTION} == ATTRIBUTION
    assert all(getattr(got_bare, name) is None for name in ATTRIBUTION)

    def queue(session: Session) -> list[str]:
        return list(
            session.scalars(
                select(Image.id).where(
                    Image.r2_state == R2_PENDING,
                    Image.r2_next_attempt_at <= created + timedelta(hours=1),
                    Image.local.is_(False),
                )
            )
        )

    assert orm.write(db, queue) == ["img-full"]
    orm.write(
        db,
        lambda s: s.execute(
            update(Image).where(Image.id == "img-full").values(r2_state=R2_UPLOADED)
        ),
    )
    assert orm.write(db, queue) == []
    orm.write(db, lambda s: s.execute(delete(Image).where(Image.id == "img-bare")))
    assert orm.write(db, lambda s: s.scalar(select(Image.id))) == "img-full"


def test_metadata_duplicate_image_id_is_refused_and_first_row_kept(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    now = datetime(2030, 1, 1)
    orm.write(db, lambda s: s.add(_image("same", created=now, size=1)))
    with pytest.raises(IntegrityError):
        orm.write(db, lambda s: s.add(_image("same", created=now, size=2)))
    assert orm.write(db, lambda s: s.scalar(select(Image.size).where(Image.id == "same"))) == 1


def test_metadata_settings_saved_then_read_by_another_instance(db: Database) -> None:
    base = Settings(secret_key="contract-secret-0123456789")
    box = SecretBox("contract-secret-0123456789")
    ConfigService(base, db, box).save(
        {
            "upstream_api_base": "https://api.example.com/v1",
            "upstream_api_key": "sk-contract-secret-value",
            "local_cache_ttl_hours": 12.5,
            "allow_external_image_fetch": True,
        }
    )
    current = ConfigService(base, db, box).reload()
    assert current.upstream_api_base == "https://api.example.com/v1"
    assert current.upstream_api_key == "sk-contract-secret-value"
    assert current.local_cache_ttl_hours == 12.5 and current.allow_external_image_fetch is True
    stored = orm.write(
        db, lambda s: {r.key: (r.value, r.secret) for r in s.scalars(select(Setting))}
    )
    value, secret = stored["upstream_api_key"]
    assert secret is True and "sk-contract-secret-value" not in value  # sealed at rest


def test_metadata_log_lines_written_in_order_and_trimmed(db: Database) -> None:
    events = EventLog(db, max_entries=100)
    for n in range(120):
        events.info(f"line {n} — 日志")
    events.error("the last one")
    events.flush()
    messages = orm.write(
        db, lambda s: list(s.scalars(select(LogEntry.message).order_by(LogEntry.id.desc())))
    )
    assert len(messages) == 100  # trimmed to the cap, oldest first
    assert messages[0] == "the last one" and messages[1] == "line 119 — 日志"
    assert messages[-1] == "line 21 — 日志"
    assert db.write(lambda s: trim_logs(s, 10)) == 90


def test_metadata_admin_session_created_loaded_and_ended(db: Database) -> None:
    assert db.write(lambda s: auth.create_first_admin(s, username="root", password="pw-123456"))
    user = db.write(lambda s: auth.authenticate(s, username="root", password="pw-123456", ip="x"))
    assert user is not None
    token = db.write(lambda s: auth.create_session(s, user.id))
    context = db.write(lambda s: auth.load_session(s, token))
    assert context is not None and context.username == "root" and context.csrf_token
    assert db.write(lambda s: auth.load_session(s, token + "x")) is None
    db.write(lambda s: auth.end_session(s, token))
    assert db.write(lambda s: auth.load_session(s, token)) is None


def test_metadata_login_failures_counted_in_parallel_lock_after_the_allowed_guesses(
    db: Database,
) -> None:
    admitted: list[auth.LoginTicket] = []
    throttled: list[auth.LoginThrottled] = []

    def attempt() -> None:
        try:
            admitted.append(db.write(lambda s: auth.admit(s, username="root", ip="198.51.100.7")))
        except auth.LoginThrottled as exc:
            throttled.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(admitted) == auth.MAX_USER_FAILURES
    assert len(throttled) == 12 - auth.MAX_USER_FAILURES


def test_metadata_job_lease_has_one_holder_at_a_time(db: Database) -> None:
    now = datetime(2030, 1, 1, 12, 0)
    assert acquire_lease(db, owner="a", now=now, name="contract")
    assert not acquire_lease(db, owner="b", now=now + timedelta(seconds=1), name="contract")
    release_lease(db, owner="a", ran_at=now, report={"ok": True, "说明": "完成"}, name="contract")
    assert not acquire_lease(
        db, owner="b", now=now + timedelta(minutes=1), name="contract", due_after=timedelta(1)
    )
    assert acquire_lease(db, owner="b", now=now + timedelta(minutes=1), name="contract")
    # a crashed holder's lease runs out
    assert acquire_lease(db, owner="c", now=now + timedelta(hours=2), name="contract")


def test_metadata_job_lease_contended_by_threads_goes_to_exactly_one(db: Database) -> None:
    now = datetime(2030, 1, 1, 12, 0)
    barrier = threading.Barrier(6)
    won: list[str] = []
    errors: list[BaseException] = []

    def contend(owner: str) -> None:
        mine = Database(db.raw_url)
        try:
            barrier.wait()
            if acquire_lease(mine, owner=owner, now=now, name="race"):
                won.append(owner)
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            mine.dispose()

    threads = [threading.Thread(target=contend, args=(f"o{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(won) == 1


def _start_at_barrier(url: str, barrier: Any, errors: Any) -> None:
    """One replica's first start on the database (runs in a child process)."""
    db = Database(url)
    try:
        barrier.wait()
        db.migrate()
        if db.current_revision() != HEAD_REVISION:
            errors.put("not at head after migrate()")
    except Exception as exc:  # reported to the parent, which asserts there were none
        errors.put(repr(exc))
    finally:
        db.dispose()


def test_metadata_concurrent_first_start_all_reach_head(database_url: str) -> None:
    """Replicas (processes: Alembic keeps per-process state) starting at once on an empty
    database: one builds the schema, the others wait for it; none fails, none hangs."""
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(3), ctx.Queue()
    processes = [
        ctx.Process(target=_start_at_barrier, args=(database_url, barrier, errors))
        for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=90)
        if process.exitcode is None:
            process.kill()
    assert [p.exitcode for p in processes] == [0, 0, 0]
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    db = Database(database_url)
    with db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= set(METADATA.tables)
    db.dispose()
