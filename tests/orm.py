"""ORM classes over PicGate's Core tables, for tests that look at or seed rows directly.

PicGate itself uses SQLAlchemy Core only (``picgate.db.models``: importing and mapping the ORM
cost every Lambda cold start ~125 ms of CPU). Tests may still read a row as an object, change one
column, or add a row: ``orm.read(db, lambda s: s.get(Image, image_id))`` runs ``fn(session)``
with a ``Session`` bound to the connection of one ``db.read`` (``orm.write``: ``db.write``, the
session flushed before the transaction commits). Each class maps one table of
``picgate.db.models`` (``__table__``); its annotations only type the columns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

from picgate.db import models
from picgate.db.engine import Database

T = TypeVar("T")


class Base(DeclarativeBase):
    metadata = models.METADATA


class Image(Base):
    __table__ = models.IMAGES

    id: Mapped[str]
    ext: Mapped[str]
    mime: Mapped[str]
    size: Mapped[int]
    sha256: Mapped[str]
    width: Mapped[int | None]
    height: Mapped[int | None]
    created_at: Mapped[datetime]
    accessed_at: Mapped[datetime]
    source: Mapped[str]
    prompt: Mapped[str | None]
    local: Mapped[bool]
    expired: Mapped[bool]
    r2_state: Mapped[str]
    r2_attempts: Mapped[int]
    r2_last_error: Mapped[str | None]
    r2_next_attempt_at: Mapped[datetime | None]
    r2_lease_owner: Mapped[str | None]
    r2_lease_until: Mapped[datetime | None]
    user_id: Mapped[str | None]
    user_name: Mapped[str | None]
    chat_id: Mapped[str | None]
    message_id: Mapped[str | None]
    model: Mapped[str | None]
    key_name: Mapped[str | None]


class Setting(Base):
    __table__ = models.SETTINGS

    key: Mapped[str]
    value: Mapped[str]
    secret: Mapped[bool]
    updated_at: Mapped[datetime]


class LogEntry(Base):
    __table__ = models.LOG_ENTRIES

    id: Mapped[str]
    created_at: Mapped[datetime]
    level: Mapped[str]
    message: Mapped[str]


class AdminUser(Base):
    __table__ = models.ADMIN_USERS

    id: Mapped[str]
    username: Mapped[str]
    password_hash: Mapped[str]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AdminSession(Base):
    __table__ = models.ADMIN_SESSIONS

    id: Mapped[str]
    user_id: Mapped[str]
    csrf_token: Mapped[str]
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class LoginAttempt(Base):
    __table__ = models.LOGIN_ATTEMPTS

    key: Mapped[str]
    failures: Mapped[int]
    window_start: Mapped[datetime]
    locked_until: Mapped[datetime | None]


class JobLease(Base):
    __table__ = models.JOB_LEASES

    name: Mapped[str]
    owner: Mapped[str | None]
    lease_until: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    last_report: Mapped[str | None]


class DailyStat(Base):
    __table__ = models.DAILY_STATS

    day: Mapped[str]
    name: Mapped[str]
    value: Mapped[int]


class GatewayKey(Base):
    __table__ = models.GATEWAY_KEYS

    id: Mapped[str]
    name: Mapped[str]
    prefix: Mapped[str]
    key_hash: Mapped[str]
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    daily_images: Mapped[int | None]
    day: Mapped[str | None]
    requests_today: Mapped[int]
    images_today: Mapped[int]
    requests_total: Mapped[int]
    images_total: Mapped[int]


def in_session(conn: Connection, fn: Callable[[Session], T]) -> T:
    """``fn(session)`` on ``conn``'s transaction; what it added or changed is flushed."""
    with Session(bind=conn, expire_on_commit=False) as session:
        result = fn(session)
        session.flush()
        return result


def read(db: Database, fn: Callable[[Session], T]) -> T:
    return db.read(lambda conn: in_session(conn, fn))


def write(db: Database, fn: Callable[[Session], T]) -> T:
    return db.write(lambda conn: in_session(conn, fn))


async def aread(db: Database, fn: Callable[[Session], T]) -> T:
    return await db.aread(lambda conn: in_session(conn, fn))


async def awrite(db: Database, fn: Callable[[Session], T]) -> T:
    return await db.awrite(lambda conn: in_session(conn, fn))
