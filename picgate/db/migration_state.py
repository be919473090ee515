"""Migrations that die half-way: made impossible where the database allows, named where not.

Transactional DDL: SQLite and PostgreSQL run ``CREATE TABLE`` inside a transaction, so the whole
upgrade commits or none of it does. PostgreSQL's driver opens that transaction by itself;
Python's ``sqlite3`` does not (in its default mode it runs DDL outside any transaction, so a
process killed between two ``CREATE TABLE`` left half a schema with no revision recorded):
``begin_ddl`` opens it explicitly. libSQL over HTTP (Hrana, one statement per request here)
commits statement by statement, so there a half-applied schema can still happen.

Detection: when an upgrade fails and no other process brings the schema to head,
``half_applied`` compares the tables present with the tables of the head schema; some present
and some missing means a migration died part-way, and ``HalfMigrated`` says what to do in one
line (``picgate serve`` and ``picgate cleanup`` print it and exit 2).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, inspect

from picgate.config import SettingsError
from picgate.db.models import METADATA

__all__ = ["HalfMigrated", "begin_ddl", "half_applied"]


class HalfMigrated(SettingsError):
    """The database holds part of a schema migration; the message says what to do."""


def begin_ddl(conn: Connection) -> None:
    """Open a real transaction for DDL on a local SQLite connection (see the module doc);
    nothing for other backends (PostgreSQL has one already, libSQL over HTTP cannot)."""
    if conn.dialect.name == "sqlite" and conn.dialect.driver == "pysqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the writer's lock too, for the whole upgrade


def half_applied(engine: Engine, revision: str | None, *, shown: str) -> HalfMigrated | None:
    """A HalfMigrated naming what is there and what is not, when only part of the head
    schema's tables exist; None for an empty database or a complete one."""
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
    expected = set(METADATA.tables)
    have = sorted(present & expected)
    missing = sorted(expected - present)
    if not have or not missing:
        return None
    return HalfMigrated(
        f"DATABASE_URL: the database {shown} holds a half-applied schema migration (revision "
        f"{revision or 'none'}; {len(have)} of {len(expected)} tables, missing "
        f"{', '.join(missing)}): restore it from a backup, or, if it holds nothing to keep "
        "yet, delete it and start PicGate again to create it whole."
    )
