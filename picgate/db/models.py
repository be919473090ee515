"""Tables, as SQLAlchemy Core ``Table`` objects in one ``METADATA``, and the typed rows read
from them. Primary keys are made by the app (no reliance on ``lastrowid``).

Core, not the ORM: importing ``sqlalchemy.orm`` and mapping these tables as classes cost a
Lambda cold start ~125 ms of CPU (docs/PERFORMANCE.md, "Core tables instead of the ORM"),
and PicGate used none of the ORM's features (no relationships, no unit of work it needed).
Statements are built on ``TABLE.c.<column>``; a row read whole (``select(TABLE)``) becomes
one of the typed rows below with ``ImageRow._make(row)``: a NamedTuple whose fields are the
table's columns in order (``tests/unit/test_tables.py`` holds them to it), so the types still
hold across modules. NamedTuples rather than dataclasses: making a dataclass costs ~1 ms at
import, a NamedTuple a quarter of that. The migrations (``picgate.db.migrations``) create
exactly these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text

R2_NONE = "none"
R2_PENDING = "pending"
R2_UPLOADED = "uploaded"
R2_FAILED = "failed"

METADATA = MetaData()


def _required(name: str, kind: Any, **kwargs: Any) -> Column[Any]:
    return Column(name, kind, nullable=False, **kwargs)


def _optional(name: str, kind: Any) -> Column[Any]:
    return Column(name, kind, nullable=True)


IMAGES = Table(
    "images",
    METADATA,
    Column("id", String(64), primary_key=True),
    _required("ext", String(8)),
    _required("mime", String(32)),
    _required("size", Integer),
    _required("sha256", String(64)),
    _optional("width", Integer),
    _optional("height", Integer),
    _required("created_at", DateTime),
    _required("accessed_at", DateTime),
    _required("source", String(32)),
    _optional("prompt", Text),
    _required("local", Boolean, default=True),
    _required("expired", Boolean, default=False),
    _required("r2_state", String(16), default=R2_NONE),
    _required("r2_attempts", Integer, default=0),
    _optional("r2_last_error", Text),
    _optional("r2_next_attempt_at", DateTime),
    _optional("r2_lease_owner", String(64)),
    _optional("r2_lease_until", DateTime),
    # attribution (picgate.attribution): untrusted text, cleaned and capped before it is stored
    _optional("user_id", String(128)),
    _optional("user_name", String(128)),
    _optional("chat_id", String(128)),
    _optional("message_id", String(128)),
    _optional("model", String(128)),
    _optional("key_name", String(64)),
    Index("ix_images_created_at", "created_at"),
    Index("ix_images_accessed_at", "accessed_at"),
    Index("ix_images_size", "size"),
    Index("ix_images_local_accessed", "local", "accessed_at"),
    Index("ix_images_r2_queue", "r2_state", "r2_next_attempt_at"),
    Index("ix_images_user_created", "user_id", "created_at"),
    Index("ix_images_chat", "chat_id"),
    Index("ix_images_model_created", "model", "created_at"),
    Index("ix_images_key_created", "key_name", "created_at"),
    Index("ix_images_sha256", "sha256"),
)

SETTINGS = Table(
    "settings",
    METADATA,
    Column("key", String(64), primary_key=True),
    _required("value", Text),
    _required("secret", Boolean, default=False),
    _required("updated_at", DateTime),
)

LOG_ENTRIES = Table(
    "log_entries",
    METADATA,
    # sortable: 20-digit nanosecond timestamp + random suffix
    Column("id", String(40), primary_key=True),
    _required("created_at", DateTime),
    _required("level", String(10)),
    _required("message", Text),
    Index("ix_log_entries_level_id", "level", "id"),
)

ADMIN_USERS = Table(
    "admin_users",
    METADATA,
    Column("id", String(32), primary_key=True),
    _required("username", String(64), unique=True),
    _required("password_hash", String(255)),
    _required("created_at", DateTime),
    _required("updated_at", DateTime),
)

ADMIN_SESSIONS = Table(
    "admin_sessions",
    METADATA,
    # sha256 of the cookie token: a leaked database does not hand out live sessions
    Column("id", String(64), primary_key=True),
    _required("user_id", String(32)),
    _required("csrf_token", String(64)),
    _required("created_at", DateTime),
    _required("last_seen_at", DateTime),
    _required("expires_at", DateTime),
    Index("ix_admin_sessions_expires_at", "expires_at"),
)

LOGIN_ATTEMPTS = Table(
    "login_attempts",
    METADATA,
    Column("key", String(128), primary_key=True),  # "ip:..." or "user:..."
    _required("failures", Integer, default=0),
    _required("window_start", DateTime),
    _optional("locked_until", DateTime),
)

CLEANUP_LEASE = "cleanup"  # the job_leases row of the cleanup job

JOB_LEASES = Table(
    "job_leases",
    METADATA,
    Column("name", String(64), primary_key=True),
    _optional("owner", String(64)),
    _optional("lease_until", DateTime),
    _optional("last_run_at", DateTime),
    _optional("last_report", Text),
)

DAILY_STATS = Table(
    "daily_stats",
    METADATA,
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    Column("name", String(32), primary_key=True),  # requests | errors | images
    _required("value", Integer, default=0),
)

# a named gateway key (``picgate keys``); only the sha256 of the key is kept
GATEWAY_KEYS = Table(
    "gateway_keys",
    METADATA,
    Column("id", String(32), primary_key=True),
    _required("name", String(64), unique=True),
    _required("prefix", String(16)),
    _required("key_hash", String(64), unique=True),
    _required("created_at", DateTime),
    _optional("last_used_at", DateTime),
    _optional("revoked_at", DateTime),
    _optional("daily_images", Integer),  # None: no limit
    _optional("day", String(10)),  # of the *_today counts
    _required("requests_today", Integer, default=0),
    _required("images_today", Integer, default=0),
    _required("requests_total", Integer, default=0),
    _required("images_total", Integer, default=0),
)


class ImageRow(NamedTuple):
    id: str
    ext: str
    mime: str
    size: int
    sha256: str
    width: int | None
    height: int | None
    created_at: datetime
    accessed_at: datetime
    source: str
    prompt: str | None
    local: bool
    expired: bool
    r2_state: str
    r2_attempts: int
    r2_last_error: str | None
    r2_next_attempt_at: datetime | None
    r2_lease_owner: str | None
    r2_lease_until: datetime | None
    user_id: str | None
    user_name: str | None
    chat_id: str | None
    message_id: str | None
    model: str | None
    key_name: str | None


class AdminUserRow(NamedTuple):
    id: str
    username: str
    password_hash: str
    created_at: datetime
    updated_at: datetime


class AdminSessionRow(NamedTuple):
    id: str
    user_id: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


class JobLeaseRow(NamedTuple):
    name: str
    owner: str | None
    lease_until: datetime | None
    last_run_at: datetime | None
    last_report: str | None


class GatewayKeyRow(NamedTuple):
    id: str
    name: str
    prefix: str
    key_hash: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    daily_images: int | None
    day: str | None
    requests_today: int
    images_today: int
    requests_total: int
    images_total: int
