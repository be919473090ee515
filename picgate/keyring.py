"""Named gateway keys: created, checked, counted, limited and revoked.

A key is ``pg-`` plus 256 random bits (URL-safe base64); it is shown once, when it is made.
The database keeps its sha256 (a leaked database hands out no key; a fast hash is enough for a
high-entropy secret), its first characters (``prefix``, to tell keys apart in a list), and the
usage: requests and images today and in total, and when it was last used. "Today" is the UTC
day; the ``*_today`` counts restart when a call or an image arrives on a new day.

A key with a daily image limit (``daily_images``) that has stored that many images today has
its image calls refused with 429 ``rate_limit_exceeded`` until 00:00 UTC (``check_daily_images``,
called where an image call is decided; the refused call still counts as a request). A revoked key is refused with 401.
The environment's (or console's) ``GATEWAY_API_KEY`` is not kept here: it stays valid, and its
images record the key name ``env`` (``picgate.attribution.ENV_KEY_NAME``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy import Connection, case, insert, select, update

from picgate.db.engine import Database
from picgate.db.models import GATEWAY_KEYS, GatewayKeyRow
from picgate.errors import BadRequest, RateLimited

__all__ = ["KeyRing", "KeyUsage", "RateLimited", "hash_key"]

KEY_PREFIX = "pg-"
PREFIX_SHOWN = 10
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# "env": what GATEWAY_API_KEY's images record (picgate.attribution.ENV_KEY_NAME, a layer above)
RESERVED_NAMES = frozenset({"env", "default"})


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _today(now: datetime) -> str:
    return now.strftime("%Y-%m-%d")


@dataclass(frozen=True)
class KeyUsage:
    """A key as lists show it (never the key itself)."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool
    daily_images: int | None
    requests_today: int
    images_today: int
    requests_total: int
    images_total: int

    @classmethod
    def of(cls, row: GatewayKeyRow, today: str) -> KeyUsage:
        fresh = row.day == today
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked=row.revoked_at is not None,
            daily_images=row.daily_images,
            requests_today=row.requests_today if fresh else 0,
            images_today=row.images_today if fresh else 0,
            requests_total=row.requests_total,
            images_total=row.images_total,
        )

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat() + "Z",
            "last_used_at": self.last_used_at.isoformat() + "Z" if self.last_used_at else None,
            "revoked": self.revoked,
            "daily_images": self.daily_images,
            "requests_today": self.requests_today,
            "images_today": self.images_today,
            "requests_total": self.requests_total,
            "images_total": self.images_total,
        }


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_PATTERN.fullmatch(name):
        raise BadRequest(
            "A key name is 1-64 characters: letters, digits, '.', '_', '@' or '-', starting "
            "with a letter or digit.",
            param="name",
            code="invalid_key_name",
        )
    if name.lower() in RESERVED_NAMES:
        raise BadRequest(
            f"'{name}' is reserved for GATEWAY_API_KEY; choose another name.",
            param="name",
            code="invalid_key_name",
        )
    return name


class KeyRing:
    """The ``gateway_keys`` table. Synchronous methods: call them off the event loop."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, *, daily_images: int | None = None) -> tuple[KeyUsage, str]:
        """A new key named ``name``: its usage row and the key (shown once). 409 when taken."""
        name = check_name(name)
        if daily_images is not None and not 0 < daily_images <= 10**9:
            raise BadRequest(
                "daily_images must be a positive whole number (or absent for no limit)",
                param="daily_images",
                code="invalid_value",
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        row = GatewayKeyRow(
            id=secrets.token_hex(16),
            name=name,
            prefix=key[:PREFIX_SHOWN],
            key_hash=hash_key(key),
            created_at=now,
            last_used_at=None,
            revoked_at=None,
            daily_images=daily_images,
            day=_today(now),
            requests_today=0,
            images_today=0,
            requests_total=0,
            images_total=0,
        )

        def work(conn: Connection) -> KeyUsage:
            taken = conn.scalar(select(GATEWAY_KEYS.c.id).where(GATEWAY_KEYS.c.name == name))
            if taken is not None:
                raise BadRequest(
                    f"A key named {name!r} exists already; revoke it or choose another name.",
                    status_code=409,
                    param="name",
                    code="key_name_taken",
                )
            conn.execute(insert(GATEWAY_KEYS).values(**row._asdict()))
            return KeyUsage.of(row, row.day or "")

        return self.db.write(work), key

    def listing(self) -> list[KeyUsage]:
        today = _today(utcnow())
        rows = self.db.read(
            lambda c: c.execute(select(GATEWAY_KEYS).order_by(GATEWAY_KEYS.c.created_at)).all()
        )
        return [KeyUsage.of(GatewayKeyRow._make(row), today) for row in rows]

    def revoke(self, name: str) -> bool:
        """Whether a live key of that name was revoked."""
        now = utcnow()
        result = self.db.write(
            lambda s: s.execute(
                update(GATEWAY_KEYS)
                .where(GATEWAY_KEYS.c.name == name, GATEWAY_KEYS.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        )
        return bool(getattr(result, "rowcount", 0))

    def find(self, key: str) -> KeyUsage | None:
        """The key's row (revoked or not), or None for a key this table does not hold."""
        digest = hash_key(key)
        found = self.db.read(
            lambda c: c.execute(
                select(GATEWAY_KEYS).where(GATEWAY_KEYS.c.key_hash == digest)
            ).first()
        )
        # the lookup is by hash; compare again in constant time all the same
        if found is None or not hmac.compare_digest(found.key_hash, digest):
            return None
        return KeyUsage.of(GatewayKeyRow._make(found), _today(utcnow()))

    def admit(self, key: str) -> KeyUsage | None:
        """The live key's usage after counting this request; None: unknown key.

        Revoked: ``AuthenticationFailed`` is the caller's to raise (``revoked`` is set, nothing
        counted). The daily image limit is not applied here: a request that makes no image
        (``/v1/models``, a task answered without an image) passes; ``check_daily_images`` is
        called where an image call is decided.
        """
        found = self.find(key)
        if found is None or found.revoked:
            return found
        self._count(found.id, utcnow(), requests=1)
        return found

    @staticmethod
    def check_daily_images(usage: KeyUsage, now: datetime | None = None) -> None:
        """RateLimited (429) when the key had stored its ``daily_images`` today when ``usage``
        was read (``images_today`` is already 0 on a new UTC day)."""
        if usage.daily_images is not None and usage.images_today >= usage.daily_images:
            raise over_limit(usage, now or utcnow())

    async def aadmit(self, key: str) -> KeyUsage | None:
        """``admit`` in a worker thread."""
        return await anyio.to_thread.run_sync(self.admit, key)

    def count_images(self, key_id: str, images: int) -> None:
        """Count ``images`` stored for the key (the gateway calls it after each save)."""
        self._count(key_id, utcnow(), images=images)

    async def acount_images(self, key_id: str, images: int) -> None:
        """``count_images`` in a worker thread."""
        await anyio.to_thread.run_sync(self.count_images, key_id, images)

    def _count(self, key_id: str, now: datetime, *, requests: int = 0, images: int = 0) -> None:
        today = _today(now)

        col = GATEWAY_KEYS.c
        fresh = col.day == today  # the *_today counts start again on a new day
        values: dict[str, Any] = {
            "day": today,
            "requests_today": case((fresh, col.requests_today), else_=0) + requests,
            "images_today": case((fresh, col.images_today), else_=0) + images,
            "requests_total": col.requests_total + requests,
            "images_total": col.images_total + images,
        }
        if requests:
            values["last_used_at"] = now
        # one statement: two processes counting the same key at once add up
        self.db.write(
            lambda c: c.execute(update(GATEWAY_KEYS).where(col.id == key_id).values(**values))
        )


def over_limit(usage: KeyUsage, now: datetime) -> RateLimited:
    midnight = datetime(now.year, now.month, now.day) + timedelta(days=1)
    wait = int((midnight - now).total_seconds()) + 1
    hours, minutes = wait // 3600, wait % 3600 // 60
    return RateLimited(
        f"The key {usage.name!r} has stored its {usage.daily_images} images for today; the "
        f"limit resets at 00:00 UTC (in {hours} h {minutes} min).",
        headers={"Retry-After": str(wait)},
    )
