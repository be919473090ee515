"""Admin accounts, sessions, CSRF tokens and login rate limiting, all kept in the database.

Passwords are hashed with argon2id at a modest memory cost (19 MiB) so that a 128 MB Lambda can
verify one. A session cookie carries a random token; the database keeps only its sha256, so a
leaked database hands out no live sessions. Sessions end after ``IDLE`` without use or
``ABSOLUTE`` after login, whichever comes first. Every session has its own CSRF token.

Login is rate limited per account name and client address together (5 failures lock that pair
for 15 minutes) and per client address (20 failures lock the address); failures on one account
from many addresses slow every attempt on it down (``account_delay``) but never lock it, so no
one can keep the admin out. A wrong name and a wrong password get the same answer after the
same work: a missing account still costs one hash verification. First-run setup needs the
``setup_token`` printed on the console at start.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, case, delete, func, insert, select, text, update

from picgate.db.models import (
    ADMIN_SESSIONS,
    ADMIN_USERS,
    LOGIN_ATTEMPTS,
    AdminSessionRow,
    AdminUserRow,
)
from picgate.errors import PicGateError
from picgate.settings_store import SecretBox

if TYPE_CHECKING:
    from argon2 import PasswordHasher

ADMIN_ID = "admin"  # one admin account: a fixed key makes concurrent first-run setups safe
IDLE = timedelta(hours=12)
ABSOLUTE = timedelta(days=7)
TOUCH_EVERY = timedelta(minutes=1)

WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
MAX_USER_FAILURES = 5  # one address guessing one account: that pair is locked
MAX_IP_FAILURES = 20  # one address guessing any account: that address is locked
# Many addresses guessing one account are slowed, never locked out: a lock keyed on the account
# alone would let anyone with a few addresses keep the real admin out for ever. Past
# ACCOUNT_SLOWDOWN_AFTER failures in the window every attempt on the account waits, doubling
# per further failure up to ACCOUNT_DELAY_MAX seconds (the right password still gets in).
ACCOUNT_SLOWDOWN_AFTER = 10
ACCOUNT_DELAY_BASE = 0.25
ACCOUNT_DELAY_MAX = 5.0

SETUP_PURPOSE = "admin-setup"

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
PASSWORD_MIN = 8
PASSWORD_MAX = 256

_dummy_hash: str | None = None


class AdminLoginRequired(PicGateError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "admin_login_required"


class CsrfFailed(PicGateError):
    status_code = 403
    error_type = "invalid_request_error"
    code = "csrf_failed"


class LoginThrottled(PicGateError):
    status_code = 429
    error_type = "invalid_request_error"
    code = "too_many_attempts"


@dataclass(frozen=True)
class AdminContext:
    """The signed-in admin of one request."""

    session_id: str
    user_id: str
    username: str
    csrf_token: str


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


# -- passwords -------------------------------------------------------------------------------


@cache
def _hasher() -> PasswordHasher:
    # argon2 is imported on the first password check, not when a cold start asks whether an
    # admin exists
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher().hash(secrets.token_urlsafe(16))
    return _dummy_hash


def check_credentials_shape(username: str, password: str) -> str | None:
    """An i18n key describing why these cannot be an admin's credentials (None: fine)."""
    if not USERNAME_RE.match(username):
        return "auth.error.username_invalid"
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return "auth.error.password_length"
    return None


# -- accounts --------------------------------------------------------------------------------


def setup_token(box: SecretBox) -> str:
    """The one-time token that first-run setup needs while no admin exists.

    Derived from ``SECRET_KEY``, so every replica and Lambda container prints and accepts the
    same one; once an admin exists, setup is closed and the token opens nothing.
    """
    return box.derive(SETUP_PURPOSE)


def admin_exists(conn: Connection) -> bool:
    return bool(conn.scalar(select(func.count()).select_from(ADMIN_USERS)))


def create_first_admin(conn: Connection, *, username: str, password: str) -> bool:
    """Create the admin if there is none; False when one exists already."""
    if admin_exists(conn):
        return False
    now = utcnow()
    # a concurrent setup fails here on the primary key
    conn.execute(
        insert(ADMIN_USERS).values(
            id=ADMIN_ID,
            username=username,
            password_hash=hash_password(password),
            created_at=now,
            updated_at=now,
        )
    )
    return True


def set_admin(conn: Connection, *, username: str, password: str) -> bool:
    """Create the admin or reset its name and password (CLI); ends its sessions. True: created."""
    now = utcnow()
    values = {"username": username, "password_hash": hash_password(password), "updated_at": now}
    changed = conn.execute(update(ADMIN_USERS).where(ADMIN_USERS.c.id == ADMIN_ID).values(values))
    created = not changed.rowcount
    if created:
        conn.execute(insert(ADMIN_USERS).values(id=ADMIN_ID, created_at=now, **values))
    conn.execute(delete(ADMIN_SESSIONS).where(ADMIN_SESSIONS.c.user_id == ADMIN_ID))
    return created


def change_password(conn: Connection, user_id: str, *, current: str, new: str) -> bool:
    """Set a new password after checking the current one; ends every session of the user."""
    stored = conn.scalar(select(ADMIN_USERS.c.password_hash).where(ADMIN_USERS.c.id == user_id))
    if stored is None or not verify_password(stored, current):
        return False
    conn.execute(
        update(ADMIN_USERS)
        .where(ADMIN_USERS.c.id == user_id)
        .values(password_hash=hash_password(new), updated_at=utcnow())
    )
    conn.execute(delete(ADMIN_SESSIONS).where(ADMIN_SESSIONS.c.user_id == user_id))
    return True


# -- rate limiting ---------------------------------------------------------------------------


def _account_key(username: str) -> str:
    return "user:" + username.strip().lower()[:64]


def _attempt_keys(username: str, ip: str) -> list[tuple[str, int | None]]:
    """The failure counters a login attempt counts against, with the count that locks them.

    Locks are per account *and* address, and per address: someone guessing from one address
    locks out that address, not the admin signing in from another. The account's own counter
    (limit None) never locks; it only feeds ``account_delay``.
    """
    # keys fit the 128-character column: "user:" + 64 + "|ip:" + 54 (an IPv6 address is <= 45)
    account, address = _account_key(username), ip[:54]
    return [
        (f"{account}|ip:{address}", MAX_USER_FAILURES),
        ("ip:" + address, MAX_IP_FAILURES),
        (account, None),
    ]


def delay_for(failures: int) -> float:
    """Seconds an attempt on an account with ``failures`` recent failures waits first."""
    if failures < ACCOUNT_SLOWDOWN_AFTER:
        return 0.0
    steps = min(failures - ACCOUNT_SLOWDOWN_AFTER, 32)
    return float(min(ACCOUNT_DELAY_MAX, ACCOUNT_DELAY_BASE * 2**steps))


def account_delay(conn: Connection, *, username: str) -> float:
    """The wait before checking a password for ``username`` (0 unless it is being guessed)."""
    row = conn.execute(
        select(LOGIN_ATTEMPTS.c.window_start, LOGIN_ATTEMPTS.c.failures).where(
            LOGIN_ATTEMPTS.c.key == _account_key(username)
        )
    ).first()
    if row is None or utcnow() - row.window_start > WINDOW:
        return 0.0
    return delay_for(row.failures)


def unlock(conn: Connection, username: str | None = None) -> int:
    """Forget failed logins (all, or those of one account); returns the records removed."""
    query = delete(LOGIN_ATTEMPTS)
    if username is not None:
        account = _account_key(username)
        query = query.where(
            (LOGIN_ATTEMPTS.c.key == account) | LOGIN_ATTEMPTS.c.key.startswith(account + "|ip:")
        )
    return int(getattr(conn.execute(query), "rowcount", 0) or 0)


def _ensure_counters(conn: Connection, keys: list[str], now: datetime) -> None:
    """A row for every key (``ON CONFLICT DO NOTHING``: SQLite, libSQL and PostgreSQL share
    it). Being a write, the first one also takes SQLite's write lock for the transaction."""
    # typed like the column: each dialect stores the datetime its own way (SQLite and libSQL
    # as text; the Hrana driver refuses a bare datetime)
    statement = text(
        "INSERT INTO login_attempts (key, failures, window_start, locked_until) "
        "VALUES (:key, 0, :now, NULL) ON CONFLICT (key) DO NOTHING"
    ).bindparams(bindparam("now", type_=LOGIN_ATTEMPTS.c.window_start.type))
    for key in keys:
        conn.execute(statement, {"key": key, "now": now})


def _count_failure(conn: Connection, key: str, limit: int | None, now: datetime) -> None:
    """``failures + 1`` in one UPDATE (the window restarting in the same statement), and the
    lock set when the count reaches ``limit``: no count is read and written back."""
    stale = LOGIN_ATTEMPTS.c.window_start < now - WINDOW
    failures = case((stale, 1), else_=LOGIN_ATTEMPTS.c.failures + 1)
    values: dict[str, Any] = {
        "failures": failures,
        "window_start": case((stale, now), else_=LOGIN_ATTEMPTS.c.window_start),
    }
    if limit is not None:
        values["locked_until"] = case(
            (failures >= limit, now + LOCKOUT), else_=LOGIN_ATTEMPTS.c.locked_until
        )
    conn.execute(update(LOGIN_ATTEMPTS).where(LOGIN_ATTEMPTS.c.key == key).values(**values))


def record_failure(conn: Connection, *, username: str, ip: str) -> None:
    """Count one failure on every counter of this attempt, each in one atomic statement
    (parallel attempts reading a count and writing it back lost updates: 9-17 guesses got
    through where 5 were allowed)."""
    now = utcnow()
    keys = _attempt_keys(username, ip)
    _ensure_counters(conn, [key for key, _ in keys], now)
    for key, limit in keys:
        _count_failure(conn, key, limit, now)


@dataclass(frozen=True)
class LoginTicket:
    """An admitted login attempt: the hash to verify the password against (a dummy one when
    no account has that name, so the work is the same) and the account's id."""

    password_hash: str
    user_id: str | None


def admit(conn: Connection, *, username: str, ip: str) -> LoginTicket:
    """Admit one login attempt, counting it as a failure *before* the password is checked.

    LoginThrottled (nothing counted) when a counter of this attempt is locked. The check and
    the count share one transaction that starts with a write, so attempts are serialized
    there: each admitted one has taken its slot before the next looks, and at most
    ``MAX_USER_FAILURES`` passwords per account and address are verified in a window however
    many arrive at once. (A read first and a write later, as before, also failed with
    SQLITE_BUSY under parallel attempts: those were the 500s.) ``succeeded`` gives the slot
    back.
    """
    now = utcnow()
    keys = _attempt_keys(username, ip)
    _ensure_counters(conn, [key for key, _ in keys], now)
    limited = [key for key, limit in keys if limit is not None]
    locks: list[datetime | None] = list(
        conn.scalars(
            select(LOGIN_ATTEMPTS.c.locked_until)
            .where(LOGIN_ATTEMPTS.c.key.in_(limited))
            .with_for_update()
        )
    )
    if any(lock is not None and lock > now for lock in locks):
        raise LoginThrottled("Too many failed logins; try again later.")
    for key, limit in keys:
        _count_failure(conn, key, limit, now)
    user = conn.execute(
        select(ADMIN_USERS.c.password_hash, ADMIN_USERS.c.id).where(
            ADMIN_USERS.c.username == username
        )
    ).first()
    if user is None:
        return LoginTicket(_dummy(), None)
    return LoginTicket(user.password_hash, user.id)


def succeeded(conn: Connection, *, username: str, ip: str, user_id: str) -> str:
    """The right password: forget the failures of this attempt and start a session."""
    clear_failures(conn, username=username, ip=ip)
    return create_session(conn, user_id)


def clear_failures(conn: Connection, *, username: str, ip: str) -> None:
    # the account's counter goes too: the admin got in, whoever else was guessing starts over
    keys = [key for key, _ in _attempt_keys(username, ip)]
    conn.execute(delete(LOGIN_ATTEMPTS).where(LOGIN_ATTEMPTS.c.key.in_(keys)))


def authenticate(conn: Connection, *, username: str, password: str, ip: str) -> AdminUserRow | None:
    """The admin for these credentials, or None; LoginThrottled while either key is locked.

    One transaction around the password check (the CLI and tests); the console's login uses
    ``admit``, a check outside any transaction and ``succeeded``. The work done does not depend
    on whether the account exists.
    """
    ticket = admit(conn, username=username, ip=ip)
    if not verify_password(ticket.password_hash, password) or ticket.user_id is None:
        return None
    clear_failures(conn, username=username, ip=ip)
    return _admin_user(conn, ticket.user_id)


def _admin_user(conn: Connection, user_id: str) -> AdminUserRow | None:
    found = conn.execute(select(ADMIN_USERS).where(ADMIN_USERS.c.id == user_id)).first()
    return None if found is None else AdminUserRow._make(found)


# -- sessions --------------------------------------------------------------------------------


def create_session(conn: Connection, user_id: str) -> str:
    """Start a session; returns the cookie token (only its digest is stored)."""
    now = utcnow()
    conn.execute(delete(ADMIN_SESSIONS).where(ADMIN_SESSIONS.c.expires_at <= now))
    token = secrets.token_urlsafe(32)
    conn.execute(
        insert(ADMIN_SESSIONS).values(
            id=token_digest(token),
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + ABSOLUTE,
        )
    )
    return token


def load_session(conn: Connection, token: str | None) -> AdminContext | None:
    """The live session for a cookie token, refreshing its idle clock; None when absent/expired."""
    if not token or len(token) > 128:
        return None
    now = utcnow()
    digest = token_digest(token)
    this_session = ADMIN_SESSIONS.c.id == digest
    found = conn.execute(select(ADMIN_SESSIONS).where(this_session)).first()
    if found is None:
        return None
    row = AdminSessionRow._make(found)
    if row.expires_at <= now or now - row.last_seen_at > IDLE:
        conn.execute(delete(ADMIN_SESSIONS).where(this_session))
        return None
    user = _admin_user(conn, row.user_id)
    if user is None:
        conn.execute(delete(ADMIN_SESSIONS).where(this_session))
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        conn.execute(update(ADMIN_SESSIONS).where(this_session).values(last_seen_at=now))
    return AdminContext(row.id, user.id, user.username, row.csrf_token)


def end_session(conn: Connection, token: str | None) -> None:
    if token:
        conn.execute(delete(ADMIN_SESSIONS).where(ADMIN_SESSIONS.c.id == token_digest(token)))
