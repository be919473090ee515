"""SQLAlchemy's SQLite dialect on a remote libSQL server (sqld, Turso), through ``hrana``.

The SQL is SQLite's, so the dialect is SQLAlchemy's own SQLite dialect with a different DB-API
module: every query, migration and type behaves as on a SQLite file. ``register()`` makes it
the ``sqlite+libsql`` driver for this process (it takes precedence over any installed package
that claims the same name).

URL: ``sqlite+libsql://host[:port]/?secure=true|false&authToken=...`` becomes
``https://host`` (``secure=false``: ``http://``), the token a bearer header.

Each engine (one dialect instance) builds one TLS context and hands it to every connection it
opens: building one loads the CA bundle (milliseconds and about a megabyte each). Pooled
connections are pre-pinged through ``hrana.Connection.ping`` (a round trip only after idling).
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import httpx
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ssl_context: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()

    @classmethod
    def import_dbapi(cls) -> Any:
        return hrana

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The engine's one TLS context, built on first use (httpx's defaults: certifi's CA
        bundle, SSL_CERT_FILE / SSL_CERT_DIR honoured)."""
        with self._ssl_lock:
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            return self._ssl_context

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
        options["ssl_context"] = self.ssl_context
        return [server_url(url)], options

    def do_ping(self, dbapi_connection: Any) -> bool:
        dbapi_connection.ping()
        return True

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        version = connection.exec_driver_sql("select sqlite_version()").scalar()
        return tuple(int(part) for part in str(version).split(".") if part.isdigit())

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return isinstance(e, hrana.Disconnect) or (
            isinstance(e, hrana.ProgrammingError) and "closed database" in str(e)
        )


dialect = LibSQLDialect
