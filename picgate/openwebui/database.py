"""An Open WebUI database, read and written a chat at a time.

What is read is what Open WebUI (checked against release 0.12.4's models and migrations) keeps
as JSON text for a chat: ``chat.chat`` (the ``history.messages`` map and the legacy ``messages``
list), each message again in ``chat_message`` (``content``, ``output`` — the assistant text
repeated in output items —, ``files``, ``embeds``) and share snapshots in ``shared_chat.chat``.
Tables and columns an older release lacks are skipped.

Writes are short: one transaction per chat that re-reads the chat's rows (locking them where
the database can: ``SELECT ... FOR UPDATE`` on PostgreSQL), applies the caller's rewrite to what
is there *now* (Open WebUI may have changed the chat meanwhile) and commits. A locked database
(SQLite's "database is locked"; PostgreSQL's lock timeout, deadlock or serialization failure) is
retried with backoff, so a migration can run next to a live Open WebUI. The SQLite backend is
here; PostgreSQL's is in ``postgres.py``.

Table and column names in the statements come from ``TABLES`` only (never from input); every
value is a bound parameter.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

# table → (key column, chat id column, JSON columns that may hold images)
TABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "chat": ("id", "id", ("chat",)),
    "chat_message": ("id", "chat_id", ("content", "output", "files", "embeds")),
    "shared_chat": ("id", "chat_id", ("chat",)),
}
LOCK_RETRIES = 10
LOCK_FIRST_WAIT = 0.05  # seconds; doubles per retry, capped at LOCK_MAX_WAIT
LOCK_MAX_WAIT = 2.0

T = TypeVar("T")


class OpenWebUIError(Exception):
    """The Open WebUI database cannot be used (a bad URL, no ``chat`` table, ...)."""


@dataclass
class StoredText:
    """One JSON column of one row, as text."""

    table: str
    row_id: str
    column: str
    text: str
    user_id: str | None = None  # chat_message rows: the message's author


@dataclass
class ChatRecord:
    chat_id: str
    user_id: str | None
    texts: list[StoredText] = field(default_factory=list)


Rewrite = Callable[[ChatRecord], list[StoredText]]


class OpenWebUIDatabase:
    """Base: the statements are shared; backends differ in placeholders and locking."""

    placeholder = "?"
    lock_suffix = ""  # what makes a SELECT lock its rows inside the write transaction

    def __init__(self) -> None:
        self.columns: dict[str, tuple[str, ...]] = {}

    # -- backend hooks --------------------------------------------------------------------

    def _connection(self) -> Any:
        raise NotImplementedError

    def _table_columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def _begin_write(self, cursor: Any) -> None:
        raise NotImplementedError

    def _is_locked(self, exc: BaseException) -> bool:
        return False

    def _text(self, column: str) -> str:
        return column

    def _param(self, table: str, column: str) -> str:
        return self.placeholder

    def size(self) -> int | None:
        """Bytes the database takes on disk, where that can be known (SQLite)."""
        return None

    def vacuum(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._connection().close()

    # -- reading --------------------------------------------------------------------------

    def inspect(self) -> None:
        """Learn which of the known tables and columns this release has."""
        for table, (_key, _chat, json_columns) in TABLES.items():
            present = self._table_columns(table)
            if present:
                self.columns[table] = tuple(c for c in json_columns if c in present)
        if "chat" not in self.columns or not self.columns["chat"]:
            raise OpenWebUIError("no Open WebUI chat table in this database (is it webui.db?)")

    def count_chats(self) -> int:
        row = self._retrying(lambda: self._fetch("SELECT COUNT(*) FROM chat", ()))
        return int(row[0][0])

    def chat_ids(self, batch: int = 500) -> Iterator[str]:
        """Every chat id in id order, a batch per short read (no cursor held open)."""
        last = ""
        p = self.placeholder
        while True:
            rows = self._retrying(
                lambda last=last: self._fetch(  # type: ignore[misc]
                    f"SELECT id FROM chat WHERE id > {p} ORDER BY id LIMIT {int(batch)}",  # noqa: S608
                    (last,),
                )
            )
            if not rows:
                return
            for (chat_id,) in rows:
                yield str(chat_id)
            last = str(rows[-1][0])

    def read(self, chat_id: str) -> ChatRecord | None:
        return self._retrying(lambda: self._read(self._connection().cursor(), chat_id))

    def _read(self, cursor: Any, chat_id: str, *, lock: bool = False) -> ChatRecord | None:
        p = self.placeholder
        columns = ", ".join(self._text(c) for c in self.columns["chat"])
        suffix = self.lock_suffix if lock else ""
        cursor.execute(
            f"SELECT user_id, {columns} FROM chat WHERE id = {p}{suffix}",  # noqa: S608
            (chat_id,),
        )
        row = cursor.fetchone()
        if row is None:
            return None
        record = ChatRecord(chat_id, row[0])
        for column, value in zip(self.columns["chat"], row[1:], strict=True):
            if isinstance(value, str):
                record.texts.append(StoredText("chat", chat_id, column, value, row[0]))
        for table in ("chat_message", "shared_chat"):
            if not self.columns.get(table):
                continue
            columns = ", ".join(self._text(c) for c in self.columns[table])
            cursor.execute(
                f"SELECT id, user_id, {columns} FROM {table} WHERE chat_id = {p} ORDER BY id"  # noqa: S608
                f"{suffix}",
                (chat_id,),
            )
            for found in cursor.fetchall():
                for column, value in zip(self.columns[table], found[2:], strict=True):
                    if isinstance(value, str):
                        record.texts.append(
                            StoredText(table, str(found[0]), column, value, found[1])
                        )
        return record

    # -- writing --------------------------------------------------------------------------

    def write(
        self, chat_id: str, rewrite: Rewrite, *, before_commit: Callable[[], None] | None = None
    ) -> int:
        """In one transaction: read the chat again, rewrite it, store the changed texts.

        Returns the number of texts changed (0: nothing to do, nothing written).
        """

        def attempt() -> int:
            connection = self._connection()
            cursor = connection.cursor()
            self._begin_write(cursor)
            try:
                record = self._read(cursor, chat_id, lock=True)
                changes = rewrite(record) if record is not None else []
                for change in changes:
                    # names only from TABLES (checked here); values always bound
                    if change.column not in self.columns.get(change.table, ()):
                        raise OpenWebUIError(f"{change.table}.{change.column} is not migrated")
                    key = TABLES[change.table][0]
                    value = self._param(change.table, change.column)
                    cursor.execute(
                        f"UPDATE {change.table} SET {change.column} = {value}"  # noqa: S608
                        f" WHERE {key} = {self.placeholder}",
                        (change.text, change.row_id),
                    )
                if changes and before_commit is not None:
                    before_commit()
                cursor.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
            return len(changes)

        return self._retrying(attempt)

    # -- plumbing -------------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        cursor = self._connection().cursor()
        cursor.execute(sql, params)
        rows: list[Any] = cursor.fetchall()
        return rows

    def _retrying(self, work: Callable[[], T]) -> T:
        wait = LOCK_FIRST_WAIT
        for attempt in range(LOCK_RETRIES + 1):
            try:
                return work()
            except Exception as exc:
                if attempt == LOCK_RETRIES or not self._is_locked(exc):
                    raise
            time.sleep(wait)
            wait = min(wait * 2, LOCK_MAX_WAIT)
        raise AssertionError("unreachable")


class SQLiteDatabase(OpenWebUIDatabase):
    """``webui.db``: autocommit reads, ``BEGIN IMMEDIATE`` writes, a short busy timeout."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        if not path.is_file():
            raise OpenWebUIError(f"no SQLite database at {path}")
        self.path = path
        # short: a locked database is retried with backoff above, without holding anything
        self._db = sqlite3.connect(path, timeout=1.0, isolation_level=None, check_same_thread=False)

    def _connection(self) -> sqlite3.Connection:
        return self._db

    def _table_columns(self, table: str) -> set[str]:
        rows = self._retrying(lambda: self._fetch(f"PRAGMA table_info({table})", ()))
        return {str(row[1]) for row in rows}

    def _begin_write(self, cursor: Any) -> None:
        cursor.execute("BEGIN IMMEDIATE")

    def _is_locked(self, exc: BaseException) -> bool:
        text = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)

    def size(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            candidate = Path(f"{self.path}{suffix}")
            if candidate.exists():
                total += candidate.stat().st_size
        return total

    def vacuum(self) -> None:
        self._retrying(lambda: self._db.execute("VACUUM"))
        # in WAL mode the space comes back to the file system only after a checkpoint
        self._retrying(lambda: self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())


def open_database(url: str) -> OpenWebUIDatabase:
    """Open WebUI's own ``DATABASE_URL`` forms: ``sqlite:///path/webui.db`` (or a plain file
    path), and ``postgresql://user:password@host/db`` (``postgres://``, ``postgresql+psycopg://``
    and ``postgresql+psycopg2://`` too) for PostgreSQL."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme:
        database: OpenWebUIDatabase = SQLiteDatabase(Path(url))
    elif scheme.startswith("sqlite"):
        path = unquote(urlsplit(url).path)
        # sqlite:///relative.db → "/relative.db"; sqlite:////abs.db → "//abs.db"
        database = SQLiteDatabase(Path(path[1:] if path.startswith("/") else path))
    elif scheme.split("+", 1)[0] in ("postgres", "postgresql"):
        from picgate.openwebui.postgres import PostgresDatabase

        database = PostgresDatabase(url)
    else:
        raise OpenWebUIError(
            f"unsupported --database-url scheme {scheme!r}: use sqlite:///path/to/webui.db "
            "(or a file path) or postgresql://user:password@host:5432/database"
        )
    try:
        database.inspect()
    except BaseException:
        database.close()
        raise
    return database
