"""SQLAlchemy's SQLite dialect on a remote libSQL server (sqld, Turso), through ``hrana``.

The SQL is SQLite's, so the dialect is SQLAlchemy's own SQLite dialect with a different DB-API
module: every query, migration and type behaves as on a SQLite file. ``register()`` makes it
the ``sqlite+libsql`` driver for this process (it takes precedence over any installed package
that claims the same name).

URL: ``sqlite+libsql://host[:port]/?secure=true|false&authToken=...`` becomes
``https://host`` (``secure=false``: ``http://``), the token a bearer header.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import URL
from sqlalchemy.pool import Pool, QueuePool

from picgate.db import hrana

NAME = "sqlite.libsql"
_FALSE = ("false", "0", "no", "off")


def register() -> None:
    registry.register(NAME, "picgate.db.libsql_dialect", "LibSQLDialect")


def server_url(url: URL) -> str:
    """The HTTP base URL of the server a ``sqlite+libsql://host`` URL names."""
    secure = str(url.query.get("secure", "true")).lower() not in _FALSE
    netloc = f"{url.host}:{url.port}" if url.port else str(url.host)
    return f"{'https' if secure else 'http'}://{netloc}"


class LibSQLDialect(SQLiteDialect):
    driver = "libsql"
    supports_statement_cache = True
    returns_native_bytes = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return hrana

    @classmethod
    def get_pool_class(cls, url: URL) -> type[Pool]:
        return QueuePool

    def create_connect_args(self, url: URL) -> Any:
        if not url.host:
            raise ValueError(f"{url.drivername} needs a server host here, got {url!r}")
        options: dict[str, Any] = {}
        token = url.query.get("authToken")
        if token:
            options["auth_token"] = str(token)
        if "timeout" in url.query:
            options["timeout"] = float(str(url.query["timeout"]))
        return [server_url(url)], options

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        version = connection.exec_driver_sql("select sqlite_version()").scalar()
        return tuple(int(part) for part in str(version).split(".") if part.isdigit())

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return isinstance(e, hrana.Disconnect) or (
            isinstance(e, hrana.ProgrammingError) and "closed database" in str(e)
        )


dialect = LibSQLDialect
