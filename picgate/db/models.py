"""Tables. Primary keys are made by the app (no reliance on ``lastrowid``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

R2_NONE = "none"
R2_PENDING = "pending"
R2_UPLOADED = "uploaded"
R2_FAILED = "failed"


class Base(DeclarativeBase):
    pass


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ext: Mapped[str] = mapped_column(String(8))
    mime: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    accessed_at: Mapped[datetime] = mapped_column(DateTime)
    source: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    local: Mapped[bool] = mapped_column(Boolean, default=True)
    expired: Mapped[bool] = mapped_column(Boolean, default=False)
    r2_state: Mapped[str] = mapped_column(String(16), default=R2_NONE)
    r2_attempts: Mapped[int] = mapped_column(Integer, default=0)
    r2_last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    r2_next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    r2_lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    r2_lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # attribution (picgate.attribution): untrusted text, cleaned and capped before it is stored
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    user_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    chat_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
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


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    secret: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class LogEntry(Base):
    __tablename__ = "log_entries"

    # sortable: 20-digit nanosecond timestamp + random suffix
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    level: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_log_entries_level_id", "level", "id"),)


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class AdminSession(Base):
    __tablename__ = "admin_sessions"

    # sha256 of the cookie token: a leaked database does not hand out live sessions
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_admin_sessions_expires_at", "expires_at"),)


class LoginAttempt(Base):
    __tablename__ = "login_attempts"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)  # "ip:..." or "user:..."
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(DateTime)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


CLEANUP_LEASE = "cleanup"  # the job_leases row of the cleanup job


class JobLease(Base):
    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_report: Mapped[str | None] = mapped_column(Text, nullable=True)


class DailyStat(Base):
    __tablename__ = "daily_stats"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # requests | errors | images
    value: Mapped[int] = mapped_column(Integer, default=0)


class GatewayKey(Base):
    """A named gateway key (``picgate keys``); only the sha256 of the key is kept."""

    __tablename__ = "gateway_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    daily_images: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no limit
    day: Mapped[str | None] = mapped_column(String(10), nullable=True)  # of the *_today counts
    requests_today: Mapped[int] = mapped_column(Integer, default=0)
    images_today: Mapped[int] = mapped_column(Integer, default=0)
    requests_total: Mapped[int] = mapped_column(Integer, default=0)
    images_total: Mapped[int] = mapped_column(Integer, default=0)
