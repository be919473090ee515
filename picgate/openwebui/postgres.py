"""An Open WebUI PostgreSQL database (the ``picgate[postgres]`` extra: psycopg 3).

Open WebUI 0.12.4 declares ``chat.chat``, ``chat_message.content``/``output``/``files``/
``embeds`` and ``shared_chat.chat`` as SQLAlchemy ``JSON``, which PostgreSQL stores as ``json``:
the text exactly as written, key order and spacing included (unlike ``jsonb``). They are read
as ``column::text`` and written back as text cast to the column's own type, so outside the image
strings a chat stays byte-for-byte as it was. Were a column ``jsonb`` (a hand-altered schema),
PostgreSQL keeps only the JSON value, not its bytes: the rewrite then keeps the same JSON value.

Reads run in autocommit (no transaction held between chats). A chat's write is one transaction
that locks the chat's rows (``SELECT ... FOR UPDATE``), so Open WebUI saving the same chat
waits for it, or it waits for Open WebUI. A lock not granted within ``LOCK_TIMEOUT``, a
deadlock or a serialization failure rolls back and is retried with backoff.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from picgate.openwebui.database import TABLES, OpenWebUIDatabase, OpenWebUIError

# how long one statement waits for a row Open WebUI holds before the write is retried
LOCK_TIMEOUT = "2s"
# SQLSTATEs worth another try: serialization_failure, deadlock_detected, lock_not_available
RETRY_STATES = frozenset({"40001", "40P01", "55P03"})


def libpq_url(url: str) -> str:
    """Open WebUI's ``DATABASE_URL`` forms (``postgresql+psycopg2://`` ...) as libpq takes them."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def describe(url: str) -> str:
    """``host:port/database`` of a URL, without its user or password (for error lines)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


class PostgresDatabase(OpenWebUIDatabase):
    """Open WebUI on PostgreSQL, through one psycopg connection in autocommit mode."""

    placeholder = "%s"
    lock_suffix = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise OpenWebUIError(
                "PostgreSQL needs psycopg: pip install 'picgate[postgres]'"
            ) from exc
        self.types: dict[str, dict[str, str]] = {}
        try:
            self._db = psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OpenWebUIError(
                f"cannot connect to PostgreSQL at {describe(url)}: {reason}"
            ) from exc
        self._db.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")

    def _connection(self) -> Any:
        return self._db

    def _table_columns(self, table: str) -> set[str]:
        rows = self._retrying(
            lambda: self._fetch(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s",
                (table,),
            )
        )
        self.types[table] = {str(name): str(kind) for name, kind in rows}
        return set(self.types[table])

    def _begin_write(self, cursor: Any) -> None:
        cursor.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def _is_locked(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in RETRY_STATES

    def _text(self, column: str) -> str:
        return f'"{column}"::text'

    def _param(self, table: str, column: str) -> str:
        # json/jsonb take the text as JSON; a text column takes it as it is
        kind = self.types.get(table, {}).get(column)
        return {"json": "%s::json", "jsonb": "%s::jsonb"}.get(kind or "", "%s")

    def column_types(self) -> dict[str, str]:
        """``table.column`` → PostgreSQL type for every migrated column (``json`` expected)."""
        return {
            f"{table}.{column}": self.types[table][column]
            for table, columns in self.columns.items()
            for column in columns
        }

    def size(self) -> int:
        """Bytes the chat tables take (heap, TOAST and indexes), dead rows included."""
        rows = self._retrying(
            lambda: self._fetch(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relname = ANY(%s)",
                (list(self.columns),),
            )
        )
        return int(rows[0][0])

    def vacuum(self) -> None:
        """Plain ``VACUUM``: the space of the replaced texts becomes free for PostgreSQL to
        reuse, and empty pages at a table's end go back to the disk. It runs next to a live
        Open WebUI; ``VACUUM FULL`` would give back more but locks the tables, so it is left
        to the admin."""
        for table in self.columns:
            if table in TABLES:  # names only from TABLES, never from input
                self._retrying(lambda table=table: self._db.execute(f'VACUUM "{table}"'))  # type: ignore[misc]
