"""The Hrana driver and the libSQL dialect against a real sqld over HTTP on 127.0.0.1.

Values round-trip with their types, constraint failures are IntegrityError, a transaction is
one stream (invisible to others until COMMIT, gone after ROLLBACK), migrations build the schema
on an empty server, and a server with JWT auth refuses a wrong token with a message that says so.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import exc as sa_exc

from picgate.config import Settings
from picgate.db import hrana
from picgate.db.engine import HEAD_REVISION, Database
from picgate.db.models import METADATA
from tests.sqld import SqldServer

_tables = iter(range(1_000_000))


@pytest.fixture
def table(sqld_server: SqldServer) -> Iterator[tuple[hrana.Connection, str]]:
    """A DB-API connection to the shared sqld and a fresh table ``(k INTEGER PRIMARY KEY, v)``."""
    conn = hrana.connect(sqld_server.http_url)
    name = f"t{next(_tables)}"
    conn.cursor().execute(f"CREATE TABLE {name} (k INTEGER PRIMARY KEY, v)")
    yield conn, name
    conn.close()


VALUES: list[object] = [
    None,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1.5,
    -0.0,
    1e300,
    "",
    "plain",
    "中文 ünïcödé 😀 \x00 nul",
    b"",
    b"\x00\x01\xfe\xff",
    bytes(range(256)) * 4096,  # 1 MiB
]


def test_hrana_values_round_trip_with_their_types(table: tuple[hrana.Connection, str]) -> None:
    conn, name = table
    cur = conn.cursor()
    cur.executemany(f"INSERT INTO {name} (k, v) VALUES (?, ?)", list(enumerate(VALUES)))
    assert cur.rowcount == len(VALUES)
    conn.commit()
    rows = conn.cursor().execute(f"SELECT k, v FROM {name} ORDER BY k").fetchall()
    assert [v for _, v in rows] == VALUES
    assert [type(v) for _, v in rows] == [type(v) for v in VALUES]
    named = conn.cursor().execute("SELECT :a, :b", {"a": 7, "b": "x"}).fetchone()
    assert named == (7, "x")


def test_hrana_integer_beyond_64_bits_is_data_error(table: tuple[hrana.Connection, str]) -> None:
    conn, name = table
    with pytest.raises(hrana.DataError):
        conn.cursor().execute(f"INSERT INTO {name} VALUES (1, ?)", (2**63,))


def test_hrana_duplicate_key_is_integrity_error_and_transaction_survives(
    table: tuple[hrana.Connection, str],
) -> None:
    conn, name = table
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {name} VALUES (1, 'a')")
    with pytest.raises(hrana.IntegrityError, match="UNIQUE constraint failed"):
        cur.execute(f"INSERT INTO {name} VALUES (1, 'b')")
    assert conn.in_transaction  # as in sqlite3: the failed statement alone is undone
    conn.commit()
    assert conn.cursor().execute(f"SELECT v FROM {name}").fetchall() == [("a",)]


def test_hrana_executemany_stops_at_first_error(table: tuple[hrana.Connection, str]) -> None:
    conn, name = table
    with pytest.raises(hrana.IntegrityError):
        conn.cursor().executemany(
            f"INSERT INTO {name} VALUES (?, ?)", [(1, "a"), (1, "b"), (2, "c")]
        )
    conn.commit()
    assert conn.cursor().execute(f"SELECT k, v FROM {name}").fetchall() == [(1, "a")]


def test_hrana_transaction_invisible_until_commit_and_gone_after_rollback(
    sqld_server: SqldServer, table: tuple[hrana.Connection, str]
) -> None:
    conn, name = table
    other = hrana.connect(sqld_server.http_url)
    try:
        conn.cursor().execute(f"INSERT INTO {name} VALUES (1, 'kept')")
        assert other.cursor().execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)
        conn.commit()
        assert other.cursor().execute(f"SELECT count(*) FROM {name}").fetchone() == (1,)
        conn.cursor().execute(f"INSERT INTO {name} VALUES (2, 'dropped')")
        conn.cursor().execute(f"UPDATE {name} SET v = 'changed' WHERE k = 1")
        # a read inside the transaction sees its own writes
        assert conn.cursor().execute(f"SELECT count(*) FROM {name}").fetchone() == (2,)
        conn.rollback()
        assert not conn.in_transaction
        assert other.cursor().execute(f"SELECT k, v FROM {name}").fetchall() == [(1, "kept")]
    finally:
        other.close()


def test_hrana_syntax_error_is_operational_error(sqld_server: SqldServer) -> None:
    with hrana.connect(sqld_server.http_url) as conn, pytest.raises(hrana.OperationalError):
        conn.cursor().execute("SELEC 1")


def test_hrana_unreachable_server_is_a_disconnect() -> None:
    from tests.support.servers import free_port

    with (
        hrana.connect(f"http://127.0.0.1:{free_port()}", timeout=2) as conn,
        pytest.raises(hrana.Disconnect, match="unreachable"),
    ):
        conn.cursor().execute("SELECT 1")


def test_dialect_core_types_and_integrity_error_through_sqlalchemy(sqld_server: SqldServer) -> None:
    db = Database(sqld_server.database_url)
    meta = sa.MetaData()
    name = f"t{next(_tables)}"
    things = sa.Table(
        name,
        meta,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("size", sa.BigInteger),
        sa.Column("at", sa.DateTime),
        sa.Column("flag", sa.Boolean),
        sa.Column("data", sa.LargeBinary),
        sa.Column("ratio", sa.Float),
    )
    try:
        meta.create_all(db.engine)
        row = {
            "id": "a",
            "size": 2**40,
            "at": datetime(2026, 1, 2, 3, 4, 5, 678),
            "flag": True,
            "data": b"\x89PNG\x00",
            "ratio": 0.25,
        }
        db.write(lambda s: s.execute(things.insert(), row))
        assert db.write(lambda s: s.execute(sa.select(things)).mappings().one()) == row
        with pytest.raises(sa_exc.IntegrityError):
            db.write(lambda s: s.execute(things.insert(), row))
        with pytest.raises(sa_exc.OperationalError):
            db.write(lambda s: s.execute(sa.text("SELECT * FROM no_such_table")))

        def fails_after_write(session: sa.Connection) -> None:
            session.execute(things.insert(), {**row, "id": "b"})
            raise RuntimeError("after the write")

        with pytest.raises(RuntimeError):
            db.write(fails_after_write)
        assert db.write(lambda s: s.execute(sa.select(things.c.id)).scalars().all()) == ["a"]
    finally:
        db.dispose()


def test_dialect_concurrent_writers_from_threads_all_commit(sqld_server: SqldServer) -> None:
    db = Database(sqld_server.database_url)
    name = f"t{next(_tables)}"
    db.write(lambda s: s.execute(sa.text(f"CREATE TABLE {name} (k TEXT PRIMARY KEY, n INTEGER)")))
    errors: list[BaseException] = []

    insert = sa.text(f"INSERT INTO {name} VALUES (:k, :n)")

    def writer(n: int) -> None:
        try:
            for i in range(25):
                db.write(
                    partial(
                        sa.Connection.execute,
                        statement=insert,
                        parameters={"k": f"{n}-{i}", "n": i},
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        count = db.read(lambda s: s.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar())
        assert count == 400
    finally:
        db.dispose()


def _migrate_at_barrier(url: str, barrier: Any, errors: Any) -> None:
    """One process starting on the database (runs in a child process)."""
    db = Database(url)
    barrier.wait()
    try:
        db.migrate()
    except Exception as exc:  # reported to the parent, which asserts there were none
        errors.put(repr(exc))
    finally:
        db.dispose()


def test_processes_starting_together_on_an_empty_sqld_all_get_the_schema(
    start_sqld: Callable[..., SqldServer],
) -> None:
    """Replicas or Lambdas cold-starting at the same moment on a new database: one migrates,
    the others failed with "table images already exists" (3 of 4 before); they now wait for it."""
    server = start_sqld()
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(4), ctx.Queue()
    processes = [
        ctx.Process(target=_migrate_at_barrier, args=(server.database_url, barrier, errors))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    db = Database(server.database_url)
    assert db.current_revision() == HEAD_REVISION
    db.dispose()


def test_migrations_on_empty_sqld_build_the_same_schema_as_sqlite(
    start_sqld: Callable[..., SqldServer], tmp_path: pytest.TempPathFactory
) -> None:
    server = start_sqld()
    db = Database(server.database_url)
    try:
        assert db.current_revision() is None
        db.migrate()
        assert db.current_revision() == HEAD_REVISION
        tables = set(sa.inspect(db.engine).get_table_names())
        assert set(METADATA.tables) <= tables
        again = Database(server.database_url)  # another process's view: already at head
        assert again.current_revision() == HEAD_REVISION
        again.migrate()
        again.dispose()
    finally:
        db.dispose()


def test_jwt_auth_right_token_works_wrong_or_missing_token_clear_error(
    start_sqld: Callable[..., SqldServer],
) -> None:
    server = start_sqld(jwt_key=Ed25519PrivateKey.generate())
    settings = Settings(database_url=server.database_url, database_auth_token=server.token())
    good = Database(settings.database_url, auth_token=settings.database_auth_token)
    try:
        good.migrate()
        assert good.current_revision() == HEAD_REVISION
    finally:
        good.dispose()
    wrong = server.token(Ed25519PrivateKey.generate())
    for token in (wrong, None):
        db = Database(server.database_url, auth_token=token)
        try:
            with pytest.raises(sa_exc.OperationalError, match="refused the auth token") as info:
                db.ping()
            assert "DATABASE_AUTH_TOKEN" in str(info.value)
        finally:
            db.dispose()
    # the token may also ride in the URL (authToken=...), as Turso's URLs allow
    in_url = Database(f"{server.database_url}&authToken={server.token()}")
    try:
        in_url.ping()
    finally:
        in_url.dispose()


def test_database_second_writer_in_process_waits_for_the_first_to_commit(
    sqld_server: SqldServer,
) -> None:
    # two Database objects on one server (a CLI beside the app): still one writer at a time
    first, second = Database(sqld_server.database_url), Database(sqld_server.database_url)
    name = f"t{next(_tables)}"
    first.write(
        lambda s: s.execute(sa.text(f"CREATE TABLE {name} (k INTEGER PRIMARY KEY, v TEXT)"))
    )
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def hold(session: sa.Connection) -> None:
        session.execute(sa.text(f"INSERT INTO {name} VALUES (1, 'first')"))
        holding.set()
        release.wait(10)
        order.append("first commits")

    def update(session: sa.Connection) -> None:
        order.append("second writes")
        session.execute(sa.text(f"UPDATE {name} SET v = 'second' WHERE k = 1"))

    writer = threading.Thread(target=first.write, args=(hold,))
    writer.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=second.write, args=(update,))
    waiter.start()
    waiter.join(0.5)
    try:
        assert waiter.is_alive() and order == []  # held at the lock, not at the server
        # a read does not wait for the writer
        assert second.read(lambda s: s.execute(sa.text("SELECT 1")).scalar()) == 1
    finally:
        release.set()
        writer.join(10)
        waiter.join(10)
    assert order == ["first commits", "second writes"]
    assert second.read(lambda s: s.execute(sa.text(f"SELECT v FROM {name}")).scalar()) == "second"
    first.dispose()
    second.dispose()


def test_database_writer_waiting_past_timeout_gets_database_is_locked(
    sqld_server: SqldServer,
) -> None:
    holder = Database(sqld_server.database_url)
    impatient = Database(sqld_server.database_url, write_timeout=0.3)
    name = f"t{next(_tables)}"
    holder.write(lambda s: s.execute(sa.text(f"CREATE TABLE {name} (k INTEGER PRIMARY KEY)")))
    holding, release = threading.Event(), threading.Event()

    def hold(session: sa.Connection) -> None:
        session.execute(sa.text(f"INSERT INTO {name} VALUES (1)"))
        holding.set()
        release.wait(10)
        raise RuntimeError("roll back")

    def run_holder() -> None:
        with pytest.raises(RuntimeError):
            holder.write(hold)

    writer = threading.Thread(target=run_holder)
    writer.start()
    assert holding.wait(10)
    try:
        with pytest.raises(sa_exc.OperationalError, match="database is locked"):
            impatient.write(lambda s: s.execute(sa.text(f"INSERT INTO {name} VALUES (2)")))
        assert impatient.read(lambda s: s.execute(sa.text("SELECT 1")).scalar()) == 1
    finally:
        release.set()
        writer.join(10)
    impatient.write(lambda s: s.execute(sa.text(f"INSERT INTO {name} VALUES (2)")))
    count = holder.read(lambda s: s.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar())
    kept = holder.read(lambda s: s.execute(sa.text(f"SELECT max(k) FROM {name}")).scalar())
    assert (count, kept) == (1, 2)
    holder.dispose()
    impatient.dispose()
