"""Settings edited in the admin console, stored in the database, merged under the environment.

Secrets are encrypted at rest with a key derived from ``SECRET_KEY``. ``ConfigService.current()``
returns the effective settings; it re-reads the table at most every few seconds so that every
replica (and every Lambda container) sees a change soon after it is saved.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import Connection, insert, select, update

from picgate.config import EDITABLE, SECRETS, Settings, SettingsError, validate_settings
from picgate.db.engine import Database
from picgate.db.models import SETTINGS
from picgate.eventlog import EventLog

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

log = logging.getLogger("picgate")

REFRESH_SECONDS = 3.0


def load_or_create_secret_key(settings: Settings) -> str:
    """``SECRET_KEY`` from the environment, else one generated once and kept in the data dir."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(key)
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


def generate_api_key() -> str:
    return "pg-" + secrets.token_urlsafe(32)


def save_setting(conn: Connection, key: str, value: str, *, secret: bool, now: datetime) -> None:
    """Write the ``settings`` row ``key`` (an update, or an insert when it is not there yet),
    inside the caller's write transaction."""
    changed = conn.execute(
        update(SETTINGS)
        .where(SETTINGS.c.key == key)
        .values(value=value, secret=secret, updated_at=now)
    )
    if not changed.rowcount:
        conn.execute(insert(SETTINGS).values(key=key, value=value, secret=secret, updated_at=now))


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"picgate-settings:" + secret_key.encode()).digest()
        self._key = base64.urlsafe_b64encode(digest)
        self._fernet_instance: Fernet | None = None

    @property
    def _fernet(self) -> Fernet:
        # imported on first use: a Lambda with every secret in its environment never needs it
        if self._fernet_instance is None:
            from cryptography.fernet import Fernet

            self._fernet_instance = Fernet(self._key)
        return self._fernet_instance

    def derive(self, purpose: str) -> str:
        """A URL-safe token fixed by ``SECRET_KEY`` and ``purpose`` (HMAC-SHA256, 256 bits):
        every replica and Lambda container computes the same one without storing it."""
        digest = hmac.new(self._key, b"picgate-derive:" + purpose.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, token: str) -> str | None:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            return None


MASK = "••••••••"
MASK_REVEAL_FROM = 24  # a secret this long keeps >100 bits hidden after showing 7 characters


def mask(value: str | None) -> str:
    """What the browser may see of a secret: a fixed mask, plus its first 3 and last 4
    characters only when it is at least MASK_REVEAL_FROM long (a short secret shows nothing)."""
    if not value:
        return ""
    if len(value) < MASK_REVEAL_FROM:
        return MASK
    return f"{value[:3]}{MASK}{value[-4:]}"


# A stored secret is bound to the host it is sent to: moving that host from the console needs the
# secret again in the same save, so that a session (or a forged request) cannot point PicGate
# somewhere else and have it hand over the stored key (on "test upstream" or any later call).
BOUND_SECRETS: dict[str, tuple[str, ...]] = {
    "upstream_api_key": ("upstream_api_base",),
    "r2_secret_access_key": ("r2_endpoint_url", "r2_account_id"),
}


def _origin(settings: Settings, field: str) -> str | None:
    """scheme://host:port that ``field`` (the first of a BOUND_SECRETS entry) sends to."""
    value = settings.upstream_api_base if field == "upstream_api_base" else settings.r2_endpoint
    if not value:
        return None
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_moved_secrets(
    before: Settings, after: Settings, values: dict[str, Any], fixed: frozenset[str]
) -> None:
    """Refuse (SettingsError naming the field) a save that moves a stored secret's host
    without giving that secret again (a new value, or ``None`` to clear it)."""
    for secret, fields in BOUND_SECRETS.items():
        moved = [f for f in fields if f in values]
        if secret in values or not moved or getattr(before, secret) is None:
            continue
        old = _origin(before, fields[0])
        if old is None or old == _origin(after, fields[0]):
            continue
        if secret in fixed:
            raise SettingsError(
                f"{moved[0].upper()} cannot move to another host from the console while "
                f"{secret.upper()} is set in the environment"
            )
        raise SettingsError(
            f"{moved[0].upper()} points to another host: enter {secret.upper()} again in the "
            "same save (the stored one is never sent to a new host)"
        )


class ConfigService:
    """The effective settings: the environment's, over the values saved in the console.

    With ``events``, it keeps the event log's redactor in step: a key stored through the console
    is a secret too, scrubbed from log lines from the moment it is loaded or saved.
    ``extra_secrets`` are scrubbed as well, whatever the settings say (the upstream keys of
    ``MODELS_FILE``).
    """

    def __init__(
        self,
        base: Settings,
        db: Database,
        box: SecretBox,
        *,
        events: EventLog | None = None,
        extra_secrets: Sequence[str] = (),
    ) -> None:
        self.base = base
        self.db = db
        self.box = box
        self.events = events
        self.extra_secrets = tuple(extra_secrets)
        self._current = base
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        # the key made on first start, until the first admin's dashboard shows it (once)
        self.generated_key: str | None = None

    # -- reading ---------------------------------------------------------------------------

    def _read(self, conn: Connection) -> dict[str, Any]:
        stored: dict[str, Any] = {}
        for row in conn.execute(select(SETTINGS.c.key, SETTINGS.c.value, SETTINGS.c.secret)):
            if row.key not in EDITABLE:
                continue
            raw = self.box.open(row.value) if row.secret else row.value
            if raw is None:
                log.warning("stored setting %s cannot be decrypted (SECRET_KEY changed?)", row.key)
                continue
            try:
                stored[row.key] = json.loads(raw)
            except ValueError:
                log.warning("stored setting %s is not valid JSON; using the default", row.key)
        return stored

    def _apply(self, stored: dict[str, Any]) -> Settings:
        """``base.with_stored(stored)``, skipping (with a warning) stored values that no longer
        validate, so one bad row cannot take every page down."""
        stored = dict(stored)
        while True:
            try:
                return self.base.with_stored(stored)
            except ValidationError as exc:
                bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} & set(stored)
                if not bad:
                    raise
                for key in sorted(bad):
                    log.warning("stored setting %s is invalid; using the default", key)
                    del stored[key]

    def reload(self) -> Settings:
        return self._merge(self.db.read(self._read))

    def current(self) -> Settings:
        """Effective settings; refreshed from the database at most every REFRESH_SECONDS."""
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            return self.reload()
        return self._current

    async def acurrent(self) -> Settings:
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            return await self.db.aread(lambda s: self._merge(self._read(s)))
        return self._current

    def _merge(self, stored: dict[str, Any]) -> Settings:
        merged = self._apply(stored)
        with self._lock:
            self._current = merged
            self._loaded_at = time.monotonic()
        self._changed(merged)
        return merged

    def _changed(self, current: Settings) -> None:
        if self.events is not None:
            # the environment's keys stay secrets, and so do keys rotated away (an upstream or
            # a log may still echo the old one)
            self.events.redactor = self.events.redactor.remembering(
                self.base, current, extra=self.extra_secrets
            )

    def stored_values(self) -> dict[str, Any]:
        return self.db.read(self._read)

    # -- writing ---------------------------------------------------------------------------

    def save(self, values: dict[str, Any]) -> Settings:
        """Validate and store editable, non-fixed values; returns the new effective settings.

        Raises SettingsError / pydantic.ValidationError for values that are refused (nothing
        is stored then), including a move of a stored secret's host without that secret.
        """
        fixed = self.base.fixed_fields()
        unknown = [k for k in values if k not in EDITABLE]
        if unknown:
            raise ValueError(f"not an editable setting: {', '.join(sorted(unknown))}")
        pinned = [k for k in values if k in fixed]
        if pinned:
            raise ValueError(f"set by the environment, read-only here: {', '.join(sorted(pinned))}")

        def work(conn: Connection) -> Settings:
            stored = self._read(conn)
            before = self._apply(stored)
            # every new value is validated on its own first: a refused one is never stored
            self.base.with_stored(values)
            stored.update(values)
            candidate = self._apply(stored)
            check_moved_secrets(before, candidate, values, fixed)
            validate_settings(candidate)
            now = datetime.now(UTC).replace(tzinfo=None)
            for key in values:
                normalized = getattr(candidate, key)
                text = json.dumps(normalized)
                secret = key in SECRETS
                sealed = self.box.seal(text) if secret else text
                save_setting(conn, key, sealed, secret=secret, now=now)
            return candidate

        result = self.db.write(work)
        with self._lock:
            self._current = result
            self._loaded_at = time.monotonic()
        self._changed(result)
        return result

    def ensure_gateway_key(self) -> str | None:
        """First start with no key anywhere: generate, store, and return it (else None)."""
        if self.base.gateway_api_key or "gateway_api_key" in self.base.fixed_fields():
            return None
        if "gateway_api_key" in self.stored_values():
            return None  # set before, or cleared on purpose: a cleared key stays cleared
        key = generate_api_key()
        self.save({"gateway_api_key": key})
        self.generated_key = key
        return key

    def take_generated_key(self) -> str | None:
        """The first-start key, once: later calls return None."""
        with self._lock:
            key, self.generated_key = self.generated_key, None
        return key
