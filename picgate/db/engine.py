"""The database: URL normalisation, SQLite pragmas, migrations, and transactions run off the loop.

One synchronous code path serves a SQLite file, libSQL/Turso and PostgreSQL. A remote libSQL
URL (``sqlite+libsql://host``, ``libsql://host``, ``https://host``) goes to SQLAlchemy's SQLite
dialect over PicGate's Hrana-over-HTTP driver (``picgate.db.hrana``); ``sqlite+libsql:///file``
is an ordinary SQLite file (libSQL's format is SQLite's) opened with the stdlib driver.

Work on the database is ``db.read(fn)`` or ``db.write(fn)`` (``aread``/``awrite`` run it in a
worker thread): ``fn(conn)`` runs on a Core ``Connection`` inside a transaction that commits
when it returns (statements are built on the tables of ``picgate.db.models``). The
single-writer rule lives here, for every backend (datasette's ``execute_write_fn``): writes take
turns per process and database, behind one lock, so only one transaction of this process ever
waits for the database's own write lock (a SQLite file's, or sqld's, which stalls when several
streams wait for it at once). Reads never take the lock. Waiting longer than the timeout is
sqlite3's "database is locked".

``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` go to psycopg 3 (the
``picgate[postgres]`` extra).

A ``DATABASE_URL`` PicGate cannot use (not a URL, another database, PostgreSQL without psycopg,
a SQLite file in a folder that cannot be made) is a ``DatabaseUrlError`` when the ``Database``
is built, before anything starts: one line naming the setting and the fix.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from picgate.config import SettingsError
from picgate.db.migration_state import begin_ddl, half_applied

T = TypeVar("T")

HEAD_REVISION = "0003"
# how long a process waits for another one migrating the same database at the same time
MIGRATION_WAIT_SECONDS = 30.0
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
WRITE_WAIT_SECONDS = 30.0

_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def write_lock(url: URL) -> threading.Lock:
    """The process's one-writer-at-a-time lock for the database at ``url``.

    Per URL, not per ``Database``: two objects on one database (a CLI beside the app in a test,
    replicas simulated in one process) must still take turns.
    """
    key = url.render_as_string(hide_password=True)
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


# the drivers PicGate runs, after normalize_url
DRIVERS = ("sqlite", "sqlite+libsql", "postgresql+psycopg")
ACCEPTED = (
    "use sqlite:///./data/db/picgate.db (a file), libsql://<db>.turso.io (Turso, with "
    "DATABASE_AUTH_TOKEN) or postgresql://user:password@host/db"
)
_CREDENTIALS = re.compile(r"(://)[^@/]*@")


class DatabaseUrlError(SettingsError):
    """DATABASE_URL names a database PicGate cannot open; the message says how to fix it."""


def shown(raw: str) -> str:
    """``raw`` for a message: the user and password of a URL replaced by ``***``."""
    return _CREDENTIALS.sub(r"\1***@", raw)


def normalize_url(raw: str) -> URL:
    """Map the spellings people paste (async drivers, ``libsql://``, ``postgres://``) onto the
    sync drivers PicGate uses. DatabaseUrlError for anything else."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseUrlError(
            f"DATABASE_URL={shown(raw)!r} is not a database URL: {ACCEPTED}"
        ) from exc
    if url.drivername in ("sqlite+aiosqlite", "sqlite+pysqlite"):
        url = url.set(drivername="sqlite")
    elif url.drivername in ("sqlite+aiolibsql", "libsql"):  # `turso db show --url`: libsql://
        url = url.set(drivername="sqlite+libsql")
    elif url.drivername in ("https", "http"):  # the server's HTTP address itself
        secure = "true" if url.drivername == "https" else "false"
        url = url.set(drivername="sqlite+libsql").update_query_dict({"secure": secure})
    elif url.drivername in ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername not in DRIVERS:
        raise DatabaseUrlError(
            f"DATABASE_URL={shown(raw)!r}: PicGate does not support {url.drivername}://; {ACCEPTED}"
        )
    if url.drivername == "sqlite+libsql" and url.host and "secure" not in url.query:
        # the auth token goes with every request: TLS unless a local sqld says secure=false
        url = url.update_query_dict({"secure": "true"})
    return url


def checked_url(raw: str) -> URL:
    """``normalize_url(raw)``, also refused (DatabaseUrlError) when its driver is not
    installed or its SQLite file's folder cannot be created. Looks, creates nothing."""
    url = normalize_url(raw)
    if url.drivername == "postgresql+psycopg":
        try:
            importlib.import_module("psycopg")
        except ImportError as exc:  # not installed, or no libpq for a non-binary install
            raise DatabaseUrlError(
                f"DATABASE_URL is a PostgreSQL URL but its driver cannot be loaded ({exc}): "
                "pip install 'picgate[postgres]'"
            ) from exc
    file = sqlite_file(url)
    if file is not None:
        _check_folder(file)
    return url


def _check_folder(file: Path) -> None:
    """DatabaseUrlError when ``file`` could not be created: its nearest existing ancestor is
    not a writable folder."""
    if file.is_dir():
        raise DatabaseUrlError(
            f"DATABASE_URL names {file}, which is a folder: name a file in it, such as "
            f"sqlite:///{file}/picgate.db"
        )
    folder = file.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUrlError(
            f"DATABASE_URL: cannot create {file.parent} ({folder} is not a writable folder): "
            "point DATABASE_URL at a folder PicGate may write, such as "
            "sqlite:///./data/db/picgate.db"
        )


def sqlite_file(url: URL) -> Path | None:
    """The file behind a local SQLite/libSQL URL, or None for memory and remote databases."""
    if not url.drivername.startswith("sqlite") or url.host:
        return None
    if not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def private_file(path: Path) -> None:
    """Create the database file readable by its owner only (0600), or tighten an existing one.

    It holds password hashes, session digests and the settings saved in the console. SQLite
    gives the ``-wal`` and ``-shm`` files the mode of the database file, so they follow.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise DatabaseUrlError(
            f"DATABASE_URL: cannot create the database file {path} ({exc.strerror}): point "
            "DATABASE_URL at a folder PicGate may write, such as sqlite:///./data/db/picgate.db"
        ) from exc
    try:
        if os.fstat(fd).st_mode & 0o077:
            with contextlib.suppress(PermissionError):  # not ours to change: leave it
                os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def build_engine(raw_url: str, *, auth_token: str | None = None) -> Engine:
    url = normalize_url(raw_url)
    if url.drivername == "sqlite+libsql" and not url.host:
        url = url.set(drivername="sqlite")  # a local libSQL file is a SQLite file
    connect_args: dict[str, Any] = {}
    # a server's connections are checked before use (one on a file cannot go stale)
    kwargs: dict[str, Any] = {"pool_pre_ping": url.drivername != "sqlite"}
    if url.drivername == "sqlite":
        connect_args["check_same_thread"] = False
        connect_args["timeout"] = 30
    elif url.drivername == "sqlite+libsql":
        from picgate.db import libsql_dialect

        libsql_dialect.register()
        token = auth_token or url.query.get("authToken")
        url = url.difference_update_query(["authToken"])
        if token:
            connect_args["auth_token"] = str(token)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if url.drivername == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


class Database:
    """The engine and the read and write paths (see the module docstring)."""

    def __init__(
        self,
        raw_url: str,
        *,
        auth_token: str | None = None,
        write_timeout: float = WRITE_WAIT_SECONDS,
    ) -> None:
        self.raw_url = raw_url
        self.url = checked_url(raw_url)
        self._write_lock = write_lock(self.url)
        self._write_timeout = write_timeout
        self._auth_token = auth_token
        self._engine: Engine | None = None
        self._lock = threading.RLock()
        self._migrated = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    file = sqlite_file(self.url)
                    if file is not None:
                        private_file(file)
                    self._engine = build_engine(self.raw_url, auth_token=self._auth_token)
        return self._engine

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a transaction on this thread; ``fn`` must not write."""
        with self.engine.begin() as conn:
            return fn(conn)

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a transaction on this thread, holding the write lock.

        OperationalError ("database is locked") when another write of this process holds the
        lock longer than the write timeout.
        """
        with self._writing(), self.engine.begin() as conn:
            return fn(conn)

    async def aread(self, fn: Callable[[Connection], T]) -> T:
        """``read`` in a worker thread."""
        return await anyio.to_thread.run_sync(self.read, fn)

    async def awrite(self, fn: Callable[[Connection], T]) -> T:
        """``write`` in a worker thread."""
        return await anyio.to_thread.run_sync(self.write, fn)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        if not self._write_lock.acquire(timeout=self._write_timeout):
            raise OperationalError(
                "write",
                None,
                Exception(
                    "database is locked (another write in this process held it "
                    f"{self._write_timeout:g} s)"
                ),
            )
        try:
            yield
        finally:
            self._write_lock.release()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            # ask first: a missing table would fail the transaction on PostgreSQL
            if not inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return str(row[0]) if row else None

    def migrate(self) -> None:
        """Bring the schema to head once per process; Alembic is imported only when needed.

        Several processes may start on an empty database at the same moment (replicas, Lambdas
        cold-starting together, ``picgate cleanup`` beside ``picgate serve``): one creates the
        tables, the others fail on a table that now exists. A process whose upgrade fails waits
        for the schema to reach head (up to ``MIGRATION_WAIT_SECONDS``) before giving up; then
        a schema left half-applied is ``HalfMigrated`` (one line saying what to do).
        """
        if self._migrated:
            return
        with self._lock:
            if self._migrated:
                return
            revision = self.current_revision()
            if revision != HEAD_REVISION:
                try:
                    self._upgrade()
                except DBAPIError:
                    if not self._wait_for_head():
                        half = half_applied(self.engine, revision, shown=shown(self.raw_url))
                        if half is not None:
                            raise half from None
                        raise
            self._migrated = True

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._writing(), self.engine.begin() as conn:
            begin_ddl(conn)  # all of it or nothing (picgate.db.migration_state)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def _wait_for_head(self) -> bool:
        """Whether another process brings the schema to head within the wait."""
        deadline = time.monotonic() + MIGRATION_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                if self.current_revision() == HEAD_REVISION:
                    return True
            except DBAPIError:
                continue  # the other process holds the database: ask again
        return False

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
